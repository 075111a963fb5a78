"""The playbook's sizing grid: data size x model size -> method, GPUs and indicative cost.

Every cell is a real plan search (the same one `ftplan estimate DATA` runs) on a synthetic
conversational data set: `TOKENS_PER_EXAMPLE` tokens per example, packed. The cell shows the
cheapest plan that finishes within `MAX_HOURS` (a day of wall time, so big jobs spread over more
GPUs instead of running for months), or the fastest plan when none does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import resolve_model
from .dataformat import BY_KEY
from .method import recommend
from .plan import Plan, Workload, fastest, search
from .prices import PriceBook, load_prices
from .setup import TrainingSetup

EXAMPLES = (1_000, 10_000, 100_000, 1_000_000)
MODELS = (("1B", "llama-3.2-1b"), ("8B", "llama-3.1-8b"), ("70B", "llama-3.1-70b"), ("405B", "llama-3.1-405b"))
TOKENS_PER_EXAMPLE = 512  # assumption: a typical instruction example (prompt + answer), stated in the output
MAX_HOURS = 24.0
GPU_PROVIDERS = {"modal", "lambda", "runpod", "runpod-community", "aws"}


@dataclass
class Cell:
    examples: int
    model_label: str
    model_id: str
    objective: str
    adapter: str
    epochs: int
    plan: Plan | None
    within_limit: bool

    def to_dict(self) -> dict:
        p = self.plan
        return {"examples": self.examples, "model": self.model_label, "model_id": self.model_id,
                "method": f"{self.objective} {self.adapter}", "epochs": self.epochs,
                "gpu": p.gpu if p else None, "count": p.count if p else None,
                "provider": p.provider if p else None, "hours": round(p.hours, 2) if p and p.hours else None,
                "usd": round(p.usd, 2) if p else None, "within_limit": self.within_limit}


def sizing_matrix(book: PriceBook | None = None, seq_len: int = 2048) -> list[Cell]:
    book = book or load_prices()
    fmt = BY_KEY["messages"]
    cells = []
    for label, model_id in MODELS:
        arch = resolve_model(model_id).arch
        for n in EXAMPLES:
            tokens = n * TOKENS_PER_EXAMPLE
            choice = recommend(fmt, examples=n, tokens=tokens, model_id=model_id, params=arch.total_params)
            work = Workload(tokens, tokens, choice.epochs, choice.objective, seq_len)
            base = TrainingSetup(seq_len=seq_len, lora_rank=choice.lora_rank, lora_alpha=choice.lora_alpha)
            plans, _ = search(arch, work, choice, base, book, providers=GPU_PROVIDERS)
            within = [p for p in plans if p.hours is not None and p.hours <= MAX_HOURS]
            plan = within[0] if within else fastest(plans)
            cells.append(Cell(n, label, model_id, choice.objective, plan.adapter if plan else choice.adapters[0],
                              choice.epochs, plan, bool(within)))
    return cells
