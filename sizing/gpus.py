"""GPU specs (memory, dense BF16 peak, bandwidth, power, interconnect), read from data/gpus.json.

Memory is what the driver reports (nvidia-smi MiB), not the marketed GB: an H100 "80 GB" holds 79.65
GiB, an L4 "24 GB" 22.49 GiB, and a plan that fits by the marketed figure may not fit the card.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from .errors import UnknownGPUError


@dataclass(frozen=True)
class GPU:
    name: str
    memory_mib: int  # as nvidia-smi reports the card's total
    bf16_tflops: float
    bandwidth_gbs: float
    power_w: float
    interconnect: str  # "nvlink" or "pcie"
    interconnect_gbs: float
    tier: str
    source: str
    as_of: str
    notes: str = ""
    memory_source: str = ""
    peer_to_peer: bool = True  # False: collectives are staged through host memory, which every GPU shares
    peer_to_peer_source: str = ""

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 2**20


def _key(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


@cache
def _rows() -> list[dict]:
    text = resources.files("ftplan.sizing").joinpath("data/gpus.json").read_text(encoding="utf-8")
    return json.loads(text)["gpus"]


@cache
def _index() -> dict[str, dict]:
    index = {}
    for row in _rows():
        index[_key(row["name"])] = row
        for alias in row["aliases"]:
            index[_key(alias)] = row
    return index


def all_gpus() -> list[GPU]:
    return [_make(row) for row in _rows()]


def _make(row: dict) -> GPU:
    fields = {k: row[k] for k in GPU.__dataclass_fields__ if k in row}
    return GPU(**fields)


def get_gpu(name: str, option: str = "--gpu") -> GPU:
    """Look a GPU up by name or alias, case-insensitive (`h100`, `RTX 4090`, `a100-80gb`).

    `option` is what the user wrote it in (--gpu, --local, a price file's row) so the error names that.
    """
    row = _index().get(_key(str(name)))
    if row is None:
        close = difflib.get_close_matches(_key(str(name)), list(_index()), n=4, cutoff=0.4)
        hint = f" Closest: {', '.join(close)}." if close else ""
        known = ", ".join(r["name"] for r in _rows())
        raise UnknownGPUError(f"{option} '{name}' is not a GPU ftplan knows.{hint} Known GPUs: {known}.")
    return _make(row)
