"""Recipe data -> Together's fine-tuning formats, checked locally with Together's rules first.

Together reads conversational (`messages`), instruction (`prompt`/`completion`), generic (`text`)
and preference (`input`/`preferred_output`/`non_preferred_output`) JSONL, one format per file.
Conversations start with `system` or `user` and then alternate user/assistant. Checking here
means a bad file never costs an upload: the error names the line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ftplan.sizing.datafile import BadRecord, iter_records
from ftplan.sizing.dataformat import as_messages, detect
from ftplan.sizing.errors import DataError

MAX_BYTES = 50 * 10**9  # the SDK's upload limit (50.1 GB); the docs allow larger multipart uploads
ROLES = {"system", "user", "assistant", "tool"}
SUPPORTED = {"messages": "conversational", "prompt_completion": "instruction", "text": "generic",
             "preference": "preference", "preference_implicit": "preference", "openai_preference": "preference"}


def _check_conversation(msgs: list[dict]) -> str | None:
    if not msgs:
        return "has no messages"
    for m in msgs:
        if m.get("role") not in ROLES:
            return f"has role {m.get('role')!r}; Together accepts system, user, assistant (and tool)"
        if not isinstance(m.get("content"), str) and m.get("role") != "tool":
            return "has a message whose content is not text"
    roles = [m["role"] for m in msgs if m["role"] != "tool"]
    if roles[0] not in ("system", "user"):
        return f"starts with {roles[0]!r}; a conversation starts with system or user"
    turns = roles[1:] if roles[0] == "system" else roles
    for i, role in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            return f"turn {i + 1} is {role!r} where {expected!r} should be (user and assistant alternate)"
    return None


def convert(key: str, rec: dict) -> tuple[dict, str | None]:
    """One record in Together's layout, and why it breaks Together's rules (None: fine)."""
    if key == "messages":
        out = {"messages": rec["messages"]}
        return out, _check_conversation(rec["messages"])
    if key == "prompt_completion":
        if not isinstance(rec["prompt"], str) or not isinstance(rec["completion"], str):
            msgs = as_messages(rec["prompt"], "user") + as_messages(rec["completion"], "assistant")
            return {"messages": msgs}, _check_conversation(msgs)
        return {"prompt": rec["prompt"], "completion": rec["completion"]}, None
    if key == "text":
        return {"text": rec["text"]}, None
    if key == "openai_preference":
        prompt, chosen, rejected = rec["input"], rec["preferred_output"], rec["non_preferred_output"]
    elif key == "preference":
        prompt, chosen, rejected = rec["prompt"], rec["chosen"], rec["rejected"]
    else:  # implicit prompt: everything before the last assistant turn is the prompt
        c, r = as_messages(rec["chosen"], "assistant"), as_messages(rec["rejected"], "assistant")
        prompt, chosen, rejected = c[:-1], c[-1:], r[-1:]
    prompt_msgs = as_messages(prompt, "user")
    out = {"input": {"messages": prompt_msgs}, "preferred_output": as_messages(chosen, "assistant")[-1:],
           "non_preferred_output": as_messages(rejected, "assistant")[-1:]}
    problem = _check_conversation(prompt_msgs + out["preferred_output"])
    return out, problem


def split_off(prepared: tuple[Path, str, int], fraction: float, seed: int, folder: Path):
    """data.eval_fraction for Together: the same share of examples held out, chosen by the recipe's seed."""
    import random

    path, kind, n = prepared
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    held = set(random.Random(seed).sample(range(len(lines)), max(1, round(fraction * len(lines)))))
    train = folder / f"{path.stem}-train.jsonl"
    val = folder / f"{path.stem}-validation.jsonl"
    train.write_text("".join(x for i, x in enumerate(lines) if i not in held), encoding="utf-8")
    val.write_text("".join(x for i, x in enumerate(lines) if i in held), encoding="utf-8")
    return (train, kind, n - len(held)), (val, kind, len(held))


def prepare(source: str | Path, out_dir: Path, objective: str, split: str = "train") -> tuple[Path, str, int]:
    """Write Together's JSONL for `source`; returns (path, Together format name, examples)."""
    if objective in ("kto", "grpo", "orpo", "merge"):
        raise DataError(f"Together fine-tunes with SFT and DPO (SimPO via DPO's gamma); {objective} runs locally or "
                        "on Modal instead (--provider local|modal).")
    _, word, records = iter_records(source, split)
    problems: list[str] = []
    fmt_key = None
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "together-train.jsonl.part"
    n = 0
    h = hashlib.sha256()
    with tmp.open("w", encoding="utf-8") as fh:
        for loc, rec in records:
            if isinstance(rec, BadRecord):
                problems.append(f"{word} {loc}: {rec.reason}")
                continue
            fmt = detect(rec)
            if fmt is None or fmt.key not in SUPPORTED:
                problems.append(f"{word} {loc}: {fmt.description if fmt else 'no known format'} is not a format "
                                "Together reads")
                continue
            if fmt_key is None:
                fmt_key = fmt.key
            elif SUPPORTED[fmt.key] != SUPPORTED[fmt_key]:
                problems.append(f"{word} {loc}: {SUPPORTED[fmt.key]} but the file is {SUPPORTED[fmt_key]} (Together "
                                "rejects a file that mixes formats)")
                continue
            converted, problem = convert(fmt.key, rec)
            if problem:
                problems.append(f"{word} {loc}: {problem}")
                continue
            line = json.dumps(converted, ensure_ascii=False) + "\n"
            h.update(line.encode())
            fh.write(line)
            n += 1
            if len(problems) > 20:
                break
    if problems:
        tmp.unlink(missing_ok=True)
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DataError(f"{source}: not uploaded, Together would reject it: {shown}. Fix these {word}s and run again.")
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{source}: no examples to upload.")
    kind = SUPPORTED[fmt_key]
    if objective in ("dpo", "simpo") and kind != "preference":
        raise DataError(f"{source}: {objective} on Together needs preference pairs; the file is {kind}.")
    if objective not in ("dpo", "simpo") and kind == "preference":
        raise DataError(f"{source}: preference pairs train with dpo or simpo; the recipe says {objective}.")
    if objective == "continued-pretraining" and kind != "generic":
        raise DataError(f"{source}: continued pretraining on Together trains on raw text (its generic format); the "
                        f"file is {kind}.")
    final = out_dir / f"together-{h.hexdigest()[:12]}.jsonl"
    tmp.replace(final)
    if final.stat().st_size > MAX_BYTES:
        raise DataError(f"{final}: {final.stat().st_size / 1e9:.1f} GB is over Together's upload limit.")
    return final, kind, n
