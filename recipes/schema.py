"""The recipe: one YAML file that every provider runs unchanged.

Validated by pydantic with unknown fields refused (a typo is an error, not a silently ignored
knob). `load_recipe()` turns every validation problem into one `RecipeError` whose message
names the field path, the bad value and what is allowed. Provider-only knobs live under
`providers:` and never change the meaning of the rest.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ftplan.sizing.errors import FtplanError

Objective = Literal["sft", "dpo", "simpo", "orpo", "kto", "grpo", "continued-pretraining", "distillation", "merge"]
Adapter = Literal["lora", "qlora", "dora", "full"]
DataFormatName = Literal["auto", "messages", "prompt_completion", "text", "preference", "preference_implicit",
                         "openai_preference", "unpaired_preference", "prompt_only"]


class RecipeError(FtplanError):
    """A recipe file that cannot be read or does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSection(_Strict):
    path: str = Field(description="Local .jsonl/.json/.csv/.parquet file or a Hub dataset id")
    format: DataFormatName = "auto"
    split: str = "train"
    eval_path: str | None = None
    eval_split: str | None = None
    eval_fraction: float = Field(0.0, ge=0.0, lt=0.5)


class LoraSection(_Strict):
    rank: int = Field(16, ge=1, le=1024)
    alpha: int | None = Field(None, ge=1)
    # 0 by default, as in PEFT and TRL: Unsloth's fast kernels need it, and MoE expert tensors refuse any other.
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: str = "all-linear"

    @property
    def effective_alpha(self) -> int:
        return self.alpha or 2 * self.rank


class MergeSection(_Strict):
    adapters: list[str] = Field(min_length=1)
    weights: list[float] | None = None
    combination: Literal["linear", "cat", "ties", "dare_linear", "dare_ties", "svd"] = "linear"
    density: float = Field(0.5, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _weights_match(self):
        if self.weights is not None and len(self.weights) != len(self.adapters):
            raise ValueError(f"{len(self.weights)} weights for {len(self.adapters)} adapters; give one each")
        return self


class MethodSection(_Strict):
    objective: Objective = "sft"
    adapter: Adapter = "lora"
    lora: LoraSection = Field(default_factory=LoraSection)
    train_on_inputs: bool = Field(False, description="false: the loss falls on completions and assistant turns only; "
                                  "true: on every token, prompts included")
    beta: float = Field(0.1, ge=0.0, description="DPO/KTO/SimPO beta; ORPO lambda; GRPO KL weight")
    simpo_gamma: float = Field(0.5, ge=0.0)
    rpo_alpha: float | None = Field(None, ge=0.0, description="DPO: weight of an NLL term on the chosen answers (RPO)")
    rewards: list[str] = Field(default_factory=list, description="GRPO reward functions as module:function")
    num_generations: int = Field(8, ge=2)
    max_completion_length: int = Field(256, ge=1)
    precompute_ref: bool = False
    teacher: str | None = Field(None, description="distillation: teacher model that wrote (or will write) outputs")
    generate_with_teacher: bool = False
    merge: MergeSection | None = None

    @model_validator(mode="after")
    def _objective_needs(self):
        if self.objective == "grpo" and not self.rewards:
            raise ValueError("objective grpo needs 'rewards': a list of module:function reward functions")
        if self.objective == "merge" and self.merge is None:
            raise ValueError("objective merge needs a 'merge' section with the adapters to combine")
        if self.objective == "distillation" and self.generate_with_teacher and not self.teacher:
            raise ValueError("generate_with_teacher needs 'teacher': the model that writes the outputs")
        if self.rpo_alpha is not None and self.objective != "dpo":
            raise ValueError("rpo_alpha adds an NLL term to DPO's loss; it applies to objective dpo only")
        return self


class Hyperparameters(_Strict):
    epochs: float = Field(3, gt=0, le=100)
    max_steps: int = Field(-1, ge=-1)
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    batch_size: int = Field(1, ge=1, le=4096, description="per-device micro-batch")
    gradient_accumulation: int = Field(8, ge=1, le=4096)
    max_seq_length: int = Field(2048, ge=16, le=1_048_576)
    packing: bool = False
    gradient_checkpointing: bool = True
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd"] = "adamw"
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    seed: int = 42
    logging_steps: int = Field(1, ge=1)


class CheckpointSection(_Strict):
    every_steps: int | None = Field(100, ge=1)
    every_minutes: float | None = Field(30, gt=0)
    keep: int = Field(3, ge=1)


class EvalSection(_Strict):
    """The eval gate (filled in by the eval-gate work): a frozen golden set and its thresholds."""

    golden: str | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)
    judge: dict[str, Any] | None = None


Tracker = Literal["wandb", "mlflow", "tensorboard", "trackio"]


class OutputSection(_Strict):
    dir: str = "outputs/run"
    merge: bool = False
    push_to_hub: str | None = None
    report_to: list[Tracker] = Field(default_factory=list, description="experiment trackers: transformers' "
                                     "TrainingArguments.report_to (wandb, mlflow, tensorboard, trackio)")
    project: str | None = Field(None, description="the trackers' project / experiment name")

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        if value is None or value == "none":
            return []
        return [value] if isinstance(value, str) else value

    @field_validator("report_to")
    @classmethod
    def _once_each(cls, value: list) -> list:
        return list(dict.fromkeys(value))


class HardwareSection(_Strict):
    gpu: str | None = None
    gpus: int | None = Field(None, ge=1, le=4096)
    distributed: Literal["auto", "ddp", "fsdp", "zero3"] = "auto"


class Recipe(_Strict):
    name: str | None = None
    model: str
    data: DataSection | None = None
    method: MethodSection = Field(default_factory=MethodSection)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    output: OutputSection = Field(default_factory=OutputSection)
    hardware: HardwareSection = Field(default_factory=HardwareSection)
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: dict) -> dict:
        unknown = set(value) - {"local", "modal", "together", "openai"}
        if unknown:
            raise ValueError(f"unknown provider section(s) {sorted(unknown)}; allowed: local, modal, together, openai")
        return value

    @model_validator(mode="after")
    def _data_unless_merge(self):
        if self.method.objective != "merge" and self.data is None:
            raise ValueError("a 'data' section is needed (every objective but merge trains on data)")
        return self

    def digest(self) -> str:
        """Hash of the recipe's meaning (field order and comments do not matter)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def _format_errors(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            allowed = _allowed_fields(parent)
            parts.append(f"'{path}' is not a recipe field" + (f" (allowed here: {', '.join(allowed)})" if allowed
                                                               else ""))
        elif err["type"] == "missing":
            parts.append(f"'{path}' is required")
        elif isinstance(err.get("input"), (dict, list)) or not err["loc"]:
            parts.append(msg if not err["loc"] else f"'{path}': {msg}")
        else:
            parts.append(f"'{path}' = {json.dumps(err.get('input'), default=str)[:60]}: {msg}")
    return f"{source}: " + "; ".join(parts) + ". Fix the recipe (`ftplan init METHOD` writes a commented example)."


def _allowed_fields(loc: tuple) -> list[str]:
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if model is None:
            return []
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
                     None)
    return list(model.model_fields) if model else []


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping (model:, data:, method:, ...), not a "
                          f"{type(data).__name__}.")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_format_errors(source, exc)) from None


DATA_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".parquet", ".pq", ".txt")


def _local(value: str, base: Path, *, data_file: bool = False) -> str:
    """`value` made absolute against the recipe's folder when it names something local; Hub ids stay as they are.

    A relative path counts as local when it exists there, starts with ./ ../ or ~, or (for data) ends
    in a data file's suffix: a missing `dir/file.jsonl` is a missing file, never a Hub dataset id.
    """
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    candidate = base / p
    explicit = value.startswith(("./", "../", "~")) or (data_file and value.lower().endswith(DATA_SUFFIXES))
    return str(candidate.resolve()) if candidate.exists() or explicit else value


def resolve_paths(recipe: Recipe, base: str | Path) -> Recipe:
    """Every local path in the recipe, relative to the recipe file's folder (not where ftplan runs)."""
    base = Path(base)
    if recipe.data:
        recipe.data.path = _local(recipe.data.path, base, data_file=True)
        if recipe.data.eval_path:
            recipe.data.eval_path = _local(recipe.data.eval_path, base, data_file=True)
    recipe.model = _local(recipe.model, base)
    if recipe.method.teacher:
        recipe.method.teacher = _local(recipe.method.teacher, base)
    if recipe.method.merge:
        recipe.method.merge.adapters = [_local(a, base) for a in recipe.method.merge.adapters]
    if recipe.eval.golden:
        recipe.eval.golden = str((base / Path(recipe.eval.golden).expanduser()).resolve())
    recipe.output.dir = str((base / Path(recipe.output.dir).expanduser()).resolve())
    return recipe


@cache
def _yaml_loader():
    """PyYAML's safe loader, refusing a key given twice in one mapping.

    YAML says keys are unique, but PyYAML keeps the last value without a word, so a recipe with two
    `learning_rate:` lines would train with whichever came last.
    """
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: the base class raises its own error
                    continue
                if first != key_node.start_mark.line + 1:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice (lines {first} and {key_node.start_mark.line + 1}); "
                        "keep one", key_node.start_mark)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RecipeError(f"{path}: line {line} is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the recipe "
                          "as UTF-8 text.") from None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe; its relative paths are relative to the recipe file's folder."""
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecipeError(f"{path}: cannot be read ({exc.strerror}). Give the path of a recipe YAML file.") from None
    text = _decode(raw, path)
    try:
        data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"{path}: not valid YAML{where} ({getattr(exc, 'problem', exc)}).") from None
    if data is None:
        raise RecipeError(f"{path}: the file is empty (or holds only comments); `ftplan init lora-sft -o {path.name}` "
                          "writes a commented recipe to start from.")
    return resolve_paths(parse_recipe(data, str(path)), path.resolve().parent)
