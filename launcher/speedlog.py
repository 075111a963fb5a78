"""Measured vs predicted speed of the user's finished GPU runs, per GPU: `ftplan estimate` scales by it.

Kept in a small JSON file beside the job store (not in it) so the planner never opens SQLite: a
damaged job store cannot break `estimate`, and a damaged speed log is ignored with a note.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from .home import default_home


def path() -> Path:
    return default_home() / "speed.json"


def _read(p: Path) -> list[dict]:
    rows = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise ValueError("not a list")
    return [r for r in rows if isinstance(r, dict)]


def record(gpu: str, job_id: str, predicted_tps: float | None, actual_tps: float | None,
           predicted_peak: float | None = None, actual_peak: float | None = None, file: Path | None = None) -> None:
    """Add (or replace) one run's measurement; the write is atomic and serialised with a lock file."""
    p = file or path()
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            rows = _read(p) if p.exists() else []
        except (OSError, ValueError):
            rows = []  # a damaged log is replaced by the runs measured from now on
        rows = [r for r in rows if not (r.get("gpu") == gpu and r.get("job") == job_id)]
        rows.append({"gpu": gpu, "job": job_id, "predicted_tokens_per_second": predicted_tps,
                     "actual_tokens_per_second": actual_tps, "predicted_peak_bytes": predicted_peak,
                     "actual_peak_bytes": actual_peak})
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1), encoding="utf-8")
        os.replace(tmp, p)


def corrections(file: Path | None = None) -> tuple[dict[str, tuple[float, int]], str | None]:
    """({gpu: (median actual/predicted tokens/s, runs)}, a note when the log could not be read)."""
    p = file or path()
    if not p.exists():
        return {}, None
    try:
        rows = _read(p)
    except (OSError, ValueError) as exc:
        return {}, f"Ignored your speed log {p} ({exc}); delete it to start a new one."
    ratios: dict[str, list[float]] = {}
    for r in rows:
        pred, act = r.get("predicted_tokens_per_second"), r.get("actual_tokens_per_second")
        if isinstance(pred, (int, float)) and isinstance(act, (int, float)) and pred > 0 and act > 0:
            ratios.setdefault(str(r.get("gpu")), []).append(act / pred)
    return {g: (_median_low(v), len(v)) for g, v in ratios.items()}, None


def _median_low(values: list[float]) -> float:
    """statistics.median_low without importing statistics (it pulls in decimal and fractions)."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]
