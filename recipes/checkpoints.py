"""Checkpoints that are known to be whole, and that still are when a run resumes.

The Trainer writes `checkpoint-N/` folders; a crash or a kill during the write leaves a partial
one. ftplan writes `ftplan-complete.json` into a checkpoint only after the Trainer has finished
saving it, listing every file with its size. A resume takes the newest complete checkpoint that
still verifies (sizes as recorded, JSON parses, safetensors headers match their length, torch's
zip archives pass their CRC check) and says which ones it skipped and why: a file truncated or
damaged after the fact (a full disk, a copy cut short) no longer ends the resume with `EOFError`.
"""

from __future__ import annotations

import json
import re
import struct
import time
import zipfile
from pathlib import Path

MARKER = "ftplan-complete.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def mark_complete(folder: str | Path, step: int) -> None:
    folder = Path(folder)
    files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
             if p.is_file() and not p.name.startswith(MARKER)}
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"step": step, "time": time.time(), "files": files}))
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


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return "shorter than its header"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return "header longer than the file"
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            return "header is not JSON"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    return None if 8 + n + end == size else f"{size} bytes where its header needs {8 + n + end}"


def problem(folder: str | Path) -> str | None:
    """Why this checkpoint cannot be loaded, or None when it verifies."""
    folder = Path(folder)
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return "no completion marker (the save did not finish)"
    for name, size in (marker.get("files") or {}).items():
        p = folder / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != size:
            return f"{name} has {p.stat().st_size} bytes, {size} were saved"
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith(MARKER):
            continue
        name = str(p.relative_to(folder))
        try:
            if p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".safetensors":
                why = _safetensors_problem(p)
                if why:
                    return f"{name}: {why}"
            elif p.suffix in (".pt", ".pth", ".bin") and zipfile.is_zipfile(p):
                with zipfile.ZipFile(p) as z:
                    bad = z.testzip()
                if bad:
                    return f"{name}: {bad} fails its CRC check"
            elif p.suffix in (".pt", ".pth", ".bin"):
                return f"{name}: not a complete torch archive"
        except (OSError, ValueError, zipfile.BadZipFile, KeyError, TypeError, IndexError) as exc:
            return f"{name}: {type(exc).__name__}"
    return None


def pick_resumable(roots: list[str | Path]) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete checkpoint under any of `roots` that verifies, and those skipped with why."""
    candidates = sorted(((step, folder) for root in roots for step, folder, done in checkpoints(root) if done),
                        key=lambda x: x[0], reverse=True)
    skipped = []
    for _, folder in candidates:
        why = problem(folder)
        if why is None:
            return folder, skipped
        skipped.append((folder, why))
    return None, skipped
