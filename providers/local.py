"""Run a recipe on this machine: the training program as a detached subprocess.

The process gets its own session, so it survives the terminal that started it; `cancel()` sends
SIGTERM to its process group, which the training program turns into "checkpoint, then stop".
More than one GPU goes through `accelerate launch` with a config derived from the plan.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from ftplan.recipes.launch import training_command


def submit(recipe_path: str, out_dir: Path, events_path: Path, *, plan: dict | None, usd_per_hour: float,
           resume: bool = False, gpus: int = 1, distributed: str = "auto", env: dict | None = None,
           extra: list[str] | None = None) -> int:
    """Start the training program; returns its pid (also its process-group id)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plan_path = out_dir / "plan.json"
    plan_path.write_text(json.dumps(plan, default=str))
    cmd = training_command(recipe_path, out_dir, events_path, plan_path=plan_path, usd_per_hour=usd_per_hour,
                           resume=resume, gpus=gpus, distributed=distributed, config_dir=out_dir, extra=extra)
    log = (out_dir / "train.log").open("ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
                            close_fds=True)
    log.close()
    return proc.pid


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def cancel(pid: int) -> bool:
    """Ask the run to checkpoint and stop (SIGTERM to its process group). False if it was not running."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True
