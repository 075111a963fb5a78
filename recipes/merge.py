"""Combine trained LoRA adapters with PEFT's weighted-adapter API (linear, cat, TIES, DARE, SVD).

mergekit is the tool for merging full models; adapters of one base merge here in seconds on a
CPU, and the result is an ordinary adapter folder (optionally folded into the base weights).
"""

from __future__ import annotations

from pathlib import Path

from ftplan.sizing.errors import FtplanError

from .schema import Recipe


def merge_adapters(recipe: Recipe, out_dir: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    spec = recipe.method.merge
    for path in spec.adapters:
        if not (Path(path) / "adapter_config.json").is_file():
            raise FtplanError(f"method.merge.adapters: {path} has no adapter_config.json; list adapter folders "
                              "written by a LoRA run (output.dir/adapter).")
    base = AutoModelForCausalLM.from_pretrained(recipe.model)
    names = [f"a{i}" for i in range(len(spec.adapters))]
    model = PeftModel.from_pretrained(base, spec.adapters[0], adapter_name=names[0])
    for name, path in zip(names[1:], spec.adapters[1:], strict=True):
        model.load_adapter(path, adapter_name=name)
    weights = spec.weights or [1.0 / len(names)] * len(names)
    kwargs = {}
    if spec.combination in ("ties", "dare_linear", "dare_ties"):
        kwargs["density"] = spec.density
    model.add_weighted_adapter(names, weights, "merged", combination_type=spec.combination, **kwargs)
    model.set_adapter("merged")
    for name in names:
        model.delete_adapter(name)
    target = out_dir / "adapter"
    model.save_pretrained(str(target), selected_adapters=["merged"])
    # PEFT saves a non-default adapter in a sub-folder named after it; flatten to a plain adapter folder.
    nested = target / "merged"
    if nested.is_dir():
        for f in nested.iterdir():
            f.replace(target / f.name)
        nested.rmdir()
    if recipe.output.merge:
        model.merge_and_unload().save_pretrained(str(out_dir / "merged"))
    return target
