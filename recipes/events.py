"""The event stream every provider speaks: one JSON object a line (DESIGN.md, "How data flows").

Types: started, step, eval, checkpoint, log, cost, finished, failed. The training program
writes them; the API providers translate their job events into them; the live view and the job
store only read them. Readers take complete lines only, so a line being written is never half
parsed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO

TYPES = ("started", "step", "eval", "checkpoint", "log", "cost", "finished", "failed")
REQUIRED = {"step": ("step", "total"), "checkpoint": ("step", "path"), "failed": ("error",),
            "finished": ("status",), "cost": ("usd",)}


class EventWriter:
    """Append events to a file; terminal and checkpoint events are fsynced so a crash cannot lose them."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = self.path.open("a", encoding="utf-8")

    def emit(self, type_: str, **fields) -> dict:
        if type_ not in TYPES:
            raise ValueError(f"unknown event type {type_!r}")
        event = {"type": type_, "time": round(time.time(), 3), **fields}
        self._fh.write(json.dumps(event, default=str) + "\n")
        self._fh.flush()
        if type_ in ("checkpoint", "finished", "failed", "started"):
            os.fsync(self._fh.fileno())
        return event

    def close(self) -> None:
        self._fh.close()


class NullWriter:
    """The events sink of every process but the main one in a multi-GPU run: one writer per job."""

    path = None

    def emit(self, type_: str, **fields) -> dict:
        return {"type": type_, **fields}

    def close(self) -> None:
        pass


def read_events(path: str | Path, offset: int = 0) -> tuple[list[tuple[int, dict]], int]:
    """(byte offset of the line, event) for each complete line after `offset`, and the offset to continue from.

    The line's byte offset is a stable identity: two readers ingesting the same file agree on it.
    """
    path = Path(path)
    if not path.exists():
        return [], offset
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    events = []
    pos = offset
    for line in data[:end].split(b"\n")[:-1]:
        if line.strip():
            try:
                events.append((pos, json.loads(line)))
            except ValueError:
                events.append((pos, {"type": "log", "level": "warning",
                                     "message": f"unreadable event line: {line[:80]!r}"}))
        pos += len(line) + 1
    return events, offset + end


def validate_event(event: dict) -> list[str]:
    """Problems with one event (empty: well-formed)."""
    problems = []
    if event.get("type") not in TYPES:
        problems.append(f"unknown type {event.get('type')!r}")
    if not isinstance(event.get("time"), (int, float)):
        problems.append("no numeric time")
    for key in REQUIRED.get(event.get("type"), ()):
        if key not in event:
            problems.append(f"{event.get('type')} event without {key!r}")
    return problems
