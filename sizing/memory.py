"""Peak GPU memory of one training step, by component, per GPU.

Every term is counted from the architecture (tensor shapes) and the setup (dtypes, sharding);
the few empirical constants live in `constants.py` and are fitted across all published
measurements. Components are what a user can act on: weights (quantise), adapter and
optimizer (rank, 8-bit), activations (checkpointing, micro-batch), logits (chunked loss),
sharding (more GPUs).

The peak modelled is the start of the backward pass of a step after the first: weights,
gradients and optimizer states all live, every saved activation still held, the loss's
logits materialised. `allocated` is what `torch.cuda.max_memory_allocated` reports;
`per_gpu` adds allocator slack and the CUDA context, i.e. what must fit on the card.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from . import constants as C
from .architecture import Architecture, Linear
from .errors import InvalidValueError
from .setup import TrainingSetup

GENERIC_TARGETS = {"q", "k", "v", "o", "gate", "up", "down"}
TARGET_ALIASES = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate",
                  "up_proj": "up", "down_proj": "down", "query": "q", "key": "k", "value": "v"}


def is_all_linear(targets: str) -> bool:
    return targets.strip().lower() in ("all-linear", "all_linear", "all")


def targeted_linears(arch: Architecture, targets: str) -> list[Linear]:
    """Which linears of a layer get LoRA, for the recipe's target string.

    `all-linear` is PEFT's own: every nn.Linear except the output head, plus the fused MoE tensors
    PEFT adds for some families (`Linear.in_all_linear`). `attention` and `mlp` are the blocks
    (the MoE router is not part of "mlp"). Generic names (q,k,v,o,gate,up,down) select by role,
    so `q` finds a fused `qkv_proj`; any other name is the model's own (`c_attn`, `w1`, or a full
    path such as `mlp.experts.gate_up_proj`).
    """
    spec = targets.strip().lower()
    if is_all_linear(spec):
        return [lin for lin in arch.linears if lin.in_all_linear]
    if spec in ("attention", "attn"):
        return [lin for lin in arch.linears if lin.block == "attention"]
    if spec == "mlp":
        return [lin for lin in arch.linears if lin.block == "mlp" and "router" not in lin.generic]
    wanted = {t.strip() for t in spec.split(",") if t.strip()}
    chosen, matched = [], set()
    for lin in arch.linears:
        own = {lin.name.lower(), lin.leaf.lower()}
        roles = set(lin.generic)
        hit = set()
        for w in wanted:
            role = TARGET_ALIASES.get(w, w)
            if role in GENERIC_TARGETS:  # a role: never the router that happens to be called "gate"
                if role in roles and "router" not in roles:
                    hit.add(w)
            elif w in own:
                hit.add(w)
        if hit:
            chosen.append(lin)
            matched |= hit
    unknown = wanted - matched
    if unknown or not chosen:
        names = sorted({lin.name for lin in arch.linears})
        raise InvalidValueError(
            f"--lora-targets: {', '.join(sorted(unknown or wanted))} matches no linear layer of "
            f"{arch.name}. Use all-linear, attention, mlp, generic names q,k,v,o,gate,up,down, or the "
            f"model's own module names: {', '.join(names)}."
        )
    return chosen


@dataclass
class MemoryEstimate:
    components: dict[str, int]
    allocated: int  # what torch.cuda.max_memory_allocated would report at the peak
    per_gpu: int  # allocated + allocator slack + CUDA context: what must fit on the card
    trainable_params: int
    notes: list[str] = field(default_factory=list)
    offloaded: dict[str, int] = field(default_factory=dict)  # held in CPU / unified memory


FITS, TIGHT, TOO_BIG = "fits", "tight", "does not fit"


def fit_verdict(need: float, capacity: float, uncertainty: float = C.MEMORY_UNCERTAINTY) -> str:
    """Whether `need` bytes fit a card of `capacity` bytes, given the estimate may be off by `uncertainty`.

    fits: fits even if the estimate is that much too low. does not fit: too big even if it is that much
    too high. In between the headroom is inside the estimate's own error: tight (try it, or add margin).
    """
    if need * (1 + uncertainty) <= capacity:
        return FITS
    if need * (1 - uncertainty) > capacity:
        return TOO_BIG
    return TIGHT


def _bytes(dtype: str) -> int:
    return 4 if dtype in ("fp32", "mixed") else 2


def adapter_params(arch: Architecture, setup: TrainingSetup) -> int:
    if not setup.is_adapter:
        return arch.total_params - arch.extra_params
    r = setup.lora_rank
    per_layer = 0
    widen = is_all_linear(setup.lora_targets)
    for lin in targeted_linears(arch, setup.lora_targets):
        # PEFT on a fused expert tensor: lora_A (rank x experts, in), lora_B (out, rank x experts).
        rank = r * (lin.all_linear_rank if widen else 1)
        per_layer += lin.count * rank * (lin.in_features + lin.out_features)
        if setup.adapter == "dora":
            per_layer += lin.count * lin.out_features  # magnitude vector
    return arch.layers * per_layer


def activation_bytes_per_token_layer(arch: Architecture, setup: TrainingSetup) -> float:
    """Bytes one token leaves saved for backward in one decoder layer (no checkpointing)."""
    b_core = setup.activation_bytes  # attention kernels run in 16-bit even on an fp32 residual stream
    b = 4 if setup.kbit_upcast else b_core
    h, heads, kv, d = arch.hidden, arch.heads, arch.kv_heads, arch.head_dim
    full = not setup.is_adapter
    targeted = {lin.name for lin in targeted_linears(arch, setup.lora_targets)} if not full else None

    # A frozen nn.Linear keeps no input (its backward needs only the weight). What is kept instead:
    # - full fine-tuning: every linear's input, for its weight gradient (siblings share one tensor);
    # - LoRA without dropout: the adapter's input, shared with siblings unless PEFT casts it to fp32
    #   adapters (then each adapter holds its own fp32 copy);
    # - LoRA with dropout: each adapter's own dropout output plus its 1-byte mask;
    # - QLoRA on bitsandbytes < 0.43.2: every 4-bit linear's raw input as well.
    total = 0.0
    # Norms upcast to fp32 and keep that copy; a trainable norm weight also keeps its input. Fused
    # kernels (torch.compile, Unsloth's Triton norms) keep only the 16-bit input and recompute.
    if setup.fused_kernels:
        total += arch.norms_per_layer * b * h
    else:
        total += arch.norms_per_layer * (4 * h + (b * h if full else 0))

    inputs_saved: set[str] = set()
    upcast = setup.is_adapter and setup.adapter_dtype == "fp32" and b == 2
    b_adapter_in = 4 if upcast else b
    dropout = setup.is_adapter and setup.lora_dropout > 0
    raw_for_all = full or (setup.adapter == "qlora" and setup.quant_saves_inputs)
    for lin in arch.linears:
        tokens_through = lin.active * lin.count  # MoE experts see only their routed tokens
        is_target = targeted is not None and lin.name in targeted
        keeps_raw = raw_for_all
        if is_target:
            if dropout:
                total += (b_adapter_in + 1) * lin.in_features * tokens_through
            elif upcast:
                total += 4 * lin.in_features * tokens_through
            else:
                keeps_raw = True
            if setup.adapter == "dora":
                total += 2 * b * lin.out_features * tokens_through  # base output + LoRA output
        if not keeps_raw:
            continue
        key = lin.shares_input_with or lin.name
        if key in inputs_saved:
            continue
        inputs_saved.add(key)
        total += b * lin.in_features * tokens_through

    # Attention core. flash-attn keeps K/V at their GQA width; SDPA paths repeat K/V to all heads.
    kv_width = kv * d if setup.attention == "flash" else heads * d
    total += b_core * (2 * heads * d + 2 * kv_width) + 4 * heads
    if setup.attention == "eager":
        # fp32 softmax output + 16-bit probabilities for the value matmul, per query token
        total += (4 + b) * heads * setup.seq_len

    # MLP nonlinearity: the activation keeps its input; the gate*up product keeps both factors. A
    # fused SwiGLU keeps only the gate and up outputs and recomputes the activation.
    for lin in arch.linears:
        if lin.block != "mlp" or "router" in lin.generic:
            continue
        width = lin.out_features * lin.active * lin.count
        if "gate" in lin.generic and "up" in lin.generic:  # fused gate_up (Phi-3, ChatGLM)
            total += b * width + (0 if setup.fused_kernels else b * width / 2)
        elif "gate" in lin.generic:
            total += b * width + (0 if setup.fused_kernels else b * width)  # act input, act output
        elif "up" in lin.generic:
            total += b * width  # gated: product factor; plain MLP: the activation's input
    return total * C.ACTIVATION_OVERHEAD


def logits_bytes_per_token(arch: Architecture, setup: TrainingSetup) -> float:
    """Bytes per token the loss holds at the peak (logits, their fp32 copies and gradient), by loss kind.

    standard: HF's ForCausalLMLoss upcasts the 16-bit logits to fp32, log-softmaxes and keeps the fp32
    gradient. chunked: 16-bit logits, fp32 one chunk at a time (torchtune, LitGPT). fused (Unsloth / Cut
    Cross Entropy): logits exist one block of tokens at a time, a fixed cost spread over the micro-batch.
    liger: Liger-Kernel's fused linear cross-entropy (ops/fused_linear_cross_entropy.py) fills the
    input's gradient (BT x H) during forward and bounds each logits chunk to about BT x H elements.
    """
    b_act = setup.activation_bytes
    if setup.loss == "fused":
        tokens = max(1, setup.tokens_per_micro_batch)
        return min(tokens, C.LOGITS_BYTES_FUSED_BLOCK_TOKENS) * 4 * arch.vocab * 2 / tokens
    if setup.loss == "liger":
        return 2 * b_act * arch.hidden + 4  # grad_input + logits chunk, fp32 loss per token
    if setup.loss == "chunked":
        # a compiled loss keeps only the 16-bit logits (and a log-sum-exp per token), not the
        # log-softmax output of each chunk
        per_vocab = (1 if setup.fused_kernels else C.LOGITS_BYTES_CHUNKED_FACTOR) * b_act
    elif setup.kbit_upcast:
        per_vocab = C.LOGITS_BYTES_STANDARD_EXTRA  # an fp32 lm_head writes fp32 logits: no 16-bit copy
    else:
        per_vocab = b_act + C.LOGITS_BYTES_STANDARD_EXTRA
    return per_vocab * arch.vocab


def estimate_memory(arch: Architecture, setup: TrainingSetup) -> MemoryEstimate:
    setup.validate()
    if setup.untie_embeddings and arch.tied_embeddings:
        arch = replace(arch, tied_embeddings=False)
    notes: list[str] = []
    comp: dict[str, int] = {}
    offloaded: dict[str, int] = {}
    n = setup.gpus
    dist = setup.effective_distributed
    shard_params = dist in ("fsdp", "zero3")
    shard_states = dist in ("fsdp", "zero3", "zero2")
    b_param = _bytes(setup.precision)
    b_act = setup.activation_bytes
    deepspeed = dist in ("zero2", "zero3")
    # PEFT's modules_to_save wraps embed_tokens and lm_head in a trainable copy of each (two copies even
    # when the checkpoint ties them); the copies train at the model's dtype.
    emb_trainable = 2 * arch.vocab * arch.hidden if setup.train_embeddings and setup.is_adapter else 0

    # ---- weights ------------------------------------------------------------------------
    quantized_head = setup.adapter == "qlora" and setup.quantize_lm_head
    if setup.adapter == "qlora":
        per_param = 0.5 + (1 / 64 + 4 / (64 * 256) if setup.double_quant else 4 / 64)
        in_nf4 = arch.linear_params + (arch.lm_head_params if quantized_head else 0)
        weights = in_nf4 * per_param + (arch.total_params - in_nf4) * (4 if setup.kbit_upcast else 2)
        rest = "embeddings and norms" if quantized_head else "embeddings, norms and lm_head"
        notes.append(
            f"QLoRA: {'linears and lm_head' if quantized_head else 'decoder linears'} in NF4 (0.5 B/param + "
            f"quantisation constants); {rest} {'upcast to fp32' if setup.kbit_upcast else 'stay 16-bit'}"
        )
    elif setup.precision == "mixed" and shard_params and n > 1:
        # Sharded mixed precision casts per gathered unit, not the whole model: FSDP keeps fp32
        # shards and gathers 16-bit copies; DeepSpeed's bf16 mode stores the module itself in 16-bit
        # (fp32 masters exist only for trainable parameters, in the optimizer).
        weights = arch.total_params * (4 if dist == "fsdp" else 2)
    else:
        weights = arch.total_params * b_param
        if setup.precision == "mixed":
            # autocast keeps 16-bit copies of the weights it cast for the backward pass
            weights += arch.linear_params * 2
    trainable = adapter_params(arch, setup)
    b_train = _bytes(setup.adapter_dtype) if setup.is_adapter and setup.precision != "fp32" else b_param

    gathered = 0
    if shard_params and n > 1:
        # FSDP/ZeRO-3 shard weights; each GPU gathers one layer at a time (plus one prefetched).
        weights = weights / n
        b_gather = 2 if setup.precision == "mixed" else b_param  # mixed precision gathers 16-bit units
        gathered = 2 * arch.layer_params * (b_gather if setup.adapter != "qlora" else 0.53)
    if setup.cpu_offload and shard_params:
        offloaded["weights"] = int(weights)
        weights = 0
    weights += emb_trainable * b_param / (n if shard_params else 1)
    comp["weights"] = int(weights)
    if emb_trainable:
        notes.append(f"embeddings and lm_head trained in full: {emb_trainable / 1e9:.2f}B more trainable parameters")
    if setup.is_adapter:
        comp["adapter"] = int(trainable * b_train / (n if shard_params else 1))

    # ---- gradients ----------------------------------------------------------------------
    grads = trainable * b_train + emb_trainable * b_param
    if setup.optimizer_in_backward:
        grads = 2 * arch.largest_linear * b_train if not setup.is_adapter else grads
    elif shard_states and n > 1:
        grads = grads / n + (arch.layer_params * b_train if not setup.is_adapter else 0)
    if dist == "ddp" and not setup.optimizer_in_backward:
        grads *= 2  # DDP's bucket buffers hold a second copy of the gradients
    if setup.cpu_offload and shard_states:
        offloaded["gradients"] = int(grads)
        grads = 0
    comp["gradients"] = int(grads)

    # ---- optimizer states -----------------------------------------------------------------
    per_param = {
        "adamw": 2 * b_train, "adamw_8bit": 2.0, "paged_adamw_8bit": 2.0,
        "paged_adamw_32bit": 8.0, "sgd": 0.0,
    }[setup.optimizer]
    per_param_emb = 2 * b_param if setup.optimizer == "adamw" else per_param  # torch keeps states in param dtype
    if deepspeed and setup.precision in ("bf16", "fp16"):
        # DeepSpeed's 16-bit ZeRO optimizer holds fp32 master weights and fp32 Adam states (12 B per
        # parameter: Rajbhandari et al. 2020, "ZeRO", section 3.1) and accumulates gradients into an fp32
        # partition (4 B) beside the 16-bit module and its 16-bit gradients.
        per_param = per_param_emb = 4 + 4 + (8 if setup.optimizer in ("adamw", "paged_adamw_32bit") else per_param)
    opt = (trainable * per_param + emb_trainable * per_param_emb) / (n if shard_states else 1)
    if setup.optimizer.startswith("paged") or (setup.cpu_offload and shard_states):
        offloaded["optimizer"] = int(opt)
        notes.append("optimizer states paged/offloaded: held in CPU or unified memory, not counted on the GPU")
        opt = 0
    comp["optimizer"] = int(opt)
    if setup.precision == "mixed" and setup.adapter != "qlora":
        notes.append("mixed precision: fp32 weights with 16-bit autocast copies")

    # ---- activations --------------------------------------------------------------------
    tokens = setup.tokens_per_micro_batch
    per_layer = activation_bytes_per_token_layer(arch, setup) * tokens
    layer_input = (4 if setup.kbit_upcast else b_act) * arch.hidden * tokens
    if setup.gradient_checkpointing:
        kept = arch.layers * layer_input
        if setup.activation_offload:
            kept = 2 * layer_input
        acts = kept + per_layer  # one layer recomputed at a time
    elif setup.activation_offload:
        acts = 2 * per_layer
    else:
        acts = arch.layers * per_layer
    acts += 4 * arch.hidden * tokens  # final norm
    comp["activations"] = int(acts)

    # ---- logits and loss ----------------------------------------------------------------
    comp["logits"] = int(logits_bytes_per_token(arch, setup) * tokens)
    if setup.loss == "liger" and setup.train_embeddings:
        comp["logits"] += int(arch.vocab * arch.hidden * b_param)  # its lm_head gradient, filled in forward

    # ---- when the peak happens -------------------------------------------------------------
    # Gradients are allocated during the backward pass (zero_grad sets them to None) as saved
    # activations are released, so for full fine-tuning the peak is the larger of two moments:
    # backward's start (every activation and the logits live, only lm_head's gradient so far) or
    # its end (every gradient live, one layer's activations left). Adapter gradients are too small
    # to matter; an optimizer fused into backward never holds them all.
    # A third moment: torch's AdamW (foreach, the Trainer's "adamw_torch") allocates a copy of the second
    # moments for their square root inside step(), with every gradient live and the activations gone.
    step_temp = 0
    if setup.optimizer == "adamw" and not setup.optimizer_in_backward and not (setup.cpu_offload and shard_states):
        step_temp = int((trainable + emb_trainable) * (4 if b_train == 4 or deepspeed else b_train)
                        / (n if shard_states else 1))
    if not setup.is_adapter and not setup.optimizer_in_backward:
        head_grad = min(grads, arch.vocab * arch.hidden * b_train / (n if shard_states else 1))
        start = comp["activations"] + comp["logits"] + head_grad
        last_layer = per_layer + (layer_input if setup.gradient_checkpointing else 0)
        end = grads + max(last_layer, step_temp)
        if end > start:
            if step_temp > last_layer:
                comp["activations"], comp["logits"] = 0, 0
                comp["optimizer_step"] = step_temp
                notes.append("peak in the optimizer step: all gradients live, AdamW's temporary second-moment copy")
            else:
                comp["activations"], comp["logits"] = int(last_layer), 0
                notes.append("peak at the end of backward: all gradients live, activations released")
        else:
            comp["gradients"] = int(head_grad)

    # ---- transient buffers ----------------------------------------------------------------
    transient = 0
    if setup.adapter == "qlora":
        # a 4-bit linear is dequantised to a 16-bit copy for its matmul (forward and backward)
        biggest = max(lin.in_features * lin.out_features for lin in arch.linears)
        if quantized_head:
            biggest = max(biggest, arch.vocab * arch.hidden)
        transient += 2 * 2 * biggest
    if setup.adapter == "dora":
        biggest = max(lin.in_features * lin.out_features for lin in targeted_linears(arch, setup.lora_targets))
        transient += 4 * biggest  # W + s*BA materialised for the column norm
    if setup.attention == "eager":
        # backward through one layer's eager softmax: the probabilities' 16-bit gradient and the
        # scores' fp32 gradient, one score matrix each
        transient += (b_act + 4) * arch.heads * setup.seq_len * tokens
    transient += int(gathered)
    comp["buffers"] = int(transient)

    allocated = sum(comp.values())
    slack = int(allocated * C.ALLOCATOR_OVERHEAD)
    comp["allocator_overhead"] = slack
    comp["cuda_context"] = C.CUDA_CONTEXT_BYTES
    return MemoryEstimate(
        components=comp,
        allocated=allocated,
        per_gpu=allocated + slack + C.CUDA_CONTEXT_BYTES,
        trainable_params=trainable,
        notes=notes,
        offloaded=offloaded,
    )
