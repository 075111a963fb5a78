"""The job store: SQLite in the user data directory, WAL mode, safe for several CLIs at once.

One row per job (provider and its ids, recipe hash, status, plan, actuals, timestamps) and its
events, keyed by (job, sequence number in the events stream) so ingesting the same events twice
never duplicates them. Every write is one short transaction; `busy_timeout` lets a second CLI
wait for the first instead of failing.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftplan.sizing.errors import FtplanError

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    provider_ids TEXT NOT NULL DEFAULT '{}',
    recipe_path TEXT,
    recipe_hash TEXT,
    name TEXT,
    status TEXT NOT NULL,
    plan TEXT,
    actuals TEXT,
    output_dir TEXT,
    events_path TEXT,
    events_offset INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    seq INTEGER NOT NULL,
    time REAL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS measurements (
    gpu TEXT NOT NULL,
    job_id TEXT NOT NULL,
    predicted_tokens_per_second REAL,
    actual_tokens_per_second REAL,
    predicted_peak_bytes REAL,
    actual_peak_bytes REAL,
    created_at REAL NOT NULL,
    PRIMARY KEY (gpu, job_id)
);
"""
TERMINAL = ("completed", "failed", "cancelled", "blocked")
JSON_FIELDS = ("provider_ids", "plan", "actuals", "eval")
# Columns added after the first release: created on open when an older store lacks them.
MIGRATIONS = {"golden_sha256": "TEXT", "eval": "TEXT", "skip_eval": "INTEGER NOT NULL DEFAULT 0"}


def default_path() -> Path:
    env = os.environ.get("FTPLAN_HOME")
    if env:
        return Path(env) / "jobs.sqlite3"
    from platformdirs import user_data_dir

    return Path(user_data_dir("ftplan", appauthor=False)) / "jobs.sqlite3"


class JobStore:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as db:
            db.executescript(SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(jobs)").fetchall()}
            for col, decl in MIGRATIONS.items():
                if col not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {col} {decl}")

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise FtplanError(f"job store {self.path}: cannot be opened ({exc}). Set FTPLAN_HOME to a writable "
                              "folder.") from None
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    def create(self, provider: str, *, recipe_path: str | None = None, recipe_hash: str | None = None,
               name: str | None = None, plan: dict | None = None, output_dir: str | None = None,
               events_path: str | None = None, status: str = "created") -> str:
        job_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        now = time.time()
        with self._conn() as db:
            db.execute("INSERT INTO jobs (id, provider, recipe_path, recipe_hash, name, status, plan, output_dir, "
                       "events_path, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (job_id, provider, recipe_path, recipe_hash, name, status, json.dumps(plan), output_dir,
                        events_path, now, now))
        return job_id

    def update(self, job_id: str, **fields) -> None:
        if not fields:
            return
        for key in JSON_FIELDS:
            if key in fields:
                fields[key] = json.dumps(fields[key], default=str)
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._conn() as db:
            cur = db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))
            if cur.rowcount != 1:
                raise FtplanError(f"no job {job_id!r} in {self.path}; `ftplan jobs` lists them.")

    def merge_provider_ids(self, job_id: str, **ids) -> None:
        job = self.get(job_id)
        self.update(job_id, provider_ids={**job["provider_ids"], **ids})

    def get(self, job_id: str) -> dict:
        with self._conn() as db:
            rows = db.execute("SELECT * FROM jobs WHERE id = ? OR id LIKE ? ORDER BY created_at DESC",
                              (job_id, f"%{job_id}")).fetchall()
        if not rows:
            raise FtplanError(f"no job {job_id!r} in {self.path}; `ftplan jobs` lists them.")
        if len(rows) > 1 and rows[0]["id"] != job_id:
            raise FtplanError(f"{job_id!r} matches {len(rows)} jobs ({', '.join(r['id'] for r in rows[:4])}); give "
                              "more of the id.")
        return self._row(rows[0])

    @staticmethod
    def _row(row: sqlite3.Row) -> dict:
        out = dict(row)
        for key in JSON_FIELDS:
            out[key] = json.loads(out[key]) if out.get(key) else ({} if key == "provider_ids" else None)
        return out

    def list(self, limit: int = 50) -> list[dict]:
        with self._conn() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [self._row(r) for r in rows]

    def add_events(self, job_id: str, events: list[tuple[int, dict]], new_offset: int | None = None) -> int:
        """Store (seq, event) pairs; a seq already stored is ignored, so re-ingesting never duplicates.

        `new_offset` (how far the events file has been read) moves forward in the same transaction.
        Returns how many events were new.
        """
        with self._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO events (job_id, seq, time, type, payload) VALUES (?,?,?,?,?)",
                           [(job_id, seq, e.get("time"), e.get("type", "log"), json.dumps(e, default=str))
                            for seq, e in events])
            added = db.total_changes - before
            if new_offset is not None:
                db.execute("UPDATE jobs SET events_offset = MAX(events_offset, ?), updated_at = ? WHERE id = ?",
                           (new_offset, time.time(), job_id))
            db.execute("COMMIT")
        return added

    def event_count(self, job_id: str) -> int:
        with self._conn() as db:
            return db.execute("SELECT COUNT(*) FROM events WHERE job_id = ?", (job_id,)).fetchone()[0]

    def events(self, job_id: str, after_seq: int = -1) -> list[dict]:
        with self._conn() as db:
            rows = db.execute("SELECT seq, payload FROM events WHERE job_id = ? AND seq > ? ORDER BY seq",
                              (job_id, after_seq)).fetchall()
        return [{**json.loads(r["payload"]), "_seq": r["seq"]} for r in rows]

    def record_measurement(self, gpu: str, job_id: str, predicted_tps: float | None, actual_tps: float | None,
                           predicted_peak: float | None, actual_peak: float | None) -> None:
        with self._conn() as db:
            db.execute("INSERT OR REPLACE INTO measurements VALUES (?,?,?,?,?,?,?)",
                       (gpu, job_id, predicted_tps, actual_tps, predicted_peak, actual_peak, time.time()))

    def speed_corrections(self) -> dict[str, tuple[float, int]]:
        with self._conn() as db:
            gpus = [r[0] for r in db.execute("SELECT DISTINCT gpu FROM measurements").fetchall()]
        return {g: c for g in gpus if (c := self.speed_correction(g))}

    def speed_correction(self, gpu: str) -> tuple[float, int] | None:
        """(median actual/predicted tokens/s, runs) measured on `gpu`, or None."""
        with self._conn() as db:
            rows = db.execute("SELECT actual_tokens_per_second / predicted_tokens_per_second FROM measurements "
                              "WHERE gpu = ? AND actual_tokens_per_second > 0 AND predicted_tokens_per_second > 0",
                              (gpu,)).fetchall()
        ratios = sorted(r[0] for r in rows)
        if not ratios:
            return None
        return ratios[len(ratios) // 2], len(ratios)
