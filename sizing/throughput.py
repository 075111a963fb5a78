"""Training speed: FLOPs per token from the architecture, over the GPU's dense BF16 peak.

FLOPs per token (N = weights a token multiplies through, A = causal attention):
  full fine-tuning      6N + 3A           (forward 2N+A; backward twice that)
  LoRA / QLoRA / DoRA   4N + 3A + 6N_ad   (frozen weights need input gradients only)
  + gradient checkpointing recomputes the forward: + 2N + A
  DoRA re-runs the frozen base matmul for its norm scaling: + 4 N_targeted
Memory-bound work is added as time, not FLOPs: NF4 dequantisation of every quantised weight on
every pass (QLoRA), the optimizer step (reads and writes every state once per step), and the
part of inter-GPU traffic that compute does not hide (FSDP gathers, gradient reductions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import constants as C
from .architecture import Architecture
from .gpus import GPU
from .memory import adapter_params, targeted_linears
from .setup import TrainingSetup


@dataclass
class ThroughputEstimate:
    tokens_per_second: float  # all GPUs together
    flops_per_token: float
    mfu: float
    step_seconds: float  # one micro-batch on every GPU
    breakdown: dict[str, float] = field(default_factory=dict)  # seconds per micro-batch


def flops_per_token(arch: Architecture, setup: TrainingSetup) -> dict[str, float]:
    n = arch.active_matmul_params
    lm_head = arch.vocab * arch.hidden
    attn = arch.layers * 4 * arch.heads * arch.head_dim * setup.seq_len * 0.5  # causal half
    out = {"forward": 2 * n + attn}
    if setup.is_adapter:
        n_ad = adapter_params(arch, setup)
        out["backward"] = 2 * n + 2 * attn + 6 * n_ad
    else:
        out["backward"] = 4 * n + 2 * attn
    if setup.gradient_checkpointing:
        out["recompute"] = 2 * (n - lm_head) + attn
    if setup.adapter == "dora":
        targeted = sum(lin.params * lin.active for lin in targeted_linears(arch, setup.lora_targets))
        out["dora"] = 4 * arch.layers * targeted
    return out


def model_flops_utilisation(arch: Architecture, setup: TrainingSetup, gpu: GPU) -> float:
    tokens = setup.tokens_per_micro_batch
    mfu = C.MFU_PEAK * tokens / (tokens + C.MFU_HALF_TOKENS)
    mfu *= arch.hidden / (arch.hidden + C.MFU_HALF_WIDTH)
    if setup.is_adapter:
        mfu *= C.MFU_ADAPTER_FACTOR
    return mfu * C.MFU_TIER.get(gpu.tier, 1.0)


def estimate_throughput(arch: Architecture, setup: TrainingSetup, gpu: GPU) -> ThroughputEstimate:
    setup.validate()
    parts = flops_per_token(arch, setup)
    fpt = sum(parts.values())
    tokens = setup.tokens_per_micro_batch
    mfu = model_flops_utilisation(arch, setup, gpu)
    bw = gpu.bandwidth_gbs * 1e9
    times = {"compute": fpt * tokens / (gpu.bf16_tflops * 1e12 * mfu)}

    if setup.adapter == "qlora":
        passes = 3 if setup.gradient_checkpointing else 2
        times["dequantize"] = passes * arch.linear_params * 2.5 / bw  # read NF4, write bf16

    trainable = adapter_params(arch, setup)
    n = setup.gpus
    dist = setup.effective_distributed
    shard = n if dist in ("fsdp", "zero3", "zero2") else 1
    state_bytes = {"adamw": 16, "adamw_8bit": 8, "paged_adamw_8bit": 8, "paged_adamw_32bit": 16, "sgd": 6}
    opt = trainable / shard * state_bytes[setup.optimizer] / bw
    offload = setup.cpu_offload and shard > 1  # as in the memory model: offload rides on FSDP/ZeRO
    if offload:
        opt = trainable / shard * state_bytes[setup.optimizer] / 20e9  # CPU Adam, host memory speed
    times["optimizer"] = opt / setup.grad_accum

    comm = 0.0
    if n > 1:
        b = 2
        frac = (n - 1) / n
        link = gpu.interconnect_gbs * 1e9
        if dist in ("fsdp", "zero3"):
            weight_bytes = arch.total_params * (0.53 if setup.adapter == "qlora" else b)
            gathers = 3 if setup.gradient_checkpointing else 2
            comm += gathers * weight_bytes * frac / link + trainable * b * frac / link
        else:
            comm += 2 * trainable * b * frac / link / setup.grad_accum
    if offload:
        comm += 2 * arch.total_params * 2 / shard / 25e9  # params in, gradients out over PCIe
    busy = sum(times.values())
    exposed = max(comm - C.COMM_OVERLAP * busy, (1 - C.COMM_OVERLAP) * comm) if comm else 0.0
    times["communication"] = exposed
    step = sum(times.values())
    return ThroughputEstimate(
        tokens_per_second=n * tokens / step,
        flops_per_token=fpt,
        mfu=mfu,
        step_seconds=step,
        breakdown=times,
    )
