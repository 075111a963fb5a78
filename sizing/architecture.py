"""Architecture of a decoder model, read from a Hugging Face `config.json` dict.

Everything the planner needs (exact parameter counts per module, the linear layers LoRA can
target, the widths that set activation memory) comes from plain JSON: no torch, no
transformers, so `ftplan estimate` starts fast. Each family's quirks (Qwen-1's doubled
`intermediate_size`, Falcon's `num_kv_heads`, Gemma's head_dim, Phi-3's fused projections)
are handled where that family is parsed, so the rest of the planner sees one shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError


@dataclass(frozen=True)
class Linear:
    """One linear projection inside a decoder layer (counted once per layer).

    `name` is its path inside the decoder layer in the transformers implementation
    ("self_attn.q_proj", "attn.c_attn", "mlp.experts.gate_up_proj"): the planner sizes and the
    trainer targets the same modules by it. transformers 5 keeps MoE experts as fused 3D tensors,
    which PEFT adapts as parameters (`target_parameters`), rank x experts wide; its `all-linear`
    picks them up for some families only, and then doubles the rank of the fused gate/up tensor.
    """

    name: str  # path inside the decoder layer, as transformers names the module (or fused parameter)
    generic: tuple[str, ...]  # generic roles it plays: q, k, v, o, gate, up, down, router
    block: str  # "attention" or "mlp"
    in_features: int
    out_features: int
    bias: bool = False
    count: int = 1  # copies per layer (experts)
    active: float = 1.0  # fraction of tokens that pass through one copy (MoE routing)
    shares_input_with: str = ""  # name of a sibling reading the same input tensor
    param: bool = False  # a fused tensor PEFT adapts through target_parameters, not a module
    in_all_linear: bool = True  # whether PEFT's "all-linear" adapts it
    all_linear_rank: int = 1  # PEFT's rank multiplier when "all-linear" adapts it (fused gate/up experts: 2)

    @property
    def params(self) -> int:
        return self.count * (self.in_features * self.out_features + (self.out_features if self.bias else 0))

    @property
    def leaf(self) -> str:
        """The last name in the path ("q_proj"; "gate" for a router's "mlp.gate.weight")."""
        parts = self.name.split(".")
        return parts[-2] if parts[-1] == "weight" and len(parts) > 1 else parts[-1]


@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer, reduced to what memory and speed depend on."""

    name: str
    family: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    linears: tuple[Linear, ...]
    norm_params_per_layer: int
    norms_per_layer: int
    final_norm_params: int
    position_embedding_params: int = 0
    lm_head_bias: bool = False
    mlp_gated: bool = True
    extra_params: int = 0  # e.g. a frozen vision tower of a multimodal checkpoint
    extra_note: str = ""
    max_position: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    # ---- parameter counts -------------------------------------------------------------
    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden + self.position_embedding_params

    @property
    def lm_head_params(self) -> int:
        """Parameters the output projection adds (0 when tied to the embedding)."""
        own = 0 if self.tied_embeddings else self.vocab * self.hidden
        return own + (self.vocab if self.lm_head_bias else 0)

    def block_params(self, block: str) -> int:
        return self.layers * sum(lin.params for lin in self.linears if lin.block == block)

    @property
    def norm_params(self) -> int:
        return self.layers * self.norm_params_per_layer + self.final_norm_params

    @property
    def total_params(self) -> int:
        return (
            self.embedding_params
            + self.block_params("attention")
            + self.block_params("mlp")
            + self.norm_params
            + self.lm_head_params
            + self.extra_params
        )

    @property
    def linear_params(self) -> int:
        """Weights of all decoder-layer linears: what NF4 quantises and LoRA can wrap."""
        return self.block_params("attention") + self.block_params("mlp")

    @property
    def active_matmul_params(self) -> float:
        """Weights one token multiplies through (MoE counts only routed experts), lm_head included."""
        per_layer = sum(lin.params * lin.active for lin in self.linears)
        return self.layers * per_layer + self.vocab * self.hidden

    @property
    def is_moe(self) -> bool:
        return any(lin.count > 1 for lin in self.linears)

    def breakdown(self) -> dict[str, int]:
        return {
            "embeddings": self.embedding_params,
            "attention": self.block_params("attention"),
            "mlp": self.block_params("mlp"),
            "norms": self.norm_params,
            "lm_head": self.lm_head_params,
            **({"other": self.extra_params} if self.extra_params else {}),
            "total": self.total_params,
        }

    @property
    def largest_linear(self) -> int:
        """Elements of the biggest single weight matrix (one expert for MoE)."""
        per_layer = max(lin.in_features * lin.out_features for lin in self.linears)
        return max(per_layer, self.vocab * self.hidden)

    @property
    def layer_params(self) -> int:
        return sum(lin.params for lin in self.linears) + self.norm_params_per_layer


# ---- parsing ------------------------------------------------------------------------------


def _req(cfg: dict, *keys: str, where: str) -> int:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    raise ConfigError(f"{where}: config.json has none of {', '.join(keys)}; is this a decoder model config?")


def _attention(h: int, heads: int, kv: int, d: int, *, qkv_bias=False, o_bias=False, at="self_attn") -> list[Linear]:
    q = f"{at}.q_proj"
    return [
        Linear(q, ("q",), "attention", h, heads * d, qkv_bias),
        Linear(f"{at}.k_proj", ("k",), "attention", h, kv * d, qkv_bias, shares_input_with=q),
        Linear(f"{at}.v_proj", ("v",), "attention", h, kv * d, qkv_bias, shares_input_with=q),
        Linear(f"{at}.o_proj", ("o",), "attention", heads * d, h, o_bias),
    ]


def _gated_mlp(h: int, i: int, *, bias=False, at="mlp") -> list[Linear]:
    g = f"{at}.gate_proj"
    return [
        Linear(g, ("gate",), "mlp", h, i, bias),
        Linear(f"{at}.up_proj", ("up",), "mlp", h, i, bias, shares_input_with=g),
        Linear(f"{at}.down_proj", ("down",), "mlp", i, h, bias),
    ]


def _fused_experts(h: int, i: int, e: int, k: int, *, in_all_linear: bool) -> list[Linear]:
    """transformers 5's MoE block: a router weight and each expert's gate/up and down as fused 3D tensors."""
    return [
        Linear("mlp.gate.weight", ("router",), "mlp", h, e, param=True, in_all_linear=in_all_linear),
        Linear("mlp.experts.gate_up_proj", ("gate", "up"), "mlp", h, 2 * i, count=e, active=k / e, param=True,
               in_all_linear=in_all_linear, all_linear_rank=2),
        Linear("mlp.experts.down_proj", ("down",), "mlp", i, h, count=e, active=k / e, param=True,
               in_all_linear=in_all_linear),
    ]


def _siglip_params(v: dict, text_hidden: int) -> int:
    """SigLIP vision tower + Gemma 3's projector: counted so totals match published sizes."""
    h, i, n = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h
    embed = 3 * v["patch_size"] ** 2 * h + h + patches * h
    return n * layer + embed + 2 * h + h * text_hidden + h


# Sizes a config.json may carry: each must be a whole number above zero where it is given.
SIZE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
             "intermediate_size", "vocab_size", "n_embd", "n_layer", "n_head", "n_inner", "kv_channels",
             "multi_query_group_num", "ffn_hidden_size", "num_layers", "padded_vocab_size", "num_experts",
             "num_local_experts", "num_experts_per_tok", "moe_intermediate_size", "shared_expert_intermediate_size",
             "num_kv_heads", "max_position_embeddings", "n_positions", "seq_length")


def _check_sizes(cfg: dict, name: str) -> None:
    for key in SIZE_KEYS:
        value = cfg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name}: '{key}' is {value!r}; it must be a whole number above 0. Fix the "
                              "config.json (or re-download it from the model's repository).")


def from_config(cfg: dict, name: str = "model") -> Architecture:
    """Build an Architecture from a config.json dict (any supported family)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{name}: config.json must hold a JSON object")
    _check_sizes(cfg, name)
    mt = str(cfg.get("model_type", "")).lower()
    extra = 0
    extra_note = ""
    if "text_config" in cfg and isinstance(cfg["text_config"], dict):
        text = dict(cfg["text_config"])
        text.setdefault("tie_word_embeddings", cfg.get("tie_word_embeddings", True))
        vision = cfg.get("vision_config")
        if isinstance(vision, dict) and vision.get("model_type", "").startswith("siglip"):
            extra = _siglip_params(vision, text["hidden_size"])
            extra_note = "vision tower (frozen by default)"
        arch = from_config(text, name)
        return Architecture(**{**arch.__dict__, "extra_params": extra, "extra_note": extra_note})

    parsers = {
        "llama": _llama_like, "mistral": _llama_like, "qwen2": _llama_like, "qwen3": _llama_like,
        "gemma": _llama_like, "gemma2": _llama_like, "gemma3_text": _llama_like, "gemma3": _llama_like,
        "codellama": _llama_like, "yi": _llama_like, "deepseek": _llama_like,
        "mixtral": _llama_like, "qwen2_moe": _llama_like, "qwen3_moe": _llama_like,
        "qwen": _qwen1, "phi": _phi, "phi3": _phi3, "falcon": _falcon, "refinedweb": _falcon,
        "gpt_neox": _gpt_neox, "gpt2": _gpt2, "baichuan": _baichuan, "chatglm": _chatglm,
    }
    if mt in ("t5", "mt5", "bart", "umt5") or cfg.get("is_encoder_decoder"):
        raise ConfigError(
            f"{name}: model_type '{mt}' is an encoder-decoder model; ftplan plans decoder-only "
            "(causal LM) fine-tuning. Pick a decoder model or pass --params for a rough figure."
        )
    if mt not in parsers:
        raise ConfigError(
            f"{name}: model_type '{mt or '?'}' is not a family ftplan knows "
            f"(known: {', '.join(sorted(set(parsers)))}). Pass --params N (e.g. --params 7B) for an "
            "estimate from the parameter count alone."
        )
    try:
        arch = parsers[mt](cfg, name, mt)
    except (TypeError, ValueError, KeyError, ZeroDivisionError) as exc:  # a field of the wrong shape
        raise ConfigError(f"{name}: config.json for model_type '{mt}' cannot be read ({type(exc).__name__}: {exc}); "
                          "compare it with the model's published config.json.") from None
    if arch.head_dim * arch.heads <= 0 or arch.total_params <= 0:
        raise ConfigError(f"{name}: config.json describes no parameters; check hidden_size, heads and layers.")
    return arch


def _llama_like(cfg: dict, name: str, mt: str) -> Architecture:
    where = name
    h = _req(cfg, "hidden_size", where=where)
    layers = _req(cfg, "num_hidden_layers", where=where)
    heads = _req(cfg, "num_attention_heads", where=where)
    kv = cfg.get("num_key_value_heads") or heads
    d = cfg.get("head_dim") or h // heads
    vocab = _req(cfg, "vocab_size", where=where)
    gemma = mt.startswith("gemma")
    tied = bool(cfg.get("tie_word_embeddings", gemma))
    qkv_bias = mt in ("qwen2", "qwen2_moe") or bool(cfg.get("attention_bias", False))
    o_bias = bool(cfg.get("attention_bias", False)) and mt not in ("qwen2", "qwen2_moe")
    mlp_bias = bool(cfg.get("mlp_bias", False))
    linears = _attention(h, heads, kv, d, qkv_bias=qkv_bias, o_bias=o_bias)
    notes: list[str] = []
    if mt == "mixtral":
        e, k = cfg.get("num_local_experts", 8), cfg.get("num_experts_per_tok", 2)
        i = _req(cfg, "intermediate_size", where=where)
        linears += _fused_experts(h, i, e, k, in_all_linear=True)
        notes.append(f"MoE: {e} experts, {k} active per token")
    elif mt in ("qwen2_moe", "qwen3_moe"):
        # Hub config.json files say num_experts; transformers 5 writes Qwen3-MoE's as num_local_experts.
        e = _req(cfg, "num_experts", "num_local_experts", where=where)
        k = cfg.get("num_experts_per_tok", 8 if mt == "qwen3_moe" else 4)
        mi = _req(cfg, "moe_intermediate_size", where=where)
        # PEFT's all-linear adapts Qwen3-MoE's fused experts and router, not Qwen2-MoE's (measured, PEFT 0.21).
        linears += _fused_experts(h, mi, e, k, in_all_linear=mt == "qwen3_moe")
        shared = cfg.get("shared_expert_intermediate_size") or 0
        if shared:
            linears += [
                *_gated_mlp(h, shared, at="mlp.shared_expert"),
                Linear("mlp.shared_expert_gate", ("router",), "mlp", h, 1),
            ]
        notes.append(f"MoE: {e} experts, {k} active per token")
    else:
        i = _req(cfg, "intermediate_size", where=where)
        linears += _gated_mlp(h, i, bias=mlp_bias)
    norms = 4 if mt in ("gemma2", "gemma3", "gemma3_text") else 2
    norm_params = norms * h + (2 * d if mt in ("qwen3", "qwen3_moe", "gemma3", "gemma3_text") else 0)
    return Architecture(
        name=name, family=mt, hidden=h, layers=layers, heads=heads, kv_heads=kv, head_dim=d,
        vocab=vocab, tied_embeddings=tied, linears=tuple(linears), norm_params_per_layer=norm_params,
        norms_per_layer=norms, final_norm_params=h, max_position=cfg.get("max_position_embeddings"),
        notes=tuple(notes),
    )


def _baichuan(cfg: dict, name: str, mt: str) -> Architecture:
    base = _llama_like({**cfg, "model_type": "llama"}, name, "llama")
    h = base.hidden
    fused = Linear("self_attn.W_pack", ("q", "k", "v"), "attention", h, 3 * h)
    rest = [lin for lin in base.linears if lin.leaf not in ("q_proj", "k_proj", "v_proj")]
    return Architecture(**{**base.__dict__, "family": mt, "linears": (fused, *rest)})


def _qwen1(cfg: dict, name: str, mt: str) -> Architecture:
    # Qwen-1: fused c_attn with bias; intermediate_size states TWICE one MLP projection's width.
    h = _req(cfg, "hidden_size", where=name)
    heads = _req(cfg, "num_attention_heads", where=name)
    d = cfg.get("kv_channels") or h // heads
    half = _req(cfg, "intermediate_size", where=name) // 2
    linears = (
        Linear("attn.c_attn", ("q", "k", "v"), "attention", h, 3 * heads * d, bias=True),
        Linear("attn.c_proj", ("o",), "attention", heads * d, h),
        Linear("mlp.w1", ("up",), "mlp", h, half),
        Linear("mlp.w2", ("gate",), "mlp", h, half, shares_input_with="mlp.w1"),
        Linear("mlp.c_proj", ("down",), "mlp", half, h),
    )
    return Architecture(
        name=name, family=mt, hidden=h, layers=_req(cfg, "num_hidden_layers", where=name),
        heads=heads, kv_heads=heads, head_dim=d, vocab=_req(cfg, "vocab_size", where=name),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)), linears=linears,
        norm_params_per_layer=2 * h, norms_per_layer=2, final_norm_params=h,
        max_position=cfg.get("max_position_embeddings"),
    )


def _chatglm(cfg: dict, name: str, mt: str) -> Architecture:
    h = _req(cfg, "hidden_size", where=name)
    heads = _req(cfg, "num_attention_heads", where=name)
    d = cfg.get("kv_channels") or h // heads
    kv = cfg.get("multi_query_group_num", heads) if cfg.get("multi_query_attention") else heads
    i = _req(cfg, "ffn_hidden_size", where=name)
    bias = bool(cfg.get("add_bias_linear", False))
    linears = (
        Linear("self_attention.query_key_value", ("q", "k", "v"), "attention", h, (heads + 2 * kv) * d,
               bias=bool(cfg.get("add_qkv_bias", False)) or bias),
        Linear("self_attention.dense", ("o",), "attention", heads * d, h, bias),
        Linear("mlp.dense_h_to_4h", ("gate", "up"), "mlp", h, 2 * i, bias),
        Linear("mlp.dense_4h_to_h", ("down",), "mlp", i, h, bias),
    )
    return Architecture(
        name=name, family=mt, hidden=h, layers=_req(cfg, "num_layers", "num_hidden_layers", where=name),
        heads=heads, kv_heads=kv, head_dim=d, vocab=_req(cfg, "padded_vocab_size", "vocab_size", where=name),
        tied_embeddings=False, linears=linears, norm_params_per_layer=2 * h, norms_per_layer=2,
        final_norm_params=h if cfg.get("post_layer_norm", True) else 0,
        max_position=cfg.get("seq_length"),
    )


def _phi(cfg: dict, name: str, mt: str) -> Architecture:
    # phi-1.5 / phi-2: biased q/k/v/dense, fc1-gelu-fc2, ONE LayerNorm per layer (parallel block).
    h = _req(cfg, "hidden_size", "n_embd", where=name)
    heads = _req(cfg, "num_attention_heads", "n_head", where=name)
    kv = cfg.get("num_key_value_heads") or heads
    d = h // heads
    i = cfg.get("intermediate_size") or 4 * h
    linears = (
        *_attention(h, heads, kv, d, qkv_bias=True, o_bias=True)[:3],
        Linear("self_attn.dense", ("o",), "attention", heads * d, h, True),
        Linear("mlp.fc1", ("up",), "mlp", h, i, True),
        Linear("mlp.fc2", ("down",), "mlp", i, h, True),
    )
    return Architecture(
        name=name, family=mt, hidden=h, layers=_req(cfg, "num_hidden_layers", "n_layer", where=name),
        heads=heads, kv_heads=kv, head_dim=d, vocab=_req(cfg, "vocab_size", where=name),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)), linears=linears,
        norm_params_per_layer=2 * h, norms_per_layer=1, final_norm_params=2 * h, lm_head_bias=True,
        mlp_gated=False, max_position=cfg.get("max_position_embeddings"),
    )


def _phi3(cfg: dict, name: str, mt: str) -> Architecture:
    # Phi-3 / Phi-4: fused qkv_proj and gate_up_proj.
    h = _req(cfg, "hidden_size", where=name)
    heads = _req(cfg, "num_attention_heads", where=name)
    kv = cfg.get("num_key_value_heads") or heads
    d = h // heads
    i = _req(cfg, "intermediate_size", where=name)
    linears = (
        Linear("self_attn.qkv_proj", ("q", "k", "v"), "attention", h, (heads + 2 * kv) * d),
        Linear("self_attn.o_proj", ("o",), "attention", heads * d, h),
        Linear("mlp.gate_up_proj", ("gate", "up"), "mlp", h, 2 * i),
        Linear("mlp.down_proj", ("down",), "mlp", i, h),
    )
    return Architecture(
        name=name, family=mt, hidden=h, layers=_req(cfg, "num_hidden_layers", where=name),
        heads=heads, kv_heads=kv, head_dim=d, vocab=_req(cfg, "vocab_size", where=name),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)), linears=linears,
        norm_params_per_layer=2 * h, norms_per_layer=2, final_norm_params=h,
        max_position=cfg.get("max_position_embeddings"),
    )


def _falcon(cfg: dict, name: str, mt: str) -> Architecture:
    h = _req(cfg, "hidden_size", "n_embd", where=name)
    heads = _req(cfg, "num_attention_heads", "n_head", where=name)
    d = h // heads
    new_arch = bool(cfg.get("new_decoder_architecture", False))
    if new_arch:
        kv = cfg.get("num_kv_heads") or cfg.get("n_head_kv") or heads
    elif cfg.get("multi_query", True):
        kv = 1
    else:
        kv = heads
    bias = bool(cfg.get("bias", False))
    ffn = cfg.get("ffn_hidden_size") or 4 * h  # Falcon's FFN is 4 x hidden
    linears = (
        Linear("self_attention.query_key_value", ("q", "k", "v"), "attention", h, (heads + 2 * kv) * d, bias),
        Linear("self_attention.dense", ("o",), "attention", heads * d, h, bias),
        Linear("mlp.dense_h_to_4h", ("up",), "mlp", h, ffn, bias),
        Linear("mlp.dense_4h_to_h", ("down",), "mlp", ffn, h, bias),
    )
    norms = 2 if (new_arch or not cfg.get("parallel_attn", True)) else 1
    return Architecture(
        name=name, family=mt, hidden=h, layers=_req(cfg, "num_hidden_layers", "n_layer", where=name),
        heads=heads, kv_heads=kv, head_dim=d, vocab=_req(cfg, "vocab_size", where=name),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", True)), linears=linears,
        norm_params_per_layer=norms * 2 * h, norms_per_layer=norms, final_norm_params=2 * h,
        mlp_gated=False, max_position=cfg.get("max_position_embeddings"),
    )


def _gpt_neox(cfg: dict, name: str, mt: str) -> Architecture:
    h = _req(cfg, "hidden_size", where=name)
    heads = _req(cfg, "num_attention_heads", where=name)
    i = cfg.get("intermediate_size") or 4 * h
    linears = (
        Linear("attention.query_key_value", ("q", "k", "v"), "attention", h, 3 * h, True),
        Linear("attention.dense", ("o",), "attention", h, h, True),
        Linear("mlp.dense_h_to_4h", ("up",), "mlp", h, i, True),
        Linear("mlp.dense_4h_to_h", ("down",), "mlp", i, h, True),
    )
    return Architecture(
        name=name, family=mt, hidden=h, layers=_req(cfg, "num_hidden_layers", where=name),
        heads=heads, kv_heads=heads, head_dim=h // heads, vocab=_req(cfg, "vocab_size", where=name),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)), linears=linears,
        norm_params_per_layer=4 * h, norms_per_layer=2, final_norm_params=2 * h, mlp_gated=False,
        max_position=cfg.get("max_position_embeddings"),
    )


def _gpt2(cfg: dict, name: str, mt: str) -> Architecture:
    h = _req(cfg, "n_embd", "hidden_size", where=name)
    heads = _req(cfg, "n_head", "num_attention_heads", where=name)
    i = cfg.get("n_inner") or 4 * h
    positions = _req(cfg, "n_positions", "max_position_embeddings", where=name)
    linears = (
        Linear("attn.c_attn", ("q", "k", "v"), "attention", h, 3 * h, True),
        Linear("attn.c_proj", ("o",), "attention", h, h, True),
        Linear("mlp.c_fc", ("up",), "mlp", h, i, True),
        Linear("mlp.c_proj", ("down",), "mlp", i, h, True),
    )
    return Architecture(
        name=name, family=mt, hidden=h, layers=_req(cfg, "n_layer", "num_hidden_layers", where=name),
        heads=heads, kv_heads=heads, head_dim=h // heads, vocab=_req(cfg, "vocab_size", where=name),
        tied_embeddings=True, linears=linears, norm_params_per_layer=4 * h, norms_per_layer=2,
        final_norm_params=2 * h, position_embedding_params=positions * h, mlp_gated=False,
        max_position=positions,
    )


def from_param_count(params: float, name: str | None = None) -> Architecture:
    """A Llama-shaped stand-in with about `params` parameters, for `--params 7B` alone.

    The shape follows the Llama-2/3 scaling pattern (head_dim 128, MLP 3.5x hidden, 128k vocab,
    GQA 8 past 16 heads); memory terms that scale with parameters are then exact, and the
    activation and logits terms carry the uncertainty the estimate states.
    """
    vocab = 128256
    best = None
    for hidden in range(1024, 32769, 128):
        heads = hidden // 128
        kv = 8 if heads >= 16 else heads
        inter = int(round(hidden * 3.5 / 256)) * 256
        per_layer = 2 * hidden * hidden + 2 * hidden * kv * 128 + 3 * hidden * inter + 2 * hidden
        base = 2 * vocab * hidden + hidden
        layers = round((params - base) / per_layer)
        if layers < 2:
            continue
        # prefer the width/depth ratio of Llama-class models (hidden / layers ~ 128)
        score = abs(hidden / layers - 128) / 128
        total = base + layers * per_layer
        if abs(total - params) / params > 0.1:
            continue
        if best is None or score < best[0]:
            best = (score, hidden, heads, kv, inter, layers)
    if best is None:
        raise ConfigError(f"--params {params:,.0f} is outside what ftplan can shape (100M to 2T parameters)")
    _, hidden, heads, kv, inter, layers = best
    cfg = dict(model_type="llama", hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
               num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab, head_dim=128)
    arch = _llama_like(cfg, name or f"{params / 1e9:.3g}B (shape assumed)", "llama")
    return Architecture(**{**arch.__dict__, "family": "assumed-llama",
                           "notes": ("shape assumed from the parameter count alone",)})
