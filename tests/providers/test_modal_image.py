"""The Modal image's package set resolves on the package index, as Modal's image build will resolve it.

Independent reference: the package index itself, asked through `uv pip compile` for the image's
Python (3.11) and platform (x86_64 manylinux_2_28). A version the index lacks, a pin that conflicts
with another package's metadata (Unsloth's own bounds on trl, transformers, datasets, torch), or a
dependency the lock forgot all fail here, in CI, before any user builds the image.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ftplan.providers import modal_app

ROOT = Path(__file__).resolve().parents[2]
SETS = {"peft": (False, False), "unsloth": (True, False), "deepspeed": (False, True)}
# Every tracker on the PEFT image, the trackers Unsloth's pins admit on its image, and each pair
# image_packages accepts (it refuses, by name, the pairs whose locks disagree: tensorboard + trackio).
TRACKER_SETS = {f"peft+{t}": (False, False, (t,)) for t in ("wandb", "mlflow", "tensorboard", "trackio")} | {
    f"unsloth+{t}": (True, False, (t,)) for t in ("wandb", "tensorboard")} | {
    "peft+wandb+mlflow+tensorboard": (False, False, ("wandb", "mlflow", "tensorboard")),
    "peft+wandb+trackio": (False, False, ("wandb", "trackio")), "unsloth+wandb+tensorboard": (True, False, (
        "wandb", "tensorboard"))}


def uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


@pytest.mark.parametrize("name", sorted(SETS) + sorted(TRACKER_SETS))
def test_the_image_set_resolves_on_the_index_exactly_as_pinned(tmp_path, name):
    packages = modal_app.image_packages(*(SETS | TRACKER_SETS)[name])
    req = tmp_path / "image.txt"
    req.write_text("\n".join(packages) + "\n")
    res = subprocess.run([*uv(), "pip", "compile", str(req), "--python-version", modal_app.PYTHON,
                          "--python-platform", "x86_64-manylinux_2_28", "--no-header", "--no-annotate", "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    resolved = {line.strip() for line in res.stdout.splitlines() if line.strip() and not line.startswith("#")}
    assert resolved == set(packages), (sorted(resolved - set(packages)), sorted(set(packages) - resolved))


def _pins(text: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def test_ci_trains_with_the_images_training_stack():
    """What the tests train with is what the PEFT image runs (torch aside: a CPU wheel here, CUDA 12.8 there)."""
    ci = _pins((ROOT / "constraints" / "ci.txt").read_text())
    image = _pins("\n".join(modal_app.image_packages(False, False)))
    stack = ("transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes")
    assert {k: ci[k] for k in stack} == {k: image[k] for k in stack}


def test_unsloths_image_honours_unsloths_own_bounds():
    pins = _pins("\n".join(modal_app.image_packages(True, False)))
    from packaging.version import Version

    assert Version(pins["trl"]) <= Version("1.15.0") and Version(pins["transformers"]) <= Version("5.17.0")
    assert Version(pins["datasets"]) < Version("5") and Version(pins["torch"]) < Version("2.15")


def test_tracker_pairs_whose_locks_disagree_are_refused_by_name():
    from ftplan.sizing.errors import FtplanError

    with pytest.raises(FtplanError, match="trackio beside tensorboard"):
        modal_app.image_packages(False, False, ("tensorboard", "trackio"))
    with pytest.raises(FtplanError, match="mlflow beside the training stack"):
        modal_app.image_packages(True, False, ("mlflow",))
