"""A recipe -> the planner's answer for it, and the planner's setup written back into the recipe.

`ftplan plan RECIPE` plans the recipe as written: its micro-batch, accumulation, packing and
checkpointing are pinned, so the plan is the run. `ftplan plan RECIPE --write` lets the planner
choose them (fields named with --keep stay as written) and writes the cheapest plan's setup into
the recipe, so the next `ftplan plan` and the run carry exactly that plan.
"""

from __future__ import annotations

import math
from pathlib import Path

from ftplan.recipes.schema import Recipe
from ftplan.sizing.errors import FtplanError
from ftplan.sizing.prices import today

# Recipe hyperparameters the planner may choose, and the setup field each one is.
SEARCHABLE = {"batch_size": "micro_batch_size", "gradient_accumulation": "grad_accum", "packing": "packing",
              "gradient_checkpointing": "gradient_checkpointing", "optimizer": "optimizer"}


def recipe_plan(recipe: Recipe, local=None, prices=None, *, search: bool = False, keep: frozenset[str] = frozenset(),
                providers: set[str] | None = None):
    """The planner's answer for a recipe: as written, or (`search`) with the setup left to the planner."""
    from ftplan.sizing.planner import plan_for_data
    from ftplan.sizing.setup import TrainingSetup

    if recipe.method.objective == "merge":
        return None
    unknown = keep - set(SEARCHABLE)
    if unknown:
        raise FtplanError(f"--keep {', '.join(sorted(unknown))}: not a field the planner chooses; keep one of "
                          f"{', '.join(SEARCHABLE)}.")
    hp, m, hw = recipe.hyperparameters, recipe.method, recipe.hardware
    setup = TrainingSetup(
        adapter=m.adapter, lora_rank=m.lora.rank, lora_alpha=m.lora.effective_alpha, lora_targets=m.lora.targets,
        lora_dropout=m.lora.dropout,
        seq_len=hp.max_seq_length, micro_batch_size=hp.batch_size, grad_accum=hp.gradient_accumulation,
        gradient_checkpointing=hp.gradient_checkpointing, optimizer=hp.optimizer,
        precision="bf16" if hp.precision == "bf16" else hp.precision,
        distributed="none" if hw.distributed == "auto" else hw.distributed,
    )
    pinned = {SEARCHABLE[k] for k in (keep if search else SEARCHABLE)}
    if hw.distributed != "auto":
        pinned.add("distributed")
    gpus = {recipe.hardware.gpu} if recipe.hardware.gpu else None
    counts = {recipe.hardware.gpus} if recipe.hardware.gpus else None
    if gpus:
        from ftplan.sizing.gpus import get_gpu

        gpus = {get_gpu(g, "hardware.gpu").name for g in gpus}
    result = plan_for_data(
        recipe.data.path, recipe.model, setup=setup, method=m.objective, adapter=m.adapter, lora_rank=m.lora.rank,
        lora_alpha=m.lora.effective_alpha, epochs=max(1, math.ceil(hp.epochs)),
        packing=hp.packing if "packing" in pinned else None, pinned=frozenset(pinned - {"packing"}),
        verifier=",".join(m.rewards) or None, gpus=gpus, counts=counts, local=local, prices=prices,
        providers=providers, group_size=m.num_generations, completion_len=m.max_completion_length,
        split=recipe.data.split, precompute_ref=m.precompute_ref and m.objective in ("dpo", "kto"),
        teacher=m.teacher if m.objective == "distillation" and m.generate_with_teacher else None,
        model_option="model (in the recipe)",
    )
    from ftplan.recipes.data import check_format

    check_format(recipe, recipe.data.path, result.dataset.data_format)
    # The plan shows what the recipe will run, not what the playbook would have picked.
    choice = result.method
    choice.learning_rate, choice.scheduler, choice.warmup_ratio = hp.learning_rate, hp.lr_scheduler, hp.warmup_ratio
    choice.lora_targets = m.lora.targets
    choice.reasons = [f"{m.objective} with {m.adapter} and the hyperparameters as the recipe sets them"] + [
        r for r in choice.reasons if "->" in r]
    return result


def plan_fields(plan) -> dict[tuple[str, str], object]:
    """The recipe fields a GPU plan's setup sets (what `--write` and `init --from` put in the file)."""
    s = plan.setup
    fields = {("method", "adapter"): s["adapter"], ("hyperparameters", "batch_size"): s["micro_batch_size"],
              ("hyperparameters", "gradient_accumulation"): s["grad_accum"],
              ("hyperparameters", "packing"): s["packing"],
              ("hyperparameters", "gradient_checkpointing"): s["gradient_checkpointing"],
              ("hardware", "gpu"): plan.gpu, ("hardware", "gpus"): plan.count}
    if s.get("optimizer"):
        fields[("hyperparameters", "optimizer")] = s["optimizer"]
    if plan.count > 1:
        dist = s["distributed"]
        fields[("hardware", "distributed")] = dist if dist in ("ddp", "fsdp", "zero3") else "auto"
    return fields


def write_plan(path: str | Path, plan) -> str:
    """Write `plan`'s setup into the recipe at `path` (comments kept); returns a one-line summary."""
    import yaml

    from ftplan.recipes.rewrite import set_fields
    from ftplan.recipes.schema import parse_recipe

    path = Path(path)
    if plan is None or plan.setup is None:
        raise FtplanError(f"{path}: no GPU plan fits with margin, so there is no setup to write (see the notes above; "
                          "try --adapter qlora in the recipe, a shorter max_seq_length, or more GPUs).")
    text = set_fields(path.read_text(encoding="utf-8"), plan_fields(plan))
    parse_recipe(yaml.safe_load(text), str(path))  # what is written must still be a valid recipe
    path.write_text(text, encoding="utf-8")
    return (f"wrote {path}: {plan.label} {plan.count} x {plan.gpu}, {'; '.join(plan.notes[:1])}; "
            f"${plan.usd:,.2f}, {plan.hours:,.2f} h (planned {today().isoformat()})")
