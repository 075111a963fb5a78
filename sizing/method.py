"""Pick the training method the playbook would: objective, adapter and hyperparameters, with reasons.

Every choice carries a one-line reason so users can argue with it; `--method` and `--adapter`
override the choice, but a method the data cannot feed (DPO on prompt/completion pairs) is an
error, not a silent surprise at training time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .dataformat import BY_KEY, PREFERENCE, DataFormat
from .errors import InvalidValueError

OBJECTIVES = ("sft", "dpo", "simpo", "orpo", "kto", "grpo", "continued-pretraining", "distillation", "merge")
ADAPTER_CHOICES = ("lora", "qlora", "dora", "full")
# Objectives that need a frozen reference model's log-probs (a second forward of every sequence).
REFERENCE_FORWARD = ("dpo", "kto")
PAIRED = ("dpo", "simpo", "orpo")
_INSTRUCT = re.compile(r"(instruct|[-_]it\b|[-_]it[-_]|chat|[-_]sft|distill|r1)", re.I)


@dataclass
class MethodChoice:
    objective: str
    adapters: tuple[str, ...]  # candidates, cheapest-to-train first; the plan search picks the first that fits
    lora_rank: int
    lora_alpha: int
    lora_targets: str
    epochs: int
    learning_rate: float
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"objective": self.objective, "adapters": list(self.adapters), "lora_rank": self.lora_rank,
                "lora_alpha": self.lora_alpha, "lora_targets": self.lora_targets, "epochs": self.epochs,
                "learning_rate": self.learning_rate, "scheduler": self.scheduler, "warmup_ratio": self.warmup_ratio,
                "reasons": list(self.reasons), "warnings": list(self.warnings)}


def _objective_for(fmt: DataFormat, verifier: str | None) -> tuple[str, str]:
    if fmt.key in PREFERENCE:
        return "dpo", ("preference pairs -> DPO, the default preference objective (SimPO and ORPO need no reference "
                       "model: --method simpo|orpo)")
    if fmt.key == "unpaired_preference":
        return "kto", "single completions labelled good/bad -> KTO (it needs no pairs)"
    if fmt.key == "prompt_only":
        why = f"prompts only, verifier '{verifier}' -> GRPO" if verifier else "prompts only -> GRPO (online RL)"
        return "grpo", why
    if fmt.key == "text":
        return "continued-pretraining", "raw text -> continued pretraining (next-token loss on every token)"
    return "sft", f"{fmt.description} -> supervised fine-tuning (loss on the completions)"


def recommend(
    fmt: DataFormat,
    *,
    examples: int,
    tokens: int,
    model_id: str,
    params: int,
    method: str | None = None,
    adapter: str | None = None,
    verifier: str | None = None,
    lora_rank: int | None = None,
    epochs: int | None = None,
) -> MethodChoice:
    """The playbook's choice for this data and model (DESIGN.md, "The planner")."""
    reasons: list[str] = []
    warnings: list[str] = []
    objective, why = _objective_for(fmt, verifier)
    if method:
        method = method.lower()
        if method not in OBJECTIVES:
            raise InvalidValueError(f"--method {method!r} is not known; choose one of {', '.join(OBJECTIVES)}.")
        if method == "merge":
            raise InvalidValueError("--method merge combines trained adapters and needs no data file: use "
                                    "`ftplan init merge` for a recipe (merging costs minutes on a CPU).")
        accepted = [f.key for f in BY_KEY.values() if method in f.objectives]
        if fmt.key not in accepted:
            need = "; ".join(BY_KEY[k].description for k in accepted)
            raise InvalidValueError(
                f"--method {method} cannot train on {fmt.description}: it needs {need}. Convert the data or drop "
                f"--method to get {objective}."
            )
        if method != objective:
            why = f"--method {method} (the data alone suggests {objective})"
        objective = method
    reasons.append(why)
    if objective == "grpo" and not verifier:
        warnings.append("GRPO learns from a reward: name the verifier or reward function with --verifier "
                        "(e.g. mymodule:reward), or the run has nothing to optimise.")
    if objective == "continued-pretraining" and tokens < 1_000_000_000:
        warnings.append(f"Continued pretraining on {tokens / 1e6:,.1f}M tokens is small (under ~1B tokens it rarely "
                        "moves a model's knowledge); SFT on examples may serve better.")

    instruct = bool(_INSTRUCT.search(model_id))
    if objective in ("dpo", "simpo", "orpo", "kto", "grpo") and not instruct and objective != "orpo":
        warnings.append(f"{model_id} looks like a base model: {objective.upper()} usually starts from an instruct or "
                        "SFT model (ORPO is the one preference method made for a base model).")
    if objective == "continued-pretraining" and instruct:
        warnings.append(f"{model_id} looks like an instruct model: continued pretraining on raw text erodes its chat "
                        "behaviour; start from the base model and instruct-tune after.")

    rank = 16
    if adapter:
        adapter = adapter.lower()
        if adapter not in ADAPTER_CHOICES:
            raise InvalidValueError(f"--adapter {adapter!r} is not known; choose one of {', '.join(ADAPTER_CHOICES)}.")
        adapters: tuple[str, ...] = (adapter,)
        reasons.append(f"--adapter {adapter}")
        if adapter == "full" and examples < 10_000:
            warnings.append(f"Full fine-tuning on {examples:,} examples risks forgetting and overfitting; the playbook "
                            "keeps full SFT for more than 10k examples. LoRA usually matches it here.")
    else:
        adapters = ("lora", "qlora")
        reasons.append("LoRA (alpha = 2 x rank) on all linear layers; QLoRA (4-bit base) only where 16-bit LoRA does "
                       "not fit the GPU; DoRA (--adapter dora) is the drop-in upgrade for a little more quality")
    if examples >= 1000:
        reasons.append(f"rank 16 for {examples:,} examples (the playbook default)")
    else:
        rank = 8
        reasons.append(f"{examples:,} examples (< 1k): rank 8 is enough; with this little data prompting or RAG may "
                       "do as well, so try them first")
    if lora_rank:
        rank = lora_rank
    if epochs is None:
        epochs = 1 if objective == "continued-pretraining" or examples >= 100_000 else 2 if examples >= 10_000 else 3
        reasons.append(f"{epochs} epoch{'s' if epochs > 1 else ''} for {examples:,} examples (playbook: 1-3, fewer "
                       "as data grows)")
    full = adapters[0] == "full"
    if objective in ("sft", "continued-pretraining", "distillation"):
        lr = 1e-5 if full else (1e-4 if params > 30e9 else 2e-4)
    elif objective == "grpo":
        lr = 1e-6 if full else 1e-5
    else:
        lr = 5e-7 if full else 5e-6
    reasons.append(f"learning rate {lr:g}, cosine schedule, 3 % warmup")
    return MethodChoice(objective, adapters, rank, 2 * rank, "all-linear", epochs, lr, reasons=reasons,
                        warnings=warnings)
