"""What ftplan's own training program would refuse mid-run, found before a job exists (no torch import).

Providers that run the program (local, Modal) call `problems()` in `check_ready`, and the program
calls it again before loading a model, so a recipe that cannot train fails in a second with the
field to change, not after the weights were downloaded.
"""

from __future__ import annotations

from ftplan.sizing.errors import FtplanError

from .schema import Recipe


def architecture(recipe: Recipe):
    """The planner's reading of the recipe's model, or None when it cannot read it (no network here)."""
    from ftplan.sizing.catalog import resolve_model

    try:
        return resolve_model(recipe.model).arch
    except FtplanError:
        return None


def problems(recipe: Recipe, arch=None) -> list[str]:
    m = recipe.method
    out: list[str] = []
    if m.adapter in ("lora", "qlora", "dora") and m.objective != "merge":
        arch = arch if arch is not None else architecture(recipe)
        if arch is not None:
            from ftplan.sizing.memory import targeted_linears

            try:
                fused = [lin.name for lin in targeted_linears(arch, m.lora.targets) if lin.param]
            except FtplanError as exc:
                out.append(f"method.lora.targets: {exc}")
                fused = []
            if fused and m.lora.dropout > 0:
                out.append(f"method.lora.dropout {m.lora.dropout:g}: PEFT adapts this model's fused MoE tensors "
                           f"({', '.join(fused)}) with lora.ParamWrapper, which does not work with dropout; set "
                           "method.lora.dropout to 0, or targets to attention")
            if fused and m.adapter == "dora":
                out.append("method.adapter dora: PEFT's lora.ParamWrapper (this model's fused MoE tensors) does not "
                           "work with DoRA; use lora, or targets: attention")
    return out


def check(recipe: Recipe, arch=None) -> None:
    found = problems(recipe, arch)
    if found:
        raise FtplanError("the recipe cannot train as written: " + "; ".join(found) + ". Nothing was started.")
