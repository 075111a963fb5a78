"""Experiment trackers a recipe reports to (`output.report_to`): what each needs, here and on Modal.

The training program passes `report_to` to transformers' `TrainingArguments`, whose own callbacks
(WandbCallback, MLflowCallback, TensorBoardCallback, TrackioCallback) do the logging: ftplan adds
no tracker code of its own. What ftplan adds is the set-up those callbacks read from the
environment (their documented variables, transformers/integrations/integration_utils.py), the
check that the package is importable before a job exists, and on Modal the image packages (a lock
per tracker, providers/data/modal-image-<tracker>.lock) and the secret carrying the tracker's key.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .schema import Recipe


@dataclass(frozen=True)
class Tracker:
    module: str  # what transformers imports
    package: str  # what pip installs
    project_env: str | None  # the variable transformers' callback reads for the project / experiment name
    secret: str | None  # the Modal secret's conventional name (Modal's examples: `wandb-secret`)
    keys: tuple[str, ...]  # what that secret must hold
    unsloth_image: bool  # resolves together with the Unsloth image's pins


TRACKERS = {
    "wandb": Tracker("wandb", "wandb", "WANDB_PROJECT", "wandb-secret", ("WANDB_API_KEY",), True),
    # mlflow-skinny is the client without the server; the newest needs importlib-metadata < 10, which
    # the Unsloth image's pins exclude.
    "mlflow": Tracker("mlflow", "mlflow-skinny", "MLFLOW_EXPERIMENT_NAME", "mlflow-secret", ("MLFLOW_TRACKING_URI",),
                      False),
    # Writes event files into the job's folder (TENSORBOARD_LOGGING_DIR): nothing to log in to.
    "tensorboard": Tracker("tensorboard", "tensorboard", None, None, (), True),
    # Logs locally (or to a Hugging Face Space with TRACKIO_SPACE_ID, which needs HF_TOKEN); the newest needs
    # pillow < 13, which the Unsloth image pins.
    "trackio": Tracker("trackio", "trackio", None, None, (), False),
}


def trackers(recipe: Recipe) -> list[str]:
    return list(recipe.output.report_to)


def missing_packages(recipe: Recipe) -> list[str]:
    """Trackers whose package this Python cannot import (checked without importing them)."""
    return [TRACKERS[t].package for t in trackers(recipe) if importlib.util.find_spec(TRACKERS[t].module) is None]


def missing_message(recipe: Recipe, missing: list[str]) -> str:
    return (f"output.report_to {', '.join(trackers(recipe))}: this Python has no {', '.join(missing)}; install it "
            f"(pip install {' '.join(missing)}) or remove it from output.report_to. Nothing was started.")


def trainer_args(recipe: Recipe) -> dict:
    """The TrainingArguments fields the trackers read: which callbacks, the run's name, the project."""
    args: dict = {"report_to": trackers(recipe)}
    if recipe.name:
        args["run_name"] = recipe.name
    if recipe.output.project:
        args["project"] = recipe.output.project  # Trackio's project (TrainingArguments.project)
    return args


def environment(recipe: Recipe, out: str | Path) -> dict[str, str]:
    """Variables the callbacks read, to set where the user has not set them already."""
    env: dict[str, str] = {}
    for name in trackers(recipe):
        t = TRACKERS[name]
        if t.project_env and recipe.output.project:
            env[t.project_env] = recipe.output.project
    if "tensorboard" in trackers(recipe):
        env["TENSORBOARD_LOGGING_DIR"] = str(Path(out) / "tensorboard")
    return env
