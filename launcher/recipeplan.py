"""A recipe -> the planner's answer for it: the same plan `ftplan estimate DATA` gives, with the recipe's settings."""

from __future__ import annotations

import math

from ftplan.recipes.schema import Recipe


def recipe_plan(recipe: Recipe, local=None, prices=None):
    """The planner's answer for a recipe (same as `ftplan estimate DATA` with the recipe's settings)."""
    from ftplan.sizing.planner import plan_for_data
    from ftplan.sizing.setup import TrainingSetup

    if recipe.method.objective == "merge":
        return None
    hp, m = recipe.hyperparameters, recipe.method
    setup = TrainingSetup(
        adapter=m.adapter, lora_rank=m.lora.rank, lora_alpha=m.lora.effective_alpha, lora_targets=m.lora.targets,
        lora_dropout=m.lora.dropout,
        seq_len=hp.max_seq_length, micro_batch_size=hp.batch_size, grad_accum=hp.gradient_accumulation,
        gradient_checkpointing=hp.gradient_checkpointing, optimizer=hp.optimizer,
        precision="bf16" if hp.precision == "bf16" else hp.precision,
    )
    gpus = {recipe.hardware.gpu} if recipe.hardware.gpu else None
    counts = {recipe.hardware.gpus} if recipe.hardware.gpus else None
    if gpus:
        from ftplan.sizing.gpus import get_gpu

        gpus = {get_gpu(g).name for g in gpus}
    result = plan_for_data(
        recipe.data.path, recipe.model, setup=setup, method=m.objective, adapter=m.adapter, lora_rank=m.lora.rank,
        lora_alpha=m.lora.effective_alpha, epochs=max(1, math.ceil(hp.epochs)), packing=hp.packing,
        verifier=",".join(m.rewards) or None, gpus=gpus, counts=counts, local=local, prices=prices,
        group_size=m.num_generations, completion_len=m.max_completion_length, split=recipe.data.split,
        precompute_ref=m.precompute_ref and m.objective in ("dpo", "kto"),
        teacher=m.teacher if m.objective == "distillation" and m.generate_with_teacher else None,
    )
    # The plan shows what the recipe will run, not what the playbook would have picked.
    choice = result.method
    choice.learning_rate, choice.scheduler, choice.warmup_ratio = hp.learning_rate, hp.lr_scheduler, hp.warmup_ratio
    choice.lora_targets = m.lora.targets
    choice.reasons = [f"{m.objective} with {m.adapter} and the hyperparameters as the recipe sets them"] + [
        r for r in choice.reasons if "->" in r]
    return result
