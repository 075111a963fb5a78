"""Model, tokenizer and adapter for a recipe; Unsloth's fast path when it can run, plain PEFT otherwise.

`select_backend()` is pure so the choice is testable without a GPU; the training program logs
the choice and its reason as an event.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from ftplan.sizing.tokencount import CHATML  # the template TRL installs on models without one
from ftplan.sizing.trainers import UNSLOTH_OBJECTIVES  # one list for the planner and the trainer

from .schema import Recipe


@dataclass(frozen=True)
class Backend:
    name: str  # unsloth | peft | full
    reason: str


def select_backend(adapter: str, objective: str, *, cuda: bool, unsloth_installed: bool, gpus: int = 1,
                   lora_dropout: float = 0.0) -> Backend:
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
    if lora_dropout > 0:
        # Unsloth patches its fast LoRA kernels into a layer only at dropout 0; at any other value it falls back
        # to slow layers. ftplan keeps the recipe's dropout and says why Unsloth was not used.
        return Backend("peft", f"method.lora.dropout {lora_dropout:g}: Unsloth's fast LoRA kernels need dropout 0 "
                       "(set it to 0 to use them); plain PEFT keeps the recipe's dropout")
    return Backend("unsloth", "CUDA and unsloth present, dropout 0: Unsloth's fused LoRA kernels and offloaded "
                   "checkpointing")


def unsloth_patch_summary(model) -> str:
    """What Unsloth actually patched: its patch_peft_model swaps a layer's apply_qkv / apply_o / MLP forward for
    its fused LoRA functions (apply_lora_qkv, apply_lora_o, apply_lora_mlp_*) only where the layer qualifies."""
    counts = {"qkv": 0, "o": 0, "mlp": 0}
    layers = 0
    for module in model.modules():
        attn, mlp = getattr(module, "self_attn", None), getattr(module, "mlp", None)
        if attn is None or mlp is None:
            continue
        layers += 1
        for key, fn in (("qkv", getattr(attn, "apply_qkv", None)), ("o", getattr(attn, "apply_o", None)),
                        ("mlp", getattr(mlp, "forward", None))):
            if "lora" in getattr(fn, "__name__", ""):
                counts[key] += 1
    return (f"Unsloth patched {counts['qkv']} QKV, {counts['o']} O and {counts['mlp']} MLP of {layers} layers with "
            "its fused LoRA kernels" + ("" if min(counts.values()) == layers else "; the others run as plain PEFT"))


def model_architecture(model: str):
    """The planner's reading of the model's config.json (catalog id, local folder or Hub id), or None."""
    from ftplan.sizing.architecture import from_config
    from ftplan.sizing.catalog import resolve_model
    from ftplan.sizing.errors import FtplanError

    try:
        return resolve_model(model).arch
    except FtplanError:
        pass
    try:
        from transformers import AutoConfig

        return from_config(AutoConfig.from_pretrained(model).to_dict(), model)
    except Exception:  # noqa: BLE001 - no config to read, or a family the planner does not know
        return None


def peft_targets(targets: str, arch) -> tuple[str | list[str], list[str] | None]:
    """(target_modules, target_parameters) for PEFT: exactly the modules the planner sized.

    `all-linear` is handed to PEFT as is (the planner mirrors what PEFT's all-linear adapts);
    any other spec becomes the module paths the planner resolved for this model's family, with
    fused MoE expert tensors as target_parameters. Without an architecture the planner can read,
    only all-linear or the model's own module names can be honoured.
    """
    from ftplan.sizing.errors import FtplanError
    from ftplan.sizing.memory import is_all_linear, targeted_linears

    if is_all_linear(targets):
        return "all-linear", None
    if arch is None:
        if targets.strip().lower() in ("attention", "attn", "mlp"):
            raise FtplanError(f"method.lora.targets {targets!r}: ftplan cannot read this model's architecture to find "
                              "its attention or MLP modules; use all-linear or list the model's own module names.")
        return [t.strip() for t in targets.split(",") if t.strip()], None
    chosen = targeted_linears(arch, targets)
    modules = sorted(lin.name for lin in chosen if not lin.param)
    params = sorted(lin.name for lin in chosen if lin.param)
    return modules, params or None


def peft_config(recipe: Recipe, arch=None):
    from peft import LoraConfig

    lo = recipe.method.lora
    modules, params = peft_targets(lo.targets, arch)
    return LoraConfig(r=lo.rank, lora_alpha=lo.effective_alpha, lora_dropout=lo.dropout,
                      target_modules=modules, target_parameters=params, use_dora=recipe.method.adapter == "dora",
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
        from ftplan.sizing.memory import targeted_linears

        arch = model_architecture(recipe.model)
        # Unsloth takes leaf module names; its fast path covers the Llama-like families only.
        leaves = sorted({lin.leaf for lin in targeted_linears(arch, lo.targets) if not lin.param})
        model = FastLanguageModel.get_peft_model(
            model, r=lo.rank, lora_alpha=lo.effective_alpha, lora_dropout=lo.dropout, target_modules=leaves,
            use_gradient_checkpointing="unsloth" if recipe.hyperparameters.gradient_checkpointing else False)
        model.ftplan_patch_summary = unsloth_patch_summary(model)
        return model, None
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": dtype}
    if adapter == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True)
    model = AutoModelForCausalLM.from_pretrained(recipe.model, **kwargs)
    if adapter == "full":
        return model, None
    return model, peft_config(recipe, model_architecture(recipe.model))


def unsloth_installed() -> bool:
    return importlib.util.find_spec("unsloth") is not None
