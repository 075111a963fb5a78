"""Running the training program in-process from tests, leaving the process's signal handlers as they were."""

from __future__ import annotations

import signal
from pathlib import Path


def train(recipe: Path, *extra: str) -> int:
    from ftplan.recipes.train import main

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return main([str(recipe), *extra])
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
