"""The training setup for one GPU type x count: the fastest that fits with margin, so the cheapest there.

For a given card and count the price per hour is fixed, so the cheapest setup is the fastest one. The
search varies what a user would tune by hand: micro-batch, gradient accumulation (keeping a sane
effective batch), packing (TRL's padding-free packing where the data is short), gradient
checkpointing, sharding (DDP or FSDP) and the adapter (LoRA before QLoRA), under the program ftplan
will run there (sizing/trainers.py). Fields the user pinned stay as given. Only setups whose memory
verdict is "fits" (headroom beyond the estimate's own uncertainty) are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .architecture import Architecture
from .gpus import GPU
from .memory import FITS, estimate_memory, fit_verdict
from .method import PAIRED
from .setup import TrainingSetup
from .throughput import ThroughputEstimate, estimate_throughput
from .trainers import apply_trainer, default_trainer

if TYPE_CHECKING:
    from .plan import Workload

MICRO_BATCHES = (1, 2, 4, 8, 16, 32, 64)
# Effective batch bounds the search keeps (a pinned --batch-size or --grad-accum overrides them):
# at least the recipe presets' batch 1 x accumulation 8 sequences per optimizer step, at most Llama 2's
# SFT step of 64 sequences x 4096 tokens (Touvron et al. 2023, "Llama 2", section 3.1), and enough
# optimizer steps for the warmup and decay of the schedule to mean something.
MIN_SEQUENCES_PER_STEP = 8
MAX_TOKENS_PER_STEP = 64 * 4096
MIN_OPTIMIZER_STEPS = 20
# Setup fields the search may choose; `pinned` names those the user set.
SEARCHED = ("micro_batch_size", "grad_accum", "packing", "gradient_checkpointing", "distributed", "trainer")
PACKABLE = ("sft", "continued-pretraining", "distillation")


@dataclass(frozen=True)
class Choice:
    """One setup the search settled on, with what it costs on the card."""

    setup: TrainingSetup  # as the run is configured (what memory is sized for)
    packing: bool
    need: int  # bytes per GPU, objective extras included
    verdict: str
    speed: ThroughputEstimate
    tokens_per_epoch: int
    train_seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.speed.tokens_per_second

    def describe(self) -> str:
        s = self.setup
        parts = [f"micro-batch {s.micro_batch_size} x {s.grad_accum} accumulation"]
        parts.append("packed" if self.packing else "padded")
        parts.append("checkpointing " + ("on" if s.gradient_checkpointing else "off"))
        if s.gpus > 1:
            parts.append(s.effective_distributed)
        parts.append(s.trainer)
        return ", ".join(parts)

    def to_dict(self) -> dict:
        s = self.setup
        return {"adapter": s.adapter, "trainer": s.trainer, "micro_batch_size": s.micro_batch_size,
                "grad_accum": s.grad_accum, "packing": self.packing, "gradient_checkpointing": s.gradient_checkpointing,
                "distributed": s.effective_distributed, "seq_len": s.seq_len, "loss": s.loss, "optimizer": s.optimizer,
                "mfu": round(self.speed.mfu, 3), "bound": self.speed.bound}


class SetupSearch:
    """Memoised memory and speed for one model and workload across every GPU type and count."""

    def __init__(self, arch: Architecture, base: TrainingSetup, work: Workload, *, pinned: frozenset[str] = frozenset(),
                 packing: bool | None = None, unsloth_available: bool = True,
                 speed_corrections: dict[str, tuple[float, int]] | None = None, extras=None, extra_seconds=None):
        self.arch, self.base, self.work, self.pinned = arch, base, work, pinned
        self.unsloth_available = unsloth_available
        self.corrections = speed_corrections or {}
        self.extras = extras or (lambda setup: 0)  # objective's extra memory (reference model, KV cache, teacher)
        self.extra_seconds = extra_seconds or (lambda setup, gpu, secs, speed: secs)
        packable = work.objective in PACKABLE and bool(work.padded_by_batch)
        if packing is not None:
            self.packings = (packing and packable,)
        elif packable and work.mean_length and work.mean_length < 0.5 * work.seq_len:
            self.packings = (True, False)
        else:
            self.packings = (False,)
        self._setups: dict[tuple, TrainingSetup] = {}
        self._speed_setups: dict[tuple, TrainingSetup] = {}
        self._memory: dict[TrainingSetup, int] = {}
        self._speed: dict[tuple, ThroughputEstimate] = {}
        self._best: dict[tuple, Choice | None] = {}

    # ---- pieces --------------------------------------------------------------------------------
    def _pair(self) -> int:
        return 2 if self.work.objective in PAIRED else 1  # chosen and rejected forwarded together

    def _options(self, field: str, searched: tuple):
        return (getattr(self.base, field),) if field in self.pinned else searched

    def _tokens_per_micro(self, mb: int, packing: bool) -> float:
        """Tokens one micro-batch carries on average (what sets the speed)."""
        w = self.work
        if packing:
            return mb * w.seq_len
        seqs = mb * self._pair()
        padded = w.padded_by_batch.get(seqs)
        if padded and w.sequences:
            return padded / w.sequences * seqs
        return seqs * max(1, w.mean_sequence)

    def _tokens_per_epoch(self, mb: int, packing: bool) -> int:
        w = self.work
        if packing:
            return w.billable_tokens_per_epoch
        return w.padded_by_batch.get(mb * self._pair(), w.tokens_per_epoch)

    def _examples_per_micro(self, mb: int, packing: bool) -> float:
        if packing and self.work.mean_length:
            return mb * self.work.seq_len / self.work.mean_length
        return mb

    def _setup(self, adapter: str, count: int, dist: str, mb: int, gc: bool, packing: bool) -> TrainingSetup:
        """The setup these knobs give; the same for every GPU model, so built once per search."""
        key = (adapter, count, dist, mb, gc, packing)
        if key not in self._setups:
            self._setups[key] = self._build_setup(*key)
        return self._setups[key]

    def _build_setup(self, adapter: str, count: int, dist: str, mb: int, gc: bool, packing: bool) -> TrainingSetup:
        w = self.work
        s = replace(self.base, adapter=adapter, gpus=count, distributed=dist if count > 1 else "none",
                    micro_batch_size=mb * self._pair(), gradient_checkpointing=gc,
                    seq_len=w.seq_len if packing else w.longest or self.base.seq_len,
                    optimizer=("paged_adamw_8bit" if adapter == "qlora" and self.base.optimizer == "adamw"
                               and "optimizer" not in self.pinned else self.base.optimizer))
        if "grad_accum" not in self.pinned:
            per_step = self._examples_per_micro(mb, packing) * count
            s = replace(s, grad_accum=max(1, math.ceil(MIN_SEQUENCES_PER_STEP / per_step)))
        trainer = self.base.trainer if "trainer" in self.pinned else default_trainer(
            s, w.objective, unsloth_available=self.unsloth_available)
        return apply_trainer(s, trainer, keep=self.pinned)

    def memory(self, setup: TrainingSetup) -> int:
        if setup not in self._memory:
            self._memory[setup] = estimate_memory(self.arch, setup).per_gpu + self.extras(setup)
        return self._memory[setup]

    def _within_batch_bounds(self, setup: TrainingSetup, mb: int, packing: bool) -> bool:
        if "micro_batch_size" in self.pinned or mb == 1:
            return True
        per_step = self._tokens_per_micro(mb, packing) * setup.gpus * setup.grad_accum
        total = self._tokens_per_epoch(mb, packing) * self.work.epochs
        return per_step <= MAX_TOKENS_PER_STEP and total / per_step >= MIN_OPTIMIZER_STEPS

    def _choice(self, setup: TrainingSetup, gpu: GPU, mb: int, packing: bool, need: int) -> Choice:
        if (setup, mb, packing) not in self._speed_setups:  # the same on every GPU model
            tokens = self._tokens_per_micro(mb, packing)
            seq = max(16, round(tokens / setup.micro_batch_size))
            self._speed_setups[setup, mb, packing] = replace(setup, seq_len=seq)
        speed_setup = self._speed_setups[setup, mb, packing]
        key = (speed_setup, gpu.name)
        if key not in self._speed:
            self._speed[key] = estimate_throughput(self.arch, speed_setup, gpu)
        speed = self._speed[key]
        factor = self.corrections.get(gpu.name, (1.0, 0))[0]  # the user's own measured runs on this GPU
        if factor != 1.0:
            speed = replace(speed, tokens_per_second=speed.tokens_per_second * factor)
        per_epoch = self._tokens_per_epoch(mb, packing)
        secs = per_epoch * self.work.epochs / speed.tokens_per_second
        secs = self.extra_seconds(speed_setup, gpu, secs, speed)
        return Choice(setup, packing, need, fit_verdict(need, gpu.memory_bytes), speed, per_epoch, secs)

    # ---- the search ----------------------------------------------------------------------------
    def best(self, gpu: GPU, count: int, adapters: tuple[str, ...]) -> Choice | None:
        """The fastest setup that fits `count` x `gpu` with margin, trying the adapters in order."""
        key = (gpu.name, gpu.memory_bytes, count, adapters)
        if key not in self._best:
            self._best[key] = self._search(gpu, count, adapters)
        return self._best[key]

    def _search(self, gpu: GPU, count: int, adapters: tuple[str, ...]) -> Choice | None:
        for adapter in adapters:
            dists = ("none",) if count == 1 else ("ddp", "fsdp")
            if count > 1 and "distributed" in self.pinned and self.base.distributed != "none":
                dists = (self.base.distributed,)
            found: list[Choice] = []
            for dist in dists:
                for gc in self._options("gradient_checkpointing", (True, False)):
                    for packing in self.packings:
                        fitting = []
                        for mb in self._options("micro_batch_size", MICRO_BATCHES):
                            setup = self._setup(adapter, count, dist, mb, gc, packing)
                            need = self.memory(setup)
                            if fit_verdict(need, gpu.memory_bytes) != FITS:
                                break  # memory grows with the micro-batch
                            if self._within_batch_bounds(setup, mb, packing):
                                fitting.append((setup, mb, need))
                        found += [self._choice(s, gpu, mb, packing, need) for s, mb, need in fitting[-2:]]
                if found and dist == "ddp":
                    break  # DDP fits: FSDP would only add gathers
            if found:
                return min(found, key=lambda c: c.train_seconds)
        return None
