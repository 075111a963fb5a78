"""Model, tokenizer and adapter for a recipe; Unsloth's fast path when it can run, plain PEFT otherwise.

`select_backend()` is pure so the choice is testable without a GPU; the training program logs
the choice and its reason as an event.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from ftplan.sizing.tokencount import CHATML  # the template TRL installs on models without one

from .schema import Recipe

GENERIC_TARGETS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj", "up": "up_proj",
                   "down": "down_proj"}
GROUPS = {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"], "mlp": ["gate_proj", "up_proj", "down_proj"]}
UNSLOTH_OBJECTIVES = ("sft", "continued-pretraining", "distillation", "dpo", "orpo", "kto", "grpo")


@dataclass(frozen=True)
class Backend:
    name: str  # unsloth | peft | full
    reason: str


def select_backend(adapter: str, objective: str, *, cuda: bool, unsloth_installed: bool, gpus: int = 1) -> Backend:
    if adapter == "full":
        return Backend("full", "full fine-tuning: every weight trains, no adapter")
    if not unsloth_installed:
        return Backend("peft", "unsloth is not installed (pip install 'ftplan[gpu]' on a CUDA machine): plain PEFT")
    if not cuda:
        return Backend("peft", "no CUDA device: Unsloth needs one, plain PEFT runs on CPU")
    if gpus > 1:
        return Backend("peft", f"{gpus} GPUs: Unsloth's open-source build trains on one GPU, PEFT + accelerate here")
    if adapter == "dora":
        return Backend("peft", "DoRA: Unsloth's fast path covers LoRA and QLoRA; PEFT handles DoRA")
    if objective not in UNSLOTH_OBJECTIVES:
        return Backend("peft", f"{objective}: not on Unsloth's patched trainers; plain PEFT")
    return Backend("unsloth", "CUDA and unsloth present: Unsloth's fused kernels and offloaded checkpointing")


def lora_targets(spec: str) -> str | list[str]:
    spec = spec.strip()
    if spec == "all-linear":
        return "all-linear"
    if spec in GROUPS:
        return GROUPS[spec]
    return [GENERIC_TARGETS.get(name.strip(), name.strip()) for name in spec.split(",") if name.strip()]


def peft_config(recipe: Recipe):
    from peft import LoraConfig

    lo = recipe.method.lora
    return LoraConfig(r=lo.rank, lora_alpha=lo.effective_alpha, lora_dropout=lo.dropout,
                      target_modules=lora_targets(lo.targets), use_dora=recipe.method.adapter == "dora",
                      task_type="CAUSAL_LM")


def torch_dtype(precision: str):
    import torch

    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    return torch.float32


def load_tokenizer(model_id: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_id)
    notes = []
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
        notes.append("tokenizer had no pad token: using the EOS token")
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML
        notes.append("tokenizer had no chat template: ChatML installed (as trl.setup_chat_format does)")
    return tok, notes


def load_model(recipe: Recipe, backend: Backend, cuda: bool):
    """(model, peft_config or None): the model ready for the trainer, the adapter config for TRL to apply."""
    adapter = recipe.method.adapter
    dtype = torch_dtype(recipe.hyperparameters.precision)
    if backend.name == "unsloth":  # pragma: no cover - needs CUDA and unsloth
        from unsloth import FastLanguageModel

        model, _ = FastLanguageModel.from_pretrained(recipe.model, max_seq_length=recipe.hyperparameters.max_seq_length,
                                                     load_in_4bit=adapter == "qlora", dtype=None)
        lo = recipe.method.lora
        targets = lora_targets(lo.targets)
        model = FastLanguageModel.get_peft_model(
            model, r=lo.rank, lora_alpha=lo.effective_alpha, lora_dropout=lo.dropout,
            target_modules=GROUPS["attention"] + GROUPS["mlp"] if targets == "all-linear" else targets,
            use_gradient_checkpointing="unsloth" if recipe.hyperparameters.gradient_checkpointing else False)
        return model, None
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": dtype}
    if adapter == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True)
    model = AutoModelForCausalLM.from_pretrained(recipe.model, **kwargs)
    return model, (None if adapter == "full" else peft_config(recipe))


def unsloth_installed() -> bool:
    return importlib.util.find_spec("unsloth") is not None
