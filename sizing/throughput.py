"""Training speed of one micro-step, from the work it does and the program that runs it.

A micro-step costs the larger of two clocks, because the CPU queues kernels ahead of the GPU:
- GPU: matmul FLOPs at a sustained fraction of the card's dense BF16 peak, floored by reading the
  weights at the card's bandwidth (small micro-batches are bandwidth-bound); elementwise traffic
  (norms, activations, residual adds, the loss's logits) at the card's bandwidth; NF4
  dequantisation (QLoRA).
- CPU: a fixed cost per micro-step and per decoder layer for launching kernels (Python, autograd,
  PEFT's wrappers), plus one per extra module a layer calls (each LoRA adapter, each MoE expert);
  FSDP/ZeRO-3 add their per-layer gather hooks. Fused programs (Unsloth, torch.compile) launch
  fewer, bigger kernels.
Added on top: the optimizer step (once per optimizer step, spread over the micro-steps) and the
part of inter-GPU traffic compute does not hide (FSDP/ZeRO gathers and gradient reductions per
micro-step, DDP's all-reduce per step; across nodes at the inter-node link's speed).

FLOPs per token (N = weights a token multiplies through, A = causal attention):
  full fine-tuning      6N + 3A           (forward 2N+A; backward twice that)
  LoRA / QLoRA / DoRA   4N + 3A + 6N_ad   (frozen weights need input gradients only)
  + gradient checkpointing recomputes the forward: + 2N + A
  DoRA re-runs the frozen base matmul for its norm scaling: + 4 N_targeted
  trained embeddings/lm_head (modules_to_save): + 2 x lm_head for its weight gradient

The constants are in constants.py, fitted across published runs of several programs
(bench/fit_constants.py); bench/calibration.py scores them leave-one-source-out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import constants as C
from .architecture import Architecture
from .gpus import GPU
from .memory import activation_bytes_per_token_layer, adapter_params, logits_bytes_per_token, targeted_linears
from .setup import TrainingSetup

FUSED_TRAINERS = ("unsloth", "compiled")
# Bytes the optimizer reads and writes per trainable parameter in its step (weights, gradient, states).
OPTIMIZER_STEP_BYTES = {"adamw": 32, "adamw_8bit": 16, "paged_adamw_8bit": 16, "paged_adamw_32bit": 32, "sgd": 12}
HOST_ADAM_BYTES_PER_S = 20e9  # CPU Adam (DeepSpeed/FSDP offload) streams states through host memory
PCIE_BYTES_PER_S = 25e9  # offloaded weights and gradients cross PCIe 4.0 x16


@dataclass
class ThroughputEstimate:
    tokens_per_second: float  # all GPUs together
    flops_per_token: float
    mfu: float  # achieved: model FLOPs per second over the GPUs' dense peak
    step_seconds: float  # one micro-batch on every GPU
    breakdown: dict[str, float] = field(default_factory=dict)  # seconds per micro-batch
    bound: str = "compute"  # what sets the micro-step's time: compute | bandwidth | launch | communication


def flops_per_token(arch: Architecture, setup: TrainingSetup) -> dict[str, float]:
    n = arch.active_matmul_params
    lm_head = arch.vocab * arch.hidden
    attn = arch.layers * 4 * arch.heads * arch.head_dim * setup.seq_len * 0.5  # causal half
    out = {"forward": 2 * n + attn}
    if setup.is_adapter:
        n_ad = adapter_params(arch, setup)
        out["backward"] = 2 * n + 2 * attn + 6 * n_ad
        if setup.train_embeddings:
            out["backward"] += 2 * lm_head
    else:
        out["backward"] = 4 * n + 2 * attn
    if setup.gradient_checkpointing:
        out["recompute"] = 2 * (n - lm_head) + attn
    if setup.adapter == "dora":
        targeted = sum(lin.params * lin.active for lin in targeted_linears(arch, setup.lora_targets))
        out["dora"] = 4 * arch.layers * targeted
    return out


def is_fused(setup: TrainingSetup) -> bool:
    """Whether the program launches fused kernels (Unsloth's, torch.compile's) instead of eager ones."""
    return setup.trainer in FUSED_TRAINERS or setup.fused_kernels


def modules_per_layer(arch: Architecture, setup: TrainingSetup) -> float:
    """Extra module calls in one decoder layer beyond a dense layer's own: adapters and MoE experts."""
    extra = 0.0
    if setup.is_adapter:
        adapters = sum(lin.count if not lin.param else 1 for lin in targeted_linears(arch, setup.lora_targets))
        extra += adapters * (2 if setup.adapter == "dora" else 1)  # DoRA adds a weight-norm module per adapter
    # an eager MoE block loops over its experts (transformers' fused expert tensors too, in eager mode)
    extra += sum(lin.count - 1 for lin in arch.linears if lin.count > 1)
    return extra


def _weight_bytes(arch: Architecture, setup: TrainingSetup) -> float:
    """Bytes of weights one matmul pass reads (a dequantised NF4 weight is read as 16-bit)."""
    per = 4 if setup.precision == "fp32" else 2
    return arch.total_params * per


def _link_bytes_per_s(setup: TrainingSetup, gpu: GPU) -> float:
    link = gpu.interconnect_gbs * 1e9 * C.LINK_EFFICIENCY
    if not gpu.peer_to_peer:  # every GPU's share of a collective crosses the one host path in turn
        link /= max(1, setup.gpus_per_node)
    if setup.node_count > 1:
        link = min(link, C.INTER_NODE_GBS_PER_GPU * 1e9 * C.LINK_EFFICIENCY)
    return link


def _communication(arch: Architecture, setup: TrainingSetup, gpu: GPU, trainable: int) -> float:
    """Seconds of inter-GPU traffic per micro-step, before overlap with compute."""
    n = setup.gpus
    dist = setup.effective_distributed
    comm = 0.0
    if n > 1:
        frac = (n - 1) / n
        link = _link_bytes_per_s(setup, gpu)
        b_grad = 4 if setup.is_adapter and setup.adapter_dtype == "fp32" else 2
        if dist in ("fsdp", "zero3"):
            stored = arch.linear_params * 0.53 + (arch.total_params - arch.linear_params) * 2 \
                if setup.adapter == "qlora" else arch.total_params * 2
            comm += 2 * stored * frac / link  # gathered for forward and again for backward
            comm += trainable * b_grad * frac / link  # gradients reduce-scattered every micro-step
        elif dist == "zero2":
            comm += trainable * b_grad * frac / link
            comm += trainable * 2 * frac / link / setup.grad_accum  # updated weights gathered after the step
        else:
            comm += 2 * trainable * b_grad * frac / link / setup.grad_accum  # DDP all-reduce once per step
    if setup.cpu_offload and dist in ("fsdp", "zero3", "zero2"):
        shard = max(1, n)
        comm += 2 * arch.total_params * 2 / shard / PCIE_BYTES_PER_S  # params in, gradients out
    return comm


def estimate_throughput(arch: Architecture, setup: TrainingSetup, gpu: GPU) -> ThroughputEstimate:
    setup.validate()
    parts = flops_per_token(arch, setup)
    fpt = sum(parts.values())
    tokens = setup.tokens_per_micro_batch
    bw = gpu.bandwidth_gbs * 1e9
    peak = gpu.bf16_tflops * 1e12
    fused = is_fused(setup)
    gc = setup.gradient_checkpointing

    # ---- GPU clock ----------------------------------------------------------------------
    width = arch.hidden / (arch.hidden + C.MATMUL_HALF_WIDTH)  # narrow models run small, inefficient GEMMs
    matmul = tokens * fpt / (peak * C.MATMUL_EFFICIENCY * width)
    passes = 2 + (1 if gc else 0) + (1 if not setup.is_adapter else 0)  # forward, input grads, recompute, weight grads
    weights = passes * _weight_bytes(arch, setup) / bw
    times = {"matmul": max(matmul, weights)}
    elementwise = arch.layers * activation_bytes_per_token_layer(arch, setup) / C.ACTIVATION_OVERHEAD
    elementwise += logits_bytes_per_token(arch, setup)
    times["elementwise"] = C.ELEMENTWISE_PASSES * (1.5 if gc else 1.0) * elementwise * tokens / bw
    if fused:  # fused kernels read and write each saved tensor fewer times
        times["elementwise"] *= C.FUSED_ELEMENTWISE_FRACTION
    if setup.adapter == "qlora":
        times["dequantize"] = (passes - 1) * arch.linear_params * 2.5 / bw  # read NF4, write 16-bit
    gpu_seconds = sum(times.values())

    # ---- CPU clock (kernel launches) ------------------------------------------------------
    per_layer = C.LAYER_SECONDS + C.MODULE_SECONDS * modules_per_layer(arch, setup)
    if setup.effective_distributed in ("fsdp", "zero3"):
        per_layer += C.SHARDED_LAYER_SECONDS
    launch = arch.layers * per_layer * (4 / 3 if gc else 1.0) * (C.FUSED_LAUNCH_FRACTION if fused else 1.0)
    launch += C.STEP_SECONDS
    micro = max(gpu_seconds, launch)

    # ---- per optimizer step, and communication ---------------------------------------------
    trainable = adapter_params(arch, setup)
    if setup.train_embeddings and setup.is_adapter:
        trainable += 2 * arch.vocab * arch.hidden
    shard = setup.gpus if setup.effective_distributed in ("fsdp", "zero3", "zero2") else 1
    state_bytes = trainable / shard * OPTIMIZER_STEP_BYTES[setup.optimizer]
    offload = setup.cpu_offload and shard > 1  # as in the memory model: offload rides on FSDP/ZeRO
    if offload:
        optimizer = state_bytes / HOST_ADAM_BYTES_PER_S
    elif setup.optimizer.startswith("paged"):
        # bitsandbytes' paged states live in unified memory (the memory model counts them off the card):
        # the step pages them in and out over PCIe
        optimizer = 2 * trainable / shard * {"paged_adamw_8bit": 2, "paged_adamw_32bit": 8}[setup.optimizer] \
            / PCIE_BYTES_PER_S + state_bytes / bw
    else:
        optimizer = state_bytes / bw
    optimizer = (optimizer + C.OPTIMIZER_STEP_SECONDS) / setup.grad_accum
    comm = _communication(arch, setup, gpu, trainable)
    exposed = max(comm - C.COMM_OVERLAP * micro, (1 - C.COMM_OVERLAP) * comm) if comm else 0.0

    breakdown = dict(times, launch=launch, optimizer=optimizer, communication=exposed)
    step = micro + optimizer + exposed
    per_gpu = tokens / step
    bound = max((("compute" if matmul >= weights else "bandwidth", gpu_seconds), ("launch", launch),
                 ("communication", exposed)), key=lambda kv: kv[1])[0]
    return ThroughputEstimate(
        tokens_per_second=setup.gpus * per_gpu,
        flops_per_token=fpt,
        mfu=per_gpu * fpt / peak,
        step_seconds=step,
        breakdown=breakdown,
        bound=bound,
    )
