"""`estimate()`: model + setup + GPU -> memory by component, fit, throughput and time.

The typed Python API under `ftplan estimate`; the CLI only parses flags and prints. The
returned dict is the stable `--json` schema documented in the README.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from . import constants as C
from .catalog import ModelSource, resolve_model
from .errors import InvalidValueError
from .gpus import GPU, get_gpu
from .memory import TOO_BIG, MemoryEstimate, estimate_memory, fit_verdict
from .setup import TrainingSetup
from .throughput import ThroughputEstimate, estimate_throughput

DEFAULT_GPU = "H100"


@dataclass
class Estimate:
    model: ModelSource
    setup: TrainingSetup
    gpu: GPU
    memory: MemoryEstimate
    throughput: ThroughputEstimate
    tokens: int | None
    warnings: list[str]

    @property
    def memory_uncertainty(self) -> float:
        return C.MEMORY_UNCERTAINTY + self.model.params_uncertainty

    @property
    def verdict(self) -> str:
        """fits | tight | does not fit (the headroom against the estimate's own uncertainty)."""
        return fit_verdict(self.memory.per_gpu, self.gpu.memory_bytes, self.memory_uncertainty)

    @property
    def fits(self) -> bool:
        return self.verdict != TOO_BIG

    @property
    def seconds(self) -> float | None:
        if self.tokens is None:
            return None
        return self.tokens / self.throughput.tokens_per_second

    def to_dict(self) -> dict:
        arch = self.model.arch
        setup = asdict(self.setup)
        setup["distributed"] = self.setup.effective_distributed
        mem_unc = round(100 * self.memory_uncertainty)
        return {
            "model": {
                "id": self.model.model_id,
                "family": arch.family,
                "source": self.model.source,
                "citation": self.model.citation,
                "params": arch.breakdown(),
                "published_params_b": self.model.published_params_b,
                "trainable_params": self.memory.trainable_params,
            },
            "setup": setup,
            "hardware": {
                "gpu": self.gpu.name,
                "count": self.setup.gpus,
                "memory_bytes": self.gpu.memory_bytes,
                "memory_mib": self.gpu.memory_mib,
                "memory_source": self.gpu.memory_source,
                "bf16_tflops": self.gpu.bf16_tflops,
                "source": self.gpu.source,
                "as_of": self.gpu.as_of,
            },
            "memory": {
                "per_gpu_bytes": self.memory.per_gpu,
                "allocated_bytes": self.memory.allocated,
                "components": dict(self.memory.components),
                "offloaded_bytes": dict(self.memory.offloaded),
                "uncertainty_pct": mem_unc,
                "notes": list(self.memory.notes),
            },
            "fits": self.fits,
            "verdict": self.verdict,
            "headroom_bytes": self.gpu.memory_bytes - self.memory.per_gpu,
            "throughput": {
                "tokens_per_second": round(self.throughput.tokens_per_second, 1),
                "per_gpu_tokens_per_second": round(self.throughput.tokens_per_second / self.setup.gpus, 1),
                "mfu": round(self.throughput.mfu, 3),
                "flops_per_token": self.throughput.flops_per_token,
                "step_seconds": self.throughput.step_seconds,
                "breakdown_seconds": {k: v for k, v in self.throughput.breakdown.items() if v},
                "bound": self.throughput.bound,
                "uncertainty_pct": round(100 * (C.THROUGHPUT_UNCERTAINTY + self.model.params_uncertainty)),
            },
            "time": None if self.tokens is None else {
                "tokens": self.tokens,
                "seconds": round(self.seconds, 1),
                "hours": round(self.seconds / 3600, 3),
            },
            "warnings": list(self.warnings),
        }


def estimate(
    model: str | None = None,
    *,
    params: str | float | None = None,
    setup: TrainingSetup | None = None,
    gpu: str | None = None,
    tokens: int | None = None,
    speed_corrections: dict[str, tuple[float, int]] | None = None,
) -> Estimate:
    """Size one training configuration: `estimate("llama-3.1-8b", gpu="L4").to_dict()`.

    `speed_corrections` maps a GPU name to (measured / predicted tokens/s, runs) from the user's own
    runs (the job store); the speed on that GPU is scaled by it and the output says so.
    """
    setup = (setup or TrainingSetup()).validate()
    src = resolve_model(model, params)
    card = get_gpu(gpu or DEFAULT_GPU)
    if tokens is not None and tokens <= 0:
        raise InvalidValueError(f"--tokens {tokens} is impossible: give the number of tokens to train on (> 0).")
    warnings: list[str] = []
    arch = src.arch
    if arch.max_position and setup.seq_len > arch.max_position:
        warnings.append(
            f"--seq-len {setup.seq_len} exceeds the model's max_position_embeddings ({arch.max_position})."
        )
    if setup.precision == "bf16" and card.name in ("T4", "V100-16GB"):
        warnings.append(f"{card.name} has no bf16: training runs in fp16 (same memory, loss scaling needed).")
    if src.params_uncertainty:
        warnings.append(
            f"Architecture assumed from --params alone (Llama-shaped); memory and speed carry about "
            f"+/-{round(100 * src.params_uncertainty)} % extra uncertainty. Pass --model for exact figures."
        )
    mem = estimate_memory(arch, setup)
    tput = estimate_throughput(arch, setup, card)
    if speed_corrections and card.name in speed_corrections:
        factor, runs = speed_corrections[card.name]
        tput = replace(tput, tokens_per_second=tput.tokens_per_second * factor)
        warnings.append(f"Speed on {card.name} scaled by {factor:.2f}: the median of measured / predicted "
                        f"tokens/s over your {runs} run(s) on it (job store).")
    return Estimate(src, setup, card, mem, tput, tokens, warnings)
