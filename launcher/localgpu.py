"""The local box: `--local RTX-4090:2`, or the cards `nvidia-smi` reports.

A side effect (running nvidia-smi), so it lives here at the edge; the planner receives a
`LocalBox` value.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess

from ftplan.sizing.errors import FtplanError, InvalidValueError, UnknownGPUError
from ftplan.sizing.gpus import GPU, get_gpu
from ftplan.sizing.plan import LocalBox
from ftplan.sizing.prices import PriceBook


def parse_local(text: str) -> tuple[GPU, int]:
    name, _, count = text.partition(":")
    try:
        n = int(count) if count else 1
    except ValueError:
        raise InvalidValueError(f"--local {text}: the count after ':' must be a whole number, e.g. RTX-4090:2.") \
            from None
    if not 1 <= n <= 8:
        raise InvalidValueError(f"--local {text}: a local box holds 1 to 8 GPUs.")
    return get_gpu(name, "--local"), n


def gpu_from_smi_name(name: str) -> GPU | None:
    """'NVIDIA GeForce RTX 4090' -> RTX-4090; 'NVIDIA A100-SXM4-80GB' -> A100-80GB."""
    words = [w for w in re.split(r"[\s_-]+", name) if w and w.upper() not in ("NVIDIA", "GEFORCE", "TESLA")]
    mem = next((w for w in words if re.fullmatch(r"\d+GB", w, re.I)), None)
    tries = ["-".join(words), "-".join(words[:2]), words[0] if words else ""]
    if mem and words:
        tries.insert(1, f"{words[0]}-{mem}")
    for attempt in tries:
        try:
            return get_gpu(attempt)
        except UnknownGPUError:
            continue
    return None


def detect_local() -> tuple[GPU, int] | None:
    """The first GPU type nvidia-smi lists and how many of it, or None without NVIDIA GPUs."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.splitlines() if line.strip()]
    if not names:
        return None
    gpu = gpu_from_smi_name(names[0])
    return (gpu, sum(1 for n in names if n == names[0])) if gpu else None


def local_box(spec: str | None, book: PriceBook, electricity: float | None, card_price: float | None,
              card_hours: float | None, detect: bool = True) -> LocalBox | None:
    # Checked whether or not a box is found: an impossible value is an error, never silently unused.
    for name, value in (("--electricity", electricity), ("--card-price", card_price)):
        if value is not None and value < 0:
            raise FtplanError(f"{name} {value:g} is impossible: give a number >= 0.")
    if card_hours is not None and card_hours <= 0:
        raise FtplanError(f"--card-hours {card_hours:g} is impossible: a card lasts some hours; give a number > 0 "
                          "(the default is 3 years at 50 % use, 13,140 h).")
    found = parse_local(spec) if spec else (detect_local() if detect else None)
    if found is None:
        return None
    cfg = book.local
    return LocalBox(found[0], found[1], electricity if electricity is not None else cfg["electricity_usd_per_kwh"],
                    cfg["power_fraction"], card_price, card_hours if card_hours is not None else cfg["lifetime_hours"],
                    detected=spec is None,
                    unsloth=importlib.util.find_spec("unsloth") is not None)  # the program uses it when present
