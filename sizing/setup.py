"""What is being trained and how: the inputs of the memory and speed models.

Defaults are the playbook's (DESIGN.md): LoRA r=16, alpha=32, all-linear, bf16, flash
attention, gradient checkpointing on, seq 2048, micro-batch 1. `validate()` rejects impossible
values with a message naming the option, so the CLI can exit 2 before any arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import InvalidValueError

ADAPTERS = ("lora", "qlora", "dora", "full")
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd")
PRECISIONS = ("bf16", "fp16", "fp32", "mixed")
ATTENTIONS = ("flash", "sdpa", "eager")
DISTRIBUTED = ("none", "ddp", "fsdp", "zero2", "zero3")
LOSSES = ("standard", "chunked", "fused", "liger")
# The program that runs the step (see sizing/trainers.py): it sets the memory knobs' defaults and the
# speed model's per-kernel costs. "trl" is ftplan's own program (TRL + PEFT, eager).
TRAINERS = ("trl", "unsloth", "compiled", "eager")
ADAPTER_DTYPES = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainingSetup:
    adapter: str = "lora"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_targets: str = "all-linear"
    seq_len: int = 2048
    micro_batch_size: int = 1
    grad_accum: int = 1
    gradient_checkpointing: bool = True
    optimizer: str = "adamw"
    precision: str = "bf16"
    attention: str = "flash"
    gpus: int = 1
    distributed: str = "none"
    cpu_offload: bool = False
    # Nodes the GPUs sit on (0: as a provider packs them, 8 to a node). Collectives across nodes run at
    # the inter-node link's speed, not NVLink's.
    nodes: int = 0
    trainer: str = "trl"
    # Embeddings and lm_head trained in full beside the adapters (PEFT `modules_to_save`, Qwen's
    # "LoRA (emb)", new tokens added to the vocabulary): each gets a trainable copy, its gradient
    # and optimizer states.
    train_embeddings: bool = False
    # Knobs real trainers expose that change memory a lot (see README, "Estimator inputs"):
    # "chunked": 16-bit logits, fp32 one chunk at a time (torchtune, LitGPT); "fused": logits never
    # materialised whole (Unsloth / Cut Cross Entropy, Liger); "standard": HF's fp32 upcast.
    loss: str = "standard"
    adapter_dtype: str = "fp32"  # PEFT keeps adapter weights in fp32 unless told otherwise
    optimizer_in_backward: bool = False  # step each parameter as its gradient arrives (torchtune)
    activation_offload: bool = False  # saved activations kept in CPU memory (Unsloth, torchtune)
    double_quant: bool = True  # QLoRA: quantise the quantisation constants too (bnb default in recipes)
    # LoRA dropout (ftplan's recipes default to 0, as PEFT and TRL do): with p > 0 each adapted linear
    # keeps its own dropout output and mask for the backward pass instead of sharing its input.
    lora_dropout: float = 0.0
    # bitsandbytes before 0.43.2 (July 2024, PR #1270) saved every 4-bit linear's input for a weight
    # gradient it never computes; ftplan's `train` extra needs a later version.
    quant_saves_inputs: bool = False
    # torch.compile (or Unsloth's Triton kernels) fuses norms and the SwiGLU, which then keep only
    # their 16-bit inputs for the backward pass instead of fp32 copies and intermediate outputs.
    fused_kernels: bool = False
    # PEFT's prepare_model_for_kbit_training (run by TRL's SFTTrainer before TRL 1.0, and by qlora.py)
    # casts every weight that is not 4-bit to fp32: embeddings, norms and lm_head. The residual
    # stream, the MLP and the logits then run in fp32; attention kernels still take 16-bit inputs.
    kbit_upcast: bool = False
    # Trainers that build their own model class instead of transformers' (LitGPT) keep `lm_head` as a
    # separate nn.Linear even when the checkpoint ties it to the embedding, and their bitsandbytes
    # plugin quantises every nn.Linear, lm_head included. transformers ties and leaves lm_head 16-bit.
    untie_embeddings: bool = False
    quantize_lm_head: bool = False

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.seq_len * self.micro_batch_size

    @property
    def activation_bytes(self) -> int:
        """Bytes per element of saved activations and logits (16-bit unless pure fp32)."""
        return 4 if self.precision == "fp32" else 2

    @property
    def is_adapter(self) -> bool:
        return self.adapter != "full"

    @property
    def node_count(self) -> int:
        return self.nodes or -(-self.gpus // 8)

    @property
    def gpus_per_node(self) -> int:
        return -(-self.gpus // self.node_count)

    @property
    def effective_distributed(self) -> str:
        if self.gpus == 1:
            # DeepSpeed on one GPU still changes the bytes per parameter (fp32 master weights)
            return self.distributed if self.distributed in ("zero2", "zero3") else "none"
        if self.distributed != "none":
            return self.distributed
        return "ddp" if self.is_adapter else "fsdp"

    def with_(self, **changes) -> TrainingSetup:
        return replace(self, **changes)

    def validate(self) -> TrainingSetup:
        def choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
            if value not in allowed:
                raise InvalidValueError(
                    f"--{field.replace('_', '-')} '{value}' is not one of: {', '.join(allowed)}."
                )

        choice("adapter", self.adapter, ADAPTERS)
        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("precision", self.precision, PRECISIONS)
        choice("attention", self.attention, ATTENTIONS)
        choice("distributed", self.distributed, DISTRIBUTED)
        choice("loss", self.loss, LOSSES)
        choice("adapter_dtype", self.adapter_dtype, ADAPTER_DTYPES)
        choice("trainer", self.trainer, TRAINERS)
        limits = {
            "seq_len": (self.seq_len, 1, 4_194_304),
            "batch_size": (self.micro_batch_size, 1, 65_536),
            "grad_accum": (self.grad_accum, 1, 1_000_000),
            "gpus": (self.gpus, 1, 4096),
            "nodes": (self.nodes, 0, self.gpus),
        }
        if self.is_adapter:
            limits["lora_rank"] = (self.lora_rank, 1, 65_536)
            limits["lora_alpha"] = (self.lora_alpha, 1, 1_000_000)
        if self.is_adapter and not (isinstance(self.lora_dropout, (int, float)) and 0 <= self.lora_dropout < 1):
            raise InvalidValueError(
                f"--lora-dropout {self.lora_dropout} is impossible: it must be a probability from 0 up to "
                "(not including) 1."
            )
        for name, (value, low, high) in limits.items():
            if not isinstance(value, int) or not low <= value <= high:
                raise InvalidValueError(
                    f"--{name.replace('_', '-')} {value} is impossible: it must be a whole number "
                    f"from {low} to {high:,}."
                )
        return self
