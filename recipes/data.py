"""Recipe data -> the `datasets.Dataset` columns each TRL trainer expects.

One reader for planner and trainer: the file is checked with the planner's validator
(`sizing.dataset.analyze`, the chat template rendered exactly as `ftplan estimate` renders it),
so a bad line stops the run with its line number before a model is loaded; then the trainer's
rows come from the same reader (`sizing.datafile.iter_records`), so what `estimate` counted is
what trains: `{"data": [...]}` and column-oriented JSON, CSV cells holding JSON messages,
Parquet, a Hub dataset id. The format must be one the objective trains on.
"""

from __future__ import annotations

from ftplan.sizing.datafile import BadRecord, iter_records
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


def check_data(recipe: Recipe, path: str | None = None, split: str | None = None) -> tuple[DataFormat, DatasetStats]:
    """Validate the data file (every line) and its fit to the objective; raise DataError otherwise.

    With the model's tokenizer.json at hand (a local folder or the Hugging Face cache), chats are
    rendered with its chat template exactly as `ftplan estimate` renders them, so a record the
    template rejects is reported here with its line, not by the trainer after the model loaded.
    """
    from ftplan.sizing.tokencount import find_tokenizer

    src = path or recipe.data.path
    stats = analyze(src, seq_len=recipe.hyperparameters.max_seq_length,
                    micro_batch_size=recipe.hyperparameters.batch_size, split=split or recipe.data.split,
                    tokenizer_json=find_tokenizer(recipe.model, recipe.model, None))
    check_format(recipe, src, stats.data_format)
    return stats.data_format, stats


def check_format(recipe: Recipe, src: str, fmt: DataFormat) -> None:
    """The detected format against the recipe's `data.format` and what its objective trains on.

    `ftplan plan` and `ftplan run` both call this, so a recipe that cannot run cannot be planned either.
    """
    if recipe.data.format != "auto" and recipe.data.format != fmt.key:
        raise DataError(f"{src}: data.format says {recipe.data.format} but the file is {fmt.description}; fix "
                        "data.format (or set it to auto).")
    allowed = OBJECTIVE_FORMATS[recipe.method.objective]
    if fmt.key not in allowed:
        need = "; ".join(BY_KEY[k].description for k in allowed)
        raise DataError(f"{src}: objective {recipe.method.objective} cannot train on {fmt.description}; it needs "
                        f"{need}. Convert the data or change method.objective.")


def check_eval_data(recipe: Recipe, fmt: DataFormat) -> None:
    """The eval file, held to the same checks as the training file and to the same format."""
    if not recipe.data.eval_path:
        return
    eval_fmt, _ = check_data(recipe, recipe.data.eval_path, recipe.data.eval_split or "validation")
    if eval_fmt.key != fmt.key:
        raise DataError(f"{recipe.data.eval_path}: data.eval_path holds {eval_fmt.description} but data.path holds "
                        f"{fmt.description}; both must be in the same format.")


def _to_trl(row: dict, fmt: str) -> dict:
    if fmt == "openai_preference":
        return {"prompt": as_messages(row["input"], "user"),
                "chosen": as_messages(row["preferred_output"], "assistant"),
                "rejected": as_messages(row["non_preferred_output"], "assistant")}
    if fmt == "unpaired_preference":
        return {**row, "label": bool(row["label"])}
    return row


def _for_objective(row: dict, fmt: str, objective: str) -> dict:
    """A record in the columns the objective's TRL trainer reads."""
    row = _to_trl(row, fmt)
    if objective == "grpo" and fmt != "prompt_only":
        # GRPO generates the completions itself: keep only the prompt (messages minus the last answer).
        if fmt == "messages":
            row = {**row, "prompt": [m for m in row["messages"] if m["role"] != "assistant"] or row["messages"]}
        row = {k: v for k, v in row.items() if k not in ("completion", "messages")}
    return row


def read_rows(source: str, split: str, fmt: DataFormat, objective: str) -> list[dict]:
    """Every record of the file, read by the same reader `ftplan estimate` counted, in the trainer's columns.

    `check_data` has already refused any bad record, so here every one is a dict in the file's format.
    """
    _, _, records = iter_records(source, split)
    return [_for_objective(rec, fmt.key, objective) for _, rec in records if not isinstance(rec, BadRecord)]


def load_training_data(recipe: Recipe, fmt: DataFormat, prepare=None):
    """(train dataset, eval dataset or None). `prepare(rows) -> rows` turns records into the trainer's rows
    (the training program tokenizes conversations there, with their loss mask)."""
    from datasets import Dataset

    prepare = prepare or (lambda rows: rows)
    obj = recipe.method.objective
    train = prepare(read_rows(recipe.data.path, recipe.data.split, fmt, obj))
    eval_rows = None
    if recipe.data.eval_path:
        eval_rows = prepare(read_rows(recipe.data.eval_path, recipe.data.eval_split or "validation", fmt, obj))
    elif recipe.data.eval_fraction and len(train) >= 10:
        ds = Dataset.from_list(train)
        parts = ds.train_test_split(test_size=recipe.data.eval_fraction, seed=recipe.hyperparameters.seed)
        return parts["train"], parts["test"]
    return Dataset.from_list(train), Dataset.from_list(eval_rows) if eval_rows is not None else None
