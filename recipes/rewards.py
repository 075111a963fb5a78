"""Reward functions GRPO recipes can name (`ftplan.recipes.rewards:exact_answer`).

TRL calls each with the generated `completions` and every other dataset column as keyword
arguments, and expects one float per completion. Any importable `module:function` with that
signature works too.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

from ftplan.sizing.errors import FtplanError


def _text(completion) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return " ".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def exact_answer(completions, answer=None, **_) -> list[float]:
    """1.0 when the last number (or word) in the completion equals the `answer` column."""
    if answer is None:
        raise ValueError("exact_answer needs an 'answer' column in the data")
    out = []
    for completion, expected in zip(completions, answer, strict=True):
        tokens = re.findall(r"-?\d+(?:\.\d+)?|\w+", _text(completion))
        out.append(1.0 if tokens and tokens[-1].strip().lower() == str(expected).strip().lower() else 0.0)
    return out


def contains_answer(completions, answer=None, **_) -> list[float]:
    return [1.0 if str(a).lower() in _text(c).lower() else 0.0 for c, a in zip(completions, answer, strict=True)]


def brevity(completions, **_) -> list[float]:
    """Prefers short answers: 1 for up to 20 words, falling to 0 at 200."""
    return [max(0.0, min(1.0, (200 - len(_text(c).split())) / 180)) for c in completions]


def load_reward(spec: str) -> Callable:
    """`module:function` -> the function, or a clear error naming the spec."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise FtplanError(f"reward {spec!r}: write it as module:function (e.g. ftplan.recipes.rewards:exact_answer).")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise FtplanError(f"reward {spec!r} cannot be imported ({exc}); check method.rewards in the recipe.") from None
    if not callable(fn):
        raise FtplanError(f"reward {spec!r} is not a function.")
    return fn
