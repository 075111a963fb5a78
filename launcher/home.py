"""Where ftplan keeps its state (job store, speed log): FTPLAN_HOME, else the platform's data folder.

A module of its own so `ftplan estimate` can find the speed log without importing SQLite.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    env = os.environ.get("FTPLAN_HOME")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("ftplan", appauthor=False))
