"""The job store: SQLite in the user data directory, WAL mode, safe for several CLIs at once.

One row per job (provider and its state, recipe hash, status, plan, actuals, timestamps) and its
events, keyed by (job, byte offset of the event in that job's own events file), so ingesting the
same events twice never duplicates them. Every write is one short transaction; `busy_timeout`
lets a second CLI wait for the first instead of failing.

A record that has reached a final status never changes again: `update()` refuses anything but
annotations (a later `ftplan eval`, where outputs were pulled to) on a final job, atomically, so
two CLIs cannot race a final record either. Only `estimate`'s sibling commands that follow jobs
open this file; the planner never does (its speed corrections live in `speedlog`).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftplan.sizing.errors import FtplanError

from .home import default_home

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
"""
TERMINAL = ("completed", "failed", "cancelled", "blocked")
JSON_FIELDS = ("provider_ids", "plan", "actuals", "eval", "options", "outputs")
# Columns added after the first release: created on open when an older store lacks them.
MIGRATIONS = {"golden_sha256": "TEXT", "eval": "TEXT", "skip_eval": "INTEGER NOT NULL DEFAULT 0",
              "resumed_from": "TEXT", "options": "TEXT", "outputs": "TEXT"}
# What may still be written on a final record: results of later commands about it, never its history.
ANNOTATIONS = frozenset({"eval", "outputs"})


class FinalRecordError(FtplanError):
    """An attempt to rewrite a job whose record is final."""


def default_path() -> Path:
    return default_home() / "jobs.sqlite3"


def _write_ahead_log(db: sqlite3.Connection, patience: float = 30.0) -> None:
    """Switch the store to WAL (persistent in the file, so once per open of the store is enough).

    SQLite answers "database is locked" at once, without its busy handler, when another connection
    holds a lock while the mode changes; a second CLI starting at the same moment retries instead.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _damaged(path: Path, exc: Exception) -> FtplanError:
    return FtplanError(
        f"the job store {path} is damaged ({exc}). Move it aside (mv {path} {path}.damaged) and run the command "
        "again: ftplan starts a new store, and `ftplan jobs --import DIR` brings back the jobs recorded in the job "
        "folders under DIR (each has a job.json and its events).")


class JobStore:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FtplanError(f"the job store's folder {self.path.parent} cannot be created ({exc.strerror}); set "
                              "FTPLAN_HOME to a writable folder.") from None
        with self._conn() as db:
            _write_ahead_log(db)
            # One write transaction for schema and migrations: two CLIs opening a new store at once
            # (a `run` and the `jobs` that watches it) would otherwise both see a column missing and the
            # second ALTER would fail as "duplicate column", which reads as a damaged store.
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, SCHEMA.split(";")):
                    db.execute(statement)
                have = {r[1] for r in db.execute("PRAGMA table_info(jobs)").fetchall()}
                for col, decl in MIGRATIONS.items():
                    if col not in have:
                        db.execute(f"ALTER TABLE jobs ADD COLUMN {col} {decl}")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise FtplanError(f"job store {self.path}: cannot be opened ({exc}). Set FTPLAN_HOME to a writable "
                              "folder.") from None
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise FtplanError(f"the job store {self.path} stayed locked by another ftplan for 30 s; try "
                                  "again.") from None
            raise _damaged(self.path, exc) from None
        finally:
            db.close()

    @staticmethod
    def new_id() -> str:
        return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)

    def create(self, provider: str, *, job_id: str | None = None, recipe_path: str | None = None,
               recipe_hash: str | None = None, name: str | None = None, plan: dict | None = None,
               output_dir: str | None = None, events_path: str | None = None, status: str = "created",
               resumed_from: str | None = None, options: dict | None = None) -> str:
        job_id = job_id or self.new_id()
        now = time.time()
        with self._conn() as db:
            db.execute("INSERT INTO jobs (id, provider, recipe_path, recipe_hash, name, status, plan, output_dir, "
                       "events_path, created_at, updated_at, resumed_from, options) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (job_id, provider, recipe_path, recipe_hash, name, status, json.dumps(plan), output_dir,
                        events_path, now, now, resumed_from, json.dumps(options or {})))
        return job_id

    def insert_record(self, record: dict) -> bool:
        """Put back a job from its folder's job.json (`ftplan jobs --import`); False if it is already here."""
        cols = [c for c in record if c in self._columns()]
        values = [json.dumps(record[c], default=str) if c in JSON_FIELDS else record[c] for c in cols]
        with self._conn() as db:
            cur = db.execute(f"INSERT OR IGNORE INTO jobs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                             values)
            return cur.rowcount == 1

    def _columns(self) -> set[str]:
        with self._conn() as db:
            return {r[1] for r in db.execute("PRAGMA table_info(jobs)").fetchall()}

    def update(self, job_id: str, **fields) -> None:
        """Change a job; on a final record only ANNOTATIONS may change (atomically checked)."""
        if not fields:
            return
        for key in JSON_FIELDS:
            if key in fields:
                fields[key] = json.dumps(fields[key], default=str)
        guarded = not set(fields) <= ANNOTATIONS
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        where = "id = ?" + (f" AND status NOT IN ({', '.join('?' * len(TERMINAL))})" if guarded else "")
        with self._conn() as db:
            cur = db.execute(f"UPDATE jobs SET {cols} WHERE {where}",
                             (*fields.values(), job_id, *(TERMINAL if guarded else ())))
            if cur.rowcount == 1:
                return
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise FtplanError(f"no job {job_id!r} in {self.path}; `ftplan jobs` lists them.")
        raise FinalRecordError(f"job {job_id} is final ({row['status']}); its record does not change. A resume is "
                               "a new job (`ftplan run RECIPE --resume JOB`).")

    def merge_provider_ids(self, job_id: str, **ids) -> None:
        job = self.get(job_id)
        self.update(job_id, provider_ids={**job["provider_ids"], **ids})

    def get(self, job_id: str) -> dict:
        """A job by its exact id, or by a literal prefix or suffix that only one job has."""
        job_id = str(job_id).strip()
        if not job_id:
            raise FtplanError("give a job id (`ftplan jobs` lists them).")
        with self._conn() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is not None:
                return self._row(row)
            # substr() compares literally: '%' and '_' in what the user typed are characters, not patterns.
            rows = db.execute("SELECT * FROM jobs WHERE substr(id, 1, length(?1)) = ?1 OR "
                              "substr(id, -length(?1)) = ?1 ORDER BY created_at DESC", (job_id,)).fetchall()
        if not rows:
            raise FtplanError(f"no job {job_id!r} in {self.path}; `ftplan jobs` lists them.")
        if len(rows) > 1:
            raise FtplanError(f"{job_id!r} matches {len(rows)} jobs ({', '.join(r['id'] for r in rows[:4])}); give "
                              "more of the id.")
        return self._row(rows[0])

    @staticmethod
    def _row(row: sqlite3.Row) -> dict:
        out = dict(row)
        for key in JSON_FIELDS:
            if key in out:
                out[key] = json.loads(out[key]) if out.get(key) else ({} if key in ("provider_ids", "options")
                                                                      else None)
        return out

    def list(self, limit: int = 50) -> list[dict]:
        with self._conn() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [self._row(r) for r in rows]

    def add_events(self, job_id: str, events: list[tuple[int, dict]], new_offset: int | None = None) -> int:
        """Store (offset, event) pairs; an offset already stored is ignored, so re-ingesting never duplicates.

        `new_offset` (how far the job's events file has been read) moves forward in the same transaction.
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
