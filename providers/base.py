"""The one interface every place a job can run speaks: a `typing.Protocol`, not a base class.

A provider only translates between ftplan's job (its folder, recipe, plan and event vocabulary)
and one execution backend. It never plans, never asks the user, never touches the job store: the
run flow in `ftplan.launcher.flow` does that, the same way for every provider. Adding a provider
means writing one module with a class that has these methods and adding one line to
`ftplan.providers.registry`.

The calls, in the order the flow makes them:

- `check_ready(recipe)`: installed, logged in, keys present, within the provider's own limits;
  raises `FtplanError` with the fix. Nothing is uploaded or paid before it passes.
- `quote(recipe, plan)`: the price the user is asked to accept, with its source. May upload
  (free) when the provider can only price an uploaded file; never starts paid work.
- `submit(job)` -> provider ids (stored on the job), or `resume(job, previous)` for `--resume`:
  continue from the previous job's last checkpoint where the provider keeps one, else raise a
  clear refusal. Never a silent fresh start.
- `poll(job)` -> the events the provider learned about since the last poll, in ftplan's one event
  vocabulary (`ftplan.recipes.events.TYPES`), that are not yet in the job's events file. A run that
  writes the events file itself (the training program, locally) returns only what it could not
  write (a process that died without a final event). Transient errors raise `TransientError`:
  the job keeps running and the caller shows a warning.
- `cancel(job)`: ask the run to checkpoint and stop where the backend allows it.
- `fetch_outputs(job, dest)`: the adapter or model, unpacked in `dest`, ready for `ftplan eval`;
  None when the provider keeps the model on its side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from ftplan.recipes.schema import Recipe
from ftplan.sizing.errors import FtplanError


class TransientError(FtplanError):
    """The provider could not be reached or answered an error that may pass; the job is not over."""


@dataclass
class Quote:
    """The price a job is expected to cost before it starts, and where the number comes from."""

    usd: float | None
    source: str  # e.g. "ftplan plan: 1 x H100 on Modal at $4.2/h", "Together's /fine-tunes/estimate-price"
    usd_per_hour: float = 0.0  # what the running job costs per hour (0 for per-token APIs)
    hours: float | None = None
    lines: list[str] = field(default_factory=list)  # what to show beside the price
    state: dict = field(default_factory=dict)  # carried to submit (e.g. an uploaded file id)


@dataclass
class RunOptions:
    """What the user asked of this run beyond the recipe; stored with the job."""

    skip_eval: bool = False
    golden_sha256: str | None = None  # the golden set frozen when the run started
    usd_per_hour: float = 0.0
    checkpoint_dirs: list[str] = field(default_factory=list)  # resume: where earlier jobs' checkpoints are


@dataclass
class Job:
    """What a provider sees of a job: its own folder and events file, the recipe, its mutable state."""

    id: str
    provider: str
    folder: Path
    recipe_path: Path
    recipe: Recipe
    plan: dict | None
    options: RunOptions
    state: dict  # provider ids and bookkeeping; the flow stores it after every call
    events_offset: int = 0  # how far the job store has read the events file
    resumed_from: str | None = None

    @property
    def events_path(self) -> Path:
        return self.folder / "events.jsonl"


@runtime_checkable
class Provider(Protocol):
    name: str
    summary: str  # one line for `ftplan run --help`
    has_outputs: bool  # False when the model stays on the provider's side (OpenAI)

    def check_ready(self, recipe: Recipe) -> None: ...

    def quote(self, recipe: Recipe, plan: dict | None) -> Quote: ...

    def submit(self, job: Job, quote: Quote) -> dict: ...

    def resume(self, job: Job, previous: Job, quote: Quote) -> dict: ...

    def poll(self, job: Job) -> list[dict]: ...

    def cancel(self, job: Job) -> None: ...

    def fetch_outputs(self, job: Job, dest: Path) -> Path | None: ...
