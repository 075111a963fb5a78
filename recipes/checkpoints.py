"""Checkpoints that are known to be whole.

The Trainer writes `checkpoint-N/` folders; a crash or a kill during the write leaves a partial
one. ftplan writes `ftplan-complete.json` into a checkpoint only after the Trainer has finished
saving it, and resumes only from checkpoints that carry the marker: a half-written one is
skipped, never loaded.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

MARKER = "ftplan-complete.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def mark_complete(folder: str | Path, step: int) -> None:
    folder = Path(folder)
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"step": step, "time": time.time()}))
    tmp.replace(folder / MARKER)  # atomic: the marker is either whole or absent


def checkpoints(root: str | Path) -> list[tuple[int, Path, bool]]:
    """(step, folder, complete) for every checkpoint under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for sub in root.iterdir():
        m = _STEP.match(sub.name)
        if m and sub.is_dir():
            found.append((int(m.group(1)), sub, (sub / MARKER).is_file()))
    return sorted(found)


def last_complete(root: str | Path) -> Path | None:
    done = [folder for _, folder, complete in checkpoints(root) if complete]
    return done[-1] if done else None
