"""Checkpoints that are known to be whole, and that still are when a run resumes.

The Trainer writes `checkpoint-N/` folders; a crash or a kill during the write leaves a partial
one. ftplan writes `ftplan-complete.json` into a checkpoint only after the Trainer has finished
saving it, listing every file with its size. A resume takes the newest complete checkpoint that
still verifies (sizes as recorded, JSON parses, safetensors headers match their length, torch's
zip archives pass their CRC check) and says which ones it skipped and why: a file truncated or
damaged after the fact (a full disk, a copy cut short) no longer ends the resume with `EOFError`.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
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


# What torch's zip writer says when a write comes up short (a full disk, a file-size limit): it
# does not carry the OS error, so the text is all there is (caffe2/serialize/inline_container.cc).
_TORCH_SHORT_WRITE = ("unexpected pos", "PytorchStreamWriter failed writing", "file write failed")
_OS_FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EFBIG: "a file-size limit was reached"}


def write_failure(exc: BaseException, root: str | Path) -> str | None:
    """A sentence for a checkpoint or output write that failed for want of space, or None for other errors.

    The partial checkpoint it leaves (no completion marker, so never resumed from) is removed to give
    the space back; completed checkpoints are kept and named, with how to continue from them.
    """
    chain = [exc]
    while chain[-1].__cause__ or chain[-1].__context__:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    why = next((_OS_FULL[e.errno] for e in chain if isinstance(e, OSError) and e.errno in _OS_FULL), None)
    said = next((str(e) for e in chain if isinstance(e, RuntimeError) and any(t in str(e) for t in _TORCH_SHORT_WRITE)),
                None)
    if why is None and said:
        phrase = next(said[said.index(t):].splitlines()[0] for t in _TORCH_SHORT_WRITE if t in said)
        why = f"the disk is full or a file-size limit was reached (torch: {phrase[:80]})"
    if why is None:
        return None
    root = Path(root)
    removed = [folder for _, folder, complete in checkpoints(root) if not complete]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    kept = last_complete(root)
    where = root if root.exists() else root.parent
    try:
        free = f"{shutil.disk_usage(where).free / 2**30:,.1f} GiB free there now"
    except OSError:
        free = "free space unknown"
    return (f"writing to {root.parent} failed: {why}; {free}. "
            + (f"Removed the half-written {', '.join(f.name for f in removed)}. " if removed else "")
            + (f"The last complete checkpoint, {kept.name}, is kept: free some space (or lower checkpoint.keep), "
               "then continue with `ftplan run RECIPE --resume JOB`." if kept else
               "No checkpoint had completed yet: free some space, then run again."))
