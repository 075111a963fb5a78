"""Set fields in a recipe's YAML text in place, keeping the user's comments, order and layout.

`ftplan plan RECIPE --write` and `ftplan init --from PLAN` write the planner's setup into a recipe.
A YAML round trip through a parser would drop every comment the presets carry, so this edits the
lines: a `key: value` under its section keeps its trailing comment; a missing key is added under
its section; a missing section is appended. The result is parsed again before it is written.
"""

from __future__ import annotations

import json
import re

_KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$")


def _scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    return text if re.fullmatch(r"[\w./@+-]+", text) and text.lower() not in ("null", "true", "false", "yes", "no") \
        else json.dumps(text)


def _comment_at(rest: str) -> int | None:
    """Where a comment starts in what follows `key:` (a '#' inside quotes is part of the value)."""
    quote = None
    for i, ch in enumerate(rest):
        if ch in "'\"":
            quote = None if quote == ch else (quote or ch)
        elif ch == "#" and quote is None and (i == 0 or rest[i - 1].isspace()):
            return i
    return None


def set_fields(text: str, fields: dict[tuple[str, str], object]) -> str:
    """`text` with each (section, key) set to its value; top-level sections only (hyperparameters, hardware...)."""
    lines = text.splitlines()
    for (section, key), value in fields.items():
        start = next((i for i, line in enumerate(lines) if re.match(rf"^{re.escape(section)}:\s*(#.*)?$", line)), None)
        if start is None:
            lines += [f"{section}:", f"  {key}: {_scalar(value)}"]
            continue
        end = next((i for i in range(start + 1, len(lines))
                    if lines[i].strip() and not lines[i].startswith((" ", "#"))), len(lines))
        indent = None
        for i in range(start + 1, end):
            m = _KEY.match(lines[i])
            if not m:
                continue
            if indent is None:
                indent = m.group("indent")
            if m.group("indent") == indent and m.group("key") == key:
                rest = m.group("rest")
                at = _comment_at(rest)
                new = f"{indent}{key}: {_scalar(value)}"
                if at is not None:  # keep the comment in its column
                    column = len(indent) + len(key) + 1 + at
                    new += " " * max(1, column - len(new)) + rest[at:]
                lines[i] = new
                break
        else:
            lines.insert(end if lines[end - 1].strip() else end - 1, f"{indent or '  '}{key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"
