"""Recipe data -> the `datasets.Dataset` columns each TRL trainer expects.

The file is checked first with the planner's validator (`sizing.dataset.analyze`), so a bad
line stops the run with its line number before a model is loaded. Then it is read with
`datasets` and mapped to TRL's column names; the format must be one the objective trains on.
"""

from __future__ import annotations

from pathlib import Path

from ftplan.sizing.dataformat import BY_KEY, DataFormat, as_messages
from ftplan.sizing.dataset import DatasetStats, analyze
from ftplan.sizing.errors import DataError

from .schema import Recipe

OBJECTIVE_FORMATS = {
    "sft": ("messages", "prompt_completion", "text"),
    "distillation": ("messages", "prompt_completion"),
    "continued-pretraining": ("text",),
    "dpo": ("preference", "preference_implicit", "openai_preference"),
    "simpo": ("preference", "preference_implicit", "openai_preference"),
    "orpo": ("preference", "preference_implicit", "openai_preference"),
    "kto": ("unpaired_preference",),
    "grpo": ("prompt_only", "prompt_completion", "messages"),
}
_LOADERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".parquet": "parquet",
            ".pq": "parquet"}


def check_data(recipe: Recipe, path: str | None = None) -> tuple[DataFormat, DatasetStats]:
    """Validate the data file (every line) and its fit to the objective; raise DataError otherwise."""
    src = path or recipe.data.path
    stats = analyze(src, seq_len=recipe.hyperparameters.max_seq_length,
                    micro_batch_size=recipe.hyperparameters.batch_size, split=recipe.data.split)
    fmt = stats.data_format
    if recipe.data.format != "auto" and recipe.data.format != fmt.key:
        raise DataError(f"{src}: data.format says {recipe.data.format} but the file is {fmt.description}; fix "
                        "data.format (or set it to auto).")
    allowed = OBJECTIVE_FORMATS[recipe.method.objective]
    if fmt.key not in allowed:
        need = "; ".join(BY_KEY[k].description for k in allowed)
        raise DataError(f"{src}: objective {recipe.method.objective} cannot train on {fmt.description}; it needs "
                        f"{need}. Convert the data or change method.objective.")
    return fmt, stats


def _to_trl(row: dict, fmt: str) -> dict:
    if fmt == "openai_preference":
        return {"prompt": as_messages(row["input"], "user"),
                "chosen": as_messages(row["preferred_output"], "assistant"),
                "rejected": as_messages(row["non_preferred_output"], "assistant")}
    if fmt == "unpaired_preference":
        return {**row, "label": bool(row["label"])}
    return row


def load_split(path: str, split: str):
    from datasets import load_dataset

    p = Path(path)
    if p.exists():
        return load_dataset(_LOADERS[p.suffix.lower()], data_files=str(p), split="train")
    return load_dataset(path, split=split)


def load_training_data(recipe: Recipe, fmt: DataFormat):
    """(train dataset, eval dataset or None) in TRL's columns."""
    ds = load_split(recipe.data.path, recipe.data.split)
    if fmt.key == "openai_preference":
        ds = ds.map(lambda r: _to_trl(r, fmt.key), remove_columns=ds.column_names)
    elif fmt.key == "unpaired_preference":
        ds = ds.map(lambda r: _to_trl(r, fmt.key))
    if recipe.method.objective == "grpo" and fmt.key != "prompt_only":
        # GRPO generates the completions itself: keep only the prompt (messages minus the last answer).
        if fmt.key == "messages":
            ds = ds.map(lambda r: {"prompt": [m for m in r["messages"] if m["role"] != "assistant"] or r["messages"]})
        ds = ds.remove_columns([c for c in ("completion", "messages") if c in ds.column_names])
    eval_ds = None
    if recipe.data.eval_path:
        check_data(recipe, recipe.data.eval_path)
        eval_ds = load_split(recipe.data.eval_path, recipe.data.eval_split or "validation")
        if fmt.key in ("openai_preference", "unpaired_preference"):
            eval_ds = eval_ds.map(lambda r: _to_trl(r, fmt.key), remove_columns=eval_ds.column_names
                                  if fmt.key == "openai_preference" else None)
    elif recipe.data.eval_fraction and len(ds) >= 10:
        parts = ds.train_test_split(test_size=recipe.data.eval_fraction, seed=recipe.hyperparameters.seed)
        ds, eval_ds = parts["train"], parts["test"]
    return ds, eval_ds
