"""From a data file and a model to a ranked, priced plan: `plan_for_data()`.

Data analysis -> method -> workload -> hardware search -> limits. The returned `PlanResult`
is what `ftplan estimate DATA` prints and what its `--json` emits (schema in the README).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from .catalog import resolve_model
from .dataset import DatasetStats, analyze
from .errors import InvalidValueError
from .method import PAIRED, MethodChoice, recommend
from .plan import LocalBox, Plan, Workload, apply_limits, fastest, openai_status, pareto, search
from .prices import PriceBook, load_prices
from .setup import TrainingSetup
from .tokencount import find_tokenizer


@dataclass
class PlanResult:
    model_id: str
    model_params: int
    dataset: DatasetStats
    method: MethodChoice
    workload: Workload
    plans: list[Plan]  # within the limits, cheapest first
    all_plans: list[Plan]
    suggestion: str | None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stale_prices: list[str] = field(default_factory=list)

    @property
    def cheapest(self) -> Plan | None:
        return self.plans[0] if self.plans else None

    @property
    def fastest(self) -> Plan | None:
        return fastest(self.plans)

    @property
    def local(self) -> Plan | None:
        return next((p for p in self.all_plans if p.kind == "local"), None)

    def best_per_provider(self) -> list[Plan]:
        seen: dict[str, Plan] = {}
        for p in self.plans:
            seen.setdefault(p.provider, p)
        return list(seen.values())

    def to_dict(self) -> dict:
        def d(p: Plan | None):
            return p.to_dict() if p else None

        return {
            "model": {"id": self.model_id, "params": self.model_params},
            "dataset": self.dataset.to_dict(),
            "method": self.method.to_dict(),
            "workload": {"tokens_per_epoch": self.workload.tokens_per_epoch,
                         "billable_tokens_per_epoch": self.workload.billable_tokens_per_epoch,
                         "epochs": self.workload.epochs, "total_tokens": self.workload.total_tokens,
                         "objective": self.workload.objective},
            "cheapest": d(self.cheapest),
            "fastest": d(self.fastest),
            "local": d(self.local),
            "per_provider": [p.to_dict() for p in self.best_per_provider()],
            "pareto": [p.to_dict() for p in pareto(self.plans)],
            "plans": [p.to_dict() for p in self.plans],
            "plans_considered": len(self.all_plans),
            "suggestion": self.suggestion,
            "notes": self.notes,
            "warnings": self.warnings,
            "stale_prices": self.stale_prices,
        }


def make_workload(stats: DatasetStats, method: MethodChoice, *, packing: bool, group_size: int = 8,
                  completion_len: int = 256) -> Workload:
    if method.objective == "grpo":
        prompts = stats.examples
        per_prompt = group_size * completion_len
        tokens = stats.tokens_kept * group_size + prompts * per_prompt
        mean = stats.lengths["mean"] + completion_len
        return Workload(tokens, tokens, method.epochs, "grpo", mean, prompts, group_size, completion_len)
    tokens = stats.tokens_per_epoch(packing)
    per_micro = stats.seq_len if packing else max(1, round(stats.padded_tokens / max(1, stats.sequences)))
    longest = min(stats.seq_len, math.ceil(stats.lengths.get("max", stats.seq_len) * (1 + stats.uncertainty)))
    return Workload(tokens, stats.tokens_kept, method.epochs, method.objective, per_micro,
                    padded_by_batch=dict(stats.padded_by_batch), sequences=stats.sequences, seq_len=stats.seq_len,
                    longest=max(1, longest), mean_length=stats.tokens_kept / max(1, stats.sequences))


def plan_for_data(
    data: str | Path,
    model: str,
    *,
    setup: TrainingSetup | None = None,
    method: str | None = None,
    adapter: str | None = None,
    lora_rank: int | None = None,
    lora_alpha: int | None = None,
    epochs: int | None = None,
    verifier: str | None = None,
    tokenizer: str | None = None,
    packing: bool | None = None,
    pinned: frozenset[str] = frozenset(),
    gpus: set[str] | None = None,
    counts: set[int] | None = None,
    providers: set[str] | None = None,
    local: LocalBox | None = None,
    prices: PriceBook | None = None,
    region: str = "none",
    max_cost: float | None = None,
    max_hours: float | None = None,
    group_size: int = 8,
    completion_len: int = 256,
    split: str = "train",
    count_all: bool = False,
    teacher: str | None = None,
    precompute_ref: bool = False,
    speed_corrections: dict[str, tuple[float, int]] | None = None,
    today: date | None = None,
    model_option: str = "--model",
) -> PlanResult:
    base = (setup or TrainingSetup()).validate()
    if epochs is not None and not 1 <= epochs <= 100:
        raise InvalidValueError(f"--epochs {epochs} is impossible: give 1 to 100.")
    for name, value in (("--max-cost", max_cost), ("--max-hours", max_hours)):
        if value is not None and value <= 0:
            raise InvalidValueError(f"{name} {value:g} is impossible: give a positive number.")
    src = resolve_model(model, option=model_option)
    arch = src.arch
    tok = find_tokenizer(model, src.model_id, tokenizer)
    stats = analyze(data, seq_len=base.seq_len, micro_batch_size=base.micro_batch_size, max_context=arch.max_position,
                    tokenizer_json=tok, vocab_size=arch.vocab, split=split, count_all=count_all)
    choice = recommend(stats.data_format, examples=stats.examples, tokens=stats.tokens_kept, model_id=src.model_id,
                       params=arch.total_params, method=method, adapter=adapter, verifier=verifier,
                       lora_rank=lora_rank, epochs=epochs)
    base = replace(base, lora_rank=choice.lora_rank, lora_alpha=lora_alpha or choice.lora_alpha)
    # Padding goes to the longest sequence in each micro-batch, so no unpacked batch is longer than the data's
    # longest (truncated) sequence: the setup search sizes unpacked memory for that (Workload.longest).
    work = make_workload(stats, choice, packing=bool(packing), group_size=group_size, completion_len=completion_len)
    if precompute_ref:
        if choice.objective not in ("dpo", "kto"):
            raise InvalidValueError(f"--precompute-ref is for DPO and KTO (this plan is {choice.objective}).")
        work = replace(work, precomputed_reference=True)
    if teacher:
        if choice.objective != "distillation":
            raise InvalidValueError(f"--teacher is for --method distillation (this plan is {choice.objective}).")
        work = replace(work, teacher_params=resolve_model(teacher, option="--teacher").arch.total_params)
    book = prices or load_prices()
    all_plans, notes = search(arch, work, choice, base, book, gpus=gpus, counts=counts, providers=providers,
                              local=local, region=region, today=today, speed_corrections=speed_corrections,
                              pinned=pinned | ({"packing"} if packing is not None else set()), packing=packing,
                              model_id=src.model_id)
    kept, suggestion = apply_limits(all_plans, max_cost, max_hours)
    warnings = list(choice.warnings) + stats.warning_lines()
    if packing is False and stats.padding_efficiency < 0.8 and choice.objective not in PAIRED + ("grpo",):
        warnings.append(f"Padding wastes {100 * (1 - stats.padding_efficiency):.0f} % of compute at micro-batch "
                        f"{base.micro_batch_size}; --packing trains on {stats.tokens_kept:,} instead of "
                        f"{stats.padded_tokens:,} tokens per epoch.")
    if local is None:
        notes.append("No local GPU given or found by nvidia-smi: --local RTX-4090:2 adds your own box to the plans.")
    if not all_plans:
        notes.append("Nothing fits any GPU searched: try --adapter qlora, a shorter --seq-len, or more GPUs.")
    if not (providers and "openai" in providers):
        ok, sentence = openai_status(book, today)
        notes.append(sentence + (" OpenAI fine-tunes only its own models; --provider openai prices them as "
                                 "alternatives." if ok else ""))
    if choice.objective == "distillation" and not teacher:
        notes.append("Distillation is priced as SFT on teacher outputs already in the data; --teacher MODEL adds "
                     "the teacher's forward pass (on-the-fly logits) to time and memory.")
    stale = [f"{r.provider} {r.gpu}: as of {r.as_of}" for r in book.stale(today)]
    return PlanResult(src.model_id, arch.total_params, stats, choice, work, kept, all_plans, suggestion, notes,
                      warnings, stale)
