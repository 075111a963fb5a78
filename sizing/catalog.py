"""Where a model's architecture comes from: a local folder, the bundled catalog, or a bare size.

`--model` accepts a folder holding a Hugging Face `config.json`, a catalog id
(`meta-llama/Llama-3.1-8B`) or one of its aliases (`llama-3.1-8b`), case-insensitive.
Unknown names get the closest catalog names in the error.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from .architecture import Architecture, from_config, from_param_count
from .errors import ConfigError, InvalidValueError, UnknownModelError


@dataclass(frozen=True)
class ModelSource:
    """An architecture plus where it came from (shown in every estimate)."""

    arch: Architecture
    model_id: str
    source: str
    published_params_b: float | None = None
    params_uncertainty: float = 0.0  # relative; non-zero only for shapes assumed from --params
    as_of: str | None = None  # when the catalog's copy of the config was taken
    variant_of: str | None = None  # the catalog entry whose config.json this instruct/chat sibling shares

    @property
    def citation(self) -> str:
        """The source's first clause (the public URL, or the file read) with its date: one readable line."""
        sibling = f" (architecture of its sibling {self.variant_of})" if self.variant_of else ""
        head = self.source.removesuffix(sibling).split("; ")[0]
        return head + sibling + (f" (as of {self.as_of})" if self.as_of else "")


@cache
def _catalog() -> dict:
    text = resources.files("ftplan.sizing").joinpath("data/models.json").read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _index() -> dict[str, dict]:
    index: dict[str, dict] = {}
    for entry in _catalog()["models"]:
        index[entry["id"].lower()] = entry
        index[entry["id"].split("/")[-1].lower()] = entry
        for alias in entry["aliases"]:
            index[alias.lower()] = entry
    return index


def catalog_entries() -> list[dict]:
    return list(_catalog()["models"])


def parse_size(text: str | float | int) -> float:
    """'7B', '1.5b', '350M', '7e9', 7000000000 -> parameter count."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMbBtT]?)\s*", str(text))
        if not m:
            raise InvalidValueError(
                f"--params '{text}' is not a size; write it like 7B, 1.5B, 350M or 7e9."
            )
        scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
        value = float(m.group(1)) * scale
    if not 1e8 <= value <= 2e12:
        raise InvalidValueError(
            f"--params {value:,.0f} is outside 100M..2T parameters; check the unit (B = billions)."
        )
    return value


def resolve_model(model: str | None, params: str | float | None = None, option: str = "--model") -> ModelSource:
    """Turn `--model` / `--params` into an architecture with its provenance (`option`: where the name came from)."""
    if model and params is not None:
        raise InvalidValueError(f"give --model or --params, not both: --model {model} already fixes the size "
                                f"(--params {params} would be ignored).")
    if model:
        path = Path(model).expanduser()
        if path.is_dir() or path.name == "config.json":
            return _from_folder(path)
        entry = _index().get(model.lower()) or _index().get(model.lower().split("/")[-1])
        variant_of = None
        if entry is None:
            entry, variant_of = _variant(model)
        if entry is None:
            close = difflib.get_close_matches(model.lower(), list(_index()), n=4, cutoff=0.5)
            hint = f" Closest catalog names: {', '.join(close)}." if close else ""
            raise UnknownModelError(
                f"{option} '{model}' is neither a folder with a config.json nor a model in ftplan's "
                f"catalog.{hint} Pass a local folder holding the model's config.json, run "
                "`ftplan models` to list the catalog, or give --params (e.g. --params 7B)."
            )
        arch = from_config(entry["config"], entry["id"])
        if variant_of:
            # An instruct/chat/base sibling: same config.json, so the same architecture; keep the user's id.
            return ModelSource(arch, model, f"{entry['source']} (architecture of its sibling {variant_of})",
                               entry.get("published_params_b"), as_of=entry.get("as_of"), variant_of=variant_of)
        return ModelSource(arch, entry["id"], entry["source"], entry.get("published_params_b"),
                           as_of=entry.get("as_of"))
    if params is not None:
        count = parse_size(params)
        arch = from_param_count(count)
        return ModelSource(arch, arch.name, "--params (Llama-shaped architecture assumed)", count / 1e9, 0.25)
    raise InvalidValueError("Give --model (a catalog name or a folder with config.json) or --params 7B.")


_VARIANT_SUFFIX = re.compile(r"(-instruct(-\d+)?|-it|-chat|-hf|-base|-pt)$", re.I)


def _variant(model: str) -> tuple[dict | None, str | None]:
    """The catalog entry of an instruct/chat/base sibling of `model` (Qwen2.5-7B-Instruct -> Qwen2.5-7B).

    Fine-tuned siblings ship the same config.json as their base, so they share its architecture.
    """
    name = model.lower().split("/")[-1]
    base = _VARIANT_SUFFIX.sub("", name)
    inner = re.sub(r"-(instruct|chat|it)(?=-|$)", "", name, flags=re.I)  # Mistral-7B-Instruct-v0.2
    candidates = [base, inner] + [base + s for s in ("-instruct", "-it", "-chat", "-hf", "-pt", "-base")]
    for cand in candidates:
        if cand != name and cand in _index():
            entry = _index()[cand]
            return entry, entry["id"]
    return None, None


def _from_folder(path: Path) -> ModelSource:
    cfg_path = path if path.name == "config.json" else path / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{path}: no config.json in this folder; point --model at a model folder.")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{cfg_path}: cannot be read as JSON ({exc}); fix or re-download the file.") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{cfg_path}: holds a JSON {type(cfg).__name__}, not the object a config.json is "
                          "(keys such as model_type, hidden_size, num_hidden_layers); fix or re-download it.")
    name = cfg.get("_name_or_path") or cfg_path.parent.name
    return ModelSource(from_config(cfg, str(cfg_path)), str(name), str(cfg_path))
