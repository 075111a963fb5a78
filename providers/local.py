"""Run a recipe on this machine: the training program as a detached subprocess in the job's folder.

The process gets its own session, so it survives the terminal that started it; `cancel()` sends
SIGTERM to its process group, which the training program turns into "checkpoint, then stop".
More than one GPU goes through `accelerate launch` with a config derived from the recipe. The
program writes the job's events file itself; `poll()` only notices a process that died without
saying so (killed -9, out of memory).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
from pathlib import Path

from ftplan.recipes import preflight
from ftplan.recipes.checkpoints import checkpoints
from ftplan.recipes.events import read_events
from ftplan.recipes.launch import training_command
from ftplan.recipes.schema import Recipe
from ftplan.sizing.errors import FtplanError

from .base import Job, Quote

TRAIN_PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets")


class LocalProvider:
    name = "local"
    summary = "this machine"
    has_outputs = True

    def check_ready(self, recipe: Recipe) -> None:
        missing = [p for p in TRAIN_PACKAGES if importlib.util.find_spec(p) is None]
        if recipe.method.adapter == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
            missing.append("bitsandbytes")
        if missing:
            raise FtplanError(f"training here needs {', '.join(missing)}: pip install 'ftplan[train]' (and "
                              "'ftplan[gpu]' for Unsloth on a CUDA machine). Nothing was started.")
        preflight.check(recipe)
        from ftplan.recipes.tracking import missing_message, missing_packages

        trackers = missing_packages(recipe)
        if trackers:
            raise FtplanError(missing_message(recipe, trackers))

    def quote(self, recipe: Recipe, plan: dict | None) -> Quote:
        lp = (plan or {}).get("local")
        if not lp:
            return Quote(None, "no local GPU found (nvidia-smi) or given (--local): the CPU runs it, untimed")
        return Quote(lp["usd"], f"ftplan plan on {lp['label']}: {lp['source']}", lp["usd_per_hour"], lp["hours"],
                     [f"Plan on {lp['label']}: {lp['adapter']}, {lp['per_gpu_bytes'] / 2**30:,.1f} of "
                      f"{lp['gpu_memory_bytes'] / 2**30:,.0f} GiB per GPU, ~{lp['hours'] * 60:,.0f} min, "
                      f"~${lp['usd']:,.2f} of power."])

    def submit(self, job: Job, quote: Quote) -> dict:
        return self._start(job, resume=False)

    def resume(self, job: Job, previous: Job, quote: Quote) -> dict:
        dirs = [str(previous.folder / "checkpoints"), *previous.options.checkpoint_dirs]
        found = [str(f) for d in dirs for _, f, done in checkpoints(d) if done]
        if not found:
            raise FtplanError(f"job {previous.id} left no complete checkpoint (looked in {', '.join(dirs)}); there is "
                              "nothing to resume. Run the recipe without --resume to start over.")
        job.options.checkpoint_dirs = dirs
        return self._start(job, resume=True)

    def _start(self, job: Job, resume: bool) -> dict:
        job.folder.mkdir(parents=True, exist_ok=True)
        plan_path = job.folder / "plan.json"
        plan_path.write_text(json.dumps(job.plan, default=str))
        extra = ["--skip-eval"] if job.options.skip_eval else []
        if job.options.golden_sha256:
            extra += ["--golden-sha256", job.options.golden_sha256]
        for d in job.options.checkpoint_dirs if resume else ():
            extra += ["--resume-from", d]
        cmd = training_command(str(job.recipe_path), job.folder, job.events_path, plan_path=plan_path,
                               usd_per_hour=job.options.usd_per_hour, resume=resume, gpus=job.recipe.hardware.gpus or 1,
                               distributed=job.recipe.hardware.distributed, config_dir=job.folder, extra=extra)
        with (job.folder / "train.log").open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                    close_fds=True)
        return {"pid": proc.pid, "pid_started": _start_ticks(proc.pid)}

    def poll(self, job: Job) -> list[dict]:
        if alive(job.state.get("pid"), job.state.get("pid_started")):
            return []
        events, _ = read_events(job.events_path, job.events_offset)
        if any(e.get("type") in ("finished", "failed") for _, e in events):
            return []
        said = _last_error(job.folder / "train.log")
        if said:  # the program said why but could not record it (a full disk refuses the events file too)
            return [{"type": "failed", "error": said, "kind": "crash"}]
        return [{"type": "failed", "error": "the training process exited without a final event (killed or out of "
                 "memory; see train.log in the job folder); its checkpoints are kept: `ftplan run RECIPE --resume "
                 f"{job.id}` continues", "kind": "vanished"}]

    def cancel(self, job: Job) -> None:
        pid = job.state.get("pid")
        if not alive(pid, job.state.get("pid_started")):
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def fetch_outputs(self, job: Job, dest: Path) -> Path | None:
        """The program writes its outputs into the job's folder; nothing to fetch."""
        for name in ("adapter", "model", "merged"):
            if (job.folder / name).is_dir():
                return job.folder / name
        return None


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: tells it apart from a later process with its pid."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int | None, started: int | None = None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True  # no /proc (macOS): the pid answered
    if fields[0] == "Z":  # exited, not yet reaped by its parent
        return False
    return started is None or int(fields[19]) == started


def _last_error(log: Path) -> str | None:
    """The program's own `ftplan: error: ...` line at the end of its log, if it printed one."""
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - 16384))
            tail = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    return next((ln.removeprefix("ftplan: error: ") for ln in reversed(tail) if ln.startswith("ftplan: error: ")),
                None)
