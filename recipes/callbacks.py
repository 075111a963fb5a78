"""A TrainerCallback that turns the Trainer's life into ftplan events, checkpoints by time, and stops cleanly.

Stopping is cooperative: SIGTERM (what `ftplan cancel` sends locally), SIGINT, a stop file (how
a cancel reaches a Modal container) or the end of a segment's time budget only raise a flag; at
the next step boundary the callback asks the Trainer to save a checkpoint and stop, so a
cancelled run always leaves a usable, complete checkpoint. In a multi-GPU run every decision to
save or stop is taken by all ranks together (one all-reduce of three flags per step): a rank
that saved or stopped alone would leave the others waiting in a collective forever.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from .checkpoints import mark_complete
from .events import EventWriter


def peak_memory() -> tuple[int, str]:
    """(bytes, what was measured): CUDA's peak allocation, else this process's peak RSS."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "cpu_peak_rss"


def agree(flags: list[float]) -> list[bool]:
    """Each flag raised on any rank is raised on all (MAX all-reduce); one process: the flags as they are."""
    import torch

    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [bool(f) for f in flags]
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(flags, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


class StopFlag:
    def __init__(self) -> None:
        self.requested = False
        self.reason = ""

    def request(self, reason: str) -> None:
        self.requested = True
        self.reason = reason


class EventCallback(TrainerCallback):
    COST_EVERY_SECONDS = 60

    def __init__(self, writer: EventWriter, stop: StopFlag, every_minutes: float | None, usd_per_hour: float = 0.0,
                 stop_file: str | None = None, max_seconds: float | None = None):
        self.writer = writer
        self.stop_file = Path(stop_file) if stop_file else None
        self.max_seconds = max_seconds
        self.usd_per_hour = usd_per_hour
        self.began = time.monotonic()
        self.last_cost = self.began
        self.stop = stop
        self.every_seconds = every_minutes * 60 if every_minutes else None
        self.last_save = time.monotonic()
        self.last_log = (time.monotonic(), 0)
        self.tokens_per_second: list[float] = []
        self.last_loss: float | None = None
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_log = (time.monotonic(), state.num_input_tokens_seen or 0)

    def _local_flags(self) -> list[float]:
        now = time.monotonic()
        if self.stop_file is not None and not self.stop.requested and self.stop_file.exists():
            self.stop.request("cancel requested")
        save = bool(self.every_seconds and now - self.last_save >= self.every_seconds)
        segment = bool(self.max_seconds and now - self.began >= self.max_seconds)
        return [float(save), float(self.stop.requested), float(segment)]

    def on_step_end(self, args, state, control, **kwargs):
        save, stop, segment = agree(self._local_flags())
        if stop and not self.stop.requested:
            self.stop.request("cancel requested")  # another rank saw it
        if segment and not self.stop.requested:
            self.stop.request("segment")
        if save:
            control.should_save = True
        if stop or segment:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "loss" in logs:
            now, seen = time.monotonic(), state.num_input_tokens_seen or 0
            t0, s0 = self.last_log
            tps = (seen - s0) / (now - t0) if now > t0 and seen > s0 else None
            self.last_log = (now, seen)
            if tps:
                self.tokens_per_second.append(tps)
            mem, kind = peak_memory()
            self.last_loss = float(logs["loss"])
            self.writer.emit("step", step=state.global_step, total=state.max_steps, epoch=state.epoch,
                             loss=self.last_loss, lr=logs.get("learning_rate"), grad_norm=logs.get("grad_norm"),
                             tokens_per_second=tps, tokens_seen=seen, peak_memory_bytes=mem, memory_metric=kind)
            if self.usd_per_hour and now - self.last_cost >= self.COST_EVERY_SECONDS:
                self.last_cost = now
                self.writer.emit("cost", usd=round(self.usd_per_hour * (now - self.began) / 3600, 4),
                                 usd_per_hour=self.usd_per_hour)
        elif any(k.startswith("eval_") for k in logs):
            self.writer.emit("eval", step=state.global_step, **{k: v for k, v in logs.items() if k.startswith("eval_")})
        else:
            self.writer.emit("log", step=state.global_step, message="trainer", values=logs)

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            mark_complete(folder, state.global_step)
            self.writer.emit("checkpoint", step=state.global_step, path=str(folder))
        self.last_save = time.monotonic()
