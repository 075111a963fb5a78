"""The program that runs a training step, as the planner models it: its memory knobs and speed class.

The same recipe costs different memory and time under different programs: TRL + PEFT keeps LoRA
weights in fp32 and upcasts the logits (transformers' ForCausalLMLoss), launching eager kernels;
Unsloth fuses LoRA into its Triton kernels, computes the loss without materialising the logits
(Cut Cross Entropy) and offloads checkpointed activations; a torch.compile'd native trainer
(torchtune-like) keeps bf16 adapters and a chunked loss. The planner defaults to what ftplan's own
program runs (`default_trainer`), so the plan describes the run it will launch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .setup import TrainingSetup

# Objectives ftplan runs on Unsloth's patched trainers (recipes/backend.py selects the backend by it).
UNSLOTH_OBJECTIVES = ("sft", "continued-pretraining", "distillation", "dpo", "orpo", "kto", "grpo")


@dataclass(frozen=True)
class Trainer:
    name: str
    label: str
    loss: str
    adapter_dtype: str
    fused_kernels: bool
    offloads_checkpoints: bool  # checkpointed layer inputs kept in CPU memory


TRAINERS = {
    "trl": Trainer("trl", "TRL + PEFT (eager), ftplan's own program", "standard", "fp32", False, False),
    "unsloth": Trainer("unsloth", "Unsloth (fused LoRA kernels, Cut Cross Entropy, offloaded checkpoints)", "fused",
                       "bf16", True, True),
    "compiled": Trainer("compiled", "a torch.compile'd native trainer (torchtune-like: bf16 adapters, chunked loss)",
                        "chunked", "bf16", True, False),
    "eager": Trainer("eager", "a native PyTorch trainer without compile (torchtune/LitGPT-like)", "chunked", "bf16",
                     False, False),
}


def accelerate_fsdp_upcast(setup: TrainingSetup) -> TrainingSetup:
    """Full fine-tuning under accelerate's FSDP with bf16 mixed precision keeps fp32 master weights.

    accelerate upcasts every trainable low-precision parameter to fp32 before sharding ("Upcasted low
    precision parameters ... because mixed precision turned on in FSDP", FSDP1 since accelerate 0.30;
    utils/fsdp_utils.py fsdp2_prepare_model for FSDP2, which ftplan's launcher uses), so weights, gradients
    and Adam states are fp32 shards: the memory model's "mixed" precision.
    """
    if setup.adapter == "full" and setup.precision == "bf16" and setup.effective_distributed == "fsdp":
        return replace(setup, precision="mixed")
    return setup


def apply_trainer(setup: TrainingSetup, trainer: str, *, keep: frozenset[str] = frozenset()) -> TrainingSetup:
    """`setup` as `trainer` runs it; fields named in `keep` were set by the user and stay as they are."""
    t = TRAINERS[trainer]
    changes = {"trainer": t.name, "loss": t.loss, "adapter_dtype": t.adapter_dtype, "fused_kernels": t.fused_kernels,
               "activation_offload": t.offloads_checkpoints and setup.gradient_checkpointing}
    setup = replace(setup, **{k: v for k, v in changes.items() if k not in keep})
    return accelerate_fsdp_upcast(setup) if t.name == "trl" and "precision" not in keep else setup


def default_trainer(setup: TrainingSetup, objective: str = "sft", *, unsloth_available: bool = True) -> str:
    """What ftplan's training program runs for this setup (recipes/backend.select_backend's rule).

    Unsloth on one CUDA GPU for LoRA/QLoRA at dropout 0 with an objective it patches, when its extra is
    installed (on Modal the image installs it); TRL + PEFT otherwise.
    """
    if (unsloth_available and setup.gpus == 1 and setup.adapter in ("lora", "qlora") and setup.lora_dropout == 0
            and objective in UNSLOTH_OBJECTIVES):
        return "unsloth"
    return "trl"
