"""What ftplan's own training program would refuse mid-run, found before a job exists (no torch import).

Providers that run the program (local, Modal) call `problems()` in `check_ready`, and the program
calls it again before loading a model, so a recipe that cannot train fails in a second with the
field to change, not after the weights were downloaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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


_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def check_model_path(value: str, field: str) -> None:
    """A model that can only be a local folder must be one, with a config.json.

    Hub ids are `name` or `owner/name`; anything else (absolute, `./`, `~`, or deeper than one
    slash) is a path, and a path that is not there would otherwise be tried as a Hub id by the
    trainer after the job started.
    """
    p = Path(value).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            raise FtplanError(f"{field} {value}: the folder has no config.json, so it is not a model folder; point "
                              f"{field} at the folder that holds config.json and the weights, or give a Hub id.")
        return
    if p.exists():
        raise FtplanError(f"{field} {value}: a file, not a model folder; give the folder that holds config.json, "
                          "or a Hub id (owner/name).")
    if p.is_absolute() or value.startswith(("./", "../", "~")) or not _HUB_ID.fullmatch(value):
        raise FtplanError(f"{field} {value}: no such folder (paths in a recipe are relative to the recipe file). "
                          "Fix the path, or give a Hub id such as meta-llama/Llama-3.1-8B.")


def check_output_dir(value: str) -> None:
    """`output.dir` can hold the job's folder: the nearest existing folder above it is a writable folder."""
    p = Path(value).expanduser()
    here = p
    while not here.exists():
        if here.parent == here:
            break
        here = here.parent
    if not here.is_dir():
        raise FtplanError(f"output.dir {value}: {here} is a file, so no folder can be made under it; point output.dir "
                          "at a folder (it is created if missing).")
    if not os.access(here, os.W_OK | os.X_OK):
        raise FtplanError(f"output.dir {value}: {here} is not writable by you; point output.dir at a folder you can "
                          "write to.")
