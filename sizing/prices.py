"""Price rows: GPU clouds per GPU-hour, managed APIs by their own rule, and the local box.

Rows live in `data/prices.json`, each with its source and as-of date. A user file
(`~/.config/ftplan/prices.toml`, or `--prices FILE`) replaces rows for the same provider, GPU and
counts, adds new ones, and can change the local electricity price. Rows older than 90 days are
flagged, never silently trusted.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import DataError, InvalidValueError
from .gpus import get_gpu

STALE_DAYS = 90


@dataclass(frozen=True)
class GpuPrice:
    provider: str
    gpu: str  # canonical name in gpus.json
    usd_per_gpu_hour: float
    counts: tuple[int, ...]
    source: str
    as_of: str
    max_nodes: int = 1
    billing: str = "per_second"
    native_name: str = ""  # the provider's own string (Modal "A10", AWS instance type)

    def age_days(self, today: date) -> int:
        return (today - parse_date(self.as_of)).days


def parse_date(text: str) -> date:
    parts = [int(p) for p in str(text).split("-")]
    return date(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1)


def today() -> date:
    """Today, or FTPLAN_TODAY (YYYY-MM-DD): the one clock for price ages, the OpenAI calendar and plans.

    Every command reads it here, so `estimate`, `prices` and `run` agree on what day it is.
    """
    env = os.environ.get("FTPLAN_TODAY")
    if not env:
        return date.today()
    try:
        return date.fromisoformat(env.strip())
    except ValueError:
        raise InvalidValueError(f"FTPLAN_TODAY={env!r} is not a date: give YYYY-MM-DD (e.g. 2026-12-02), or unset "
                                "it for today.") from None


@lru_cache(maxsize=1)
def _bundled() -> dict:
    return json.loads(resources.files("ftplan.sizing").joinpath("data/prices.json").read_text(encoding="utf-8"))


def user_prices_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "ftplan" / "prices.toml"


def _load_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as TOML ({exc}). See the README, 'Your own prices'.") from None


@dataclass
class PriceBook:
    gpu_rows: list[GpuPrice]
    providers: dict
    apis: dict
    local: dict
    user_file: str | None = None

    def stale(self, on: date | None = None) -> list[GpuPrice]:
        on = on or today()
        return [r for r in self.gpu_rows if r.age_days(on) > STALE_DAYS]


def _row(raw: dict, where: str) -> GpuPrice:
    for key in ("provider", "gpu", "usd_per_gpu_hour", "source", "as_of"):
        if key not in raw:
            raise DataError(f"{where}: price row {raw} lacks '{key}'. Each row needs provider, gpu, usd_per_gpu_hour, "
                            "counts, source and as_of.")
    price = raw["usd_per_gpu_hour"]
    if not isinstance(price, (int, float)) or price < 0:
        raise DataError(f"{where}: usd_per_gpu_hour {price!r} for {raw['provider']} {raw['gpu']} must be a "
                        "number >= 0.")
    try:
        parse_date(raw["as_of"])
    except ValueError:
        raise DataError(f"{where}: as_of {raw['as_of']!r} is not a date (YYYY-MM-DD or YYYY-MM).") from None
    gpu = get_gpu(raw["gpu"], f"{where}: price row for {raw['provider']}: gpu").name  # names the closest GPUs
    counts = raw.get("counts", [1, 2, 4, 8])
    if not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        raise DataError(f"{where}: counts {counts!r} for {raw['provider']} {gpu} must be a list of whole numbers "
                        "of GPUs per node, e.g. counts = [1, 2, 4, 8].")
    counts = tuple(counts)
    max_nodes = raw.get("max_nodes", 1)
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise DataError(f"{where}: max_nodes {max_nodes!r} for {raw['provider']} {gpu} must be a whole number >= 1.")
    if not counts or any(c < 1 or c > 8 for c in counts):
        raise DataError(f"{where}: counts {list(counts)} for {raw['provider']} {gpu} must be GPUs per node, 1 to 8.")
    return GpuPrice(provider=str(raw["provider"]).lower(), gpu=gpu, usd_per_gpu_hour=float(price), counts=counts,
                    source=str(raw["source"]), as_of=str(raw["as_of"]), max_nodes=max_nodes,
                    billing=str(raw.get("billing", "per_second")),
                    native_name=str(raw.get("modal_gpu") or raw.get("instance") or ""))


def load_prices(user_file: str | Path | None = None) -> PriceBook:
    """Bundled rows, overridden by `user_file` (or the default user file when it exists)."""
    data = copy.deepcopy(_bundled())
    rows = [_row(r, "sizing/data/prices.json") for r in data["gpu_rows"]]
    path = Path(user_file).expanduser() if user_file else user_prices_path()
    used = None
    if user_file and not path.is_file():
        raise DataError(f"--prices {user_file}: no such file.")
    if path.is_file():
        used = str(path)
        extra = _load_toml(path)
        gpu_rows = extra.get("gpu", [])
        if not isinstance(gpu_rows, list) or not all(isinstance(r, dict) for r in gpu_rows):
            raise DataError(f"{path}: 'gpu' must be a list of tables, written [[gpu]] once per row (see the README, "
                            "'Your own prices').")
        for raw in gpu_rows:
            new = _row(raw, str(path))
            rows = [r for r in rows if not (r.provider == new.provider and r.gpu == new.gpu
                                             and set(r.counts) & set(new.counts))]
            rows.append(new)
            data["providers"].setdefault(new.provider, {"label": new.provider, "boot_seconds": 300,
                                                        "boot_source": "assumption [U]: a provider from your file",
                                                        "download_mb_per_s": 200,
                                                        "download_source": "assumption [U]"})
        local = extra.get("local", {})
        if not isinstance(local, dict):
            raise DataError(f"{path}: 'local' must be a table ([local] with key = value lines).")
        for key, value in local.items():
            if key not in data["local"]:
                raise DataError(f"{path}: [local] has no setting '{key}'; known: {sorted(data['local'])}.")
            if isinstance(data["local"][key], (int, float)) and (isinstance(value, bool)
                                                                 or not isinstance(value, (int, float)) or value < 0):
                raise DataError(f"{path}: [local] {key} = {value!r} must be a number >= 0.")
            data["local"][key] = value
    return PriceBook(rows, data["providers"], data["apis"], data["local"], used)
