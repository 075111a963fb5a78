"""The golden set: prompts captured before training, with the behaviour expected of every adapter.

JSONL, one item a line: `prompt` (text) or `messages` (chat, ending before the answer), a
`category` (factuality, format, safety, or any name; default from the checks), an `expected`
answer and/or `checks`. Malformed lines are reported with their numbers, all at once. The file's
SHA-256 freezes it: a job records the hash when it starts, and evaluation refuses a file whose
hash no longer matches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ftplan.sizing.errors import DataError

CHECK_TYPES = {
    "json": (), "json_schema": ("schema",), "regex": ("pattern",), "exact": ("value",), "contains": ("value",),
    "numeric": ("value",), "python": ("function",), "refusal": (), "forbidden": ("strings",), "judge": ("criteria",),
}
DEFAULT_CATEGORY = {"json": "format", "json_schema": "format", "regex": "format", "refusal": "safety",
                    "forbidden": "safety"}


@dataclass
class GoldenItem:
    line: int
    prompt: str | None
    messages: list[dict] | None
    category: str
    checks: list[dict]
    extra: dict = field(default_factory=dict)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _item(line: int, rec: dict) -> tuple[GoldenItem | None, str | None]:
    prompt, messages = rec.get("prompt"), rec.get("messages")
    if not isinstance(prompt, str) and not isinstance(messages, list):
        return None, "needs 'prompt' (text) or 'messages' (a list of role/content)"
    checks = list(rec.get("checks") or [])
    if "expected" in rec:
        checks.append({"type": "contains", "value": rec["expected"]})
    if not checks:
        return None, "has no 'expected' answer and no 'checks': nothing to score"
    for c in checks:
        if not isinstance(c, dict) or c.get("type") not in CHECK_TYPES:
            return None, f"check {c!r} is not one of {', '.join(CHECK_TYPES)}"
        missing = [k for k in CHECK_TYPES[c["type"]] if k not in c]
        if missing:
            return None, f"check '{c['type']}' lacks {', '.join(missing)}"
    category = rec.get("category") or DEFAULT_CATEGORY.get(checks[0]["type"], "factuality")
    extra = {k: v for k, v in rec.items() if k not in ("prompt", "messages", "category", "checks", "expected")}
    return GoldenItem(line, prompt, messages, str(category), checks, extra), None


def load_golden(path: str | Path, expected_sha256: str | None = None) -> list[GoldenItem]:
    """Read and check every line; with `expected_sha256`, refuse a file changed since it was frozen."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"golden set {path}: no such file (eval.golden in the recipe, or --golden).")
    if expected_sha256 and file_sha256(path) != expected_sha256:
        raise DataError(f"golden set {path} changed after training began (SHA-256 {file_sha256(path)[:12]}, frozen "
                        f"{expected_sha256[:12]}): a moved goalpost is refused. Restore the file, or start a new run "
                        "with the new set.")
    items, problems = [], []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError as exc:
            problems.append(f"line {number}: not valid JSON ({str(exc).split(':')[0]})")
            continue
        if not isinstance(rec, dict):
            problems.append(f"line {number}: not a JSON object")
            continue
        item, why = _item(number, rec)
        if why:
            problems.append(f"line {number}: {why}")
        else:
            items.append(item)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DataError(f"golden set {path}: {len(problems)} bad line{'s' if len(problems) > 1 else ''}: {shown}.")
    if not items:
        raise DataError(f"golden set {path}: no items; the playbook asks for 200-1000 captured prompts.")
    return items
