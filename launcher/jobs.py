"""A job after it starts, the same for every provider: events in, status out, cancel, outputs, records.

There is no daemon: every command that looks at a running job (`run` attached, `status`, `logs`,
`jobs`) first asks its provider for news (`poll`), appends what the provider learned to the job's
own events file, and ingests that file into the store. The whole step runs under a lock file in
the job's folder, so two CLIs following one job never write or store an event twice. Events are
keyed by their byte offset in the job's own file: they can only ever belong to that job.

A job that has reached a final status is answered from the store alone (no key, no network), and
its record never changes again; `job.json` in its folder mirrors the final record, so a lost or
damaged store can be rebuilt (`ftplan jobs --import DIR`).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftplan.providers import registry
from ftplan.providers.base import Job, RunOptions, TransientError
from ftplan.recipes.events import EventWriter, read_events
from ftplan.sizing.errors import FtplanError

from .jobstore import TERMINAL, FinalRecordError, JobStore

RECORD = "job.json"


@contextmanager
def job_lock(folder: Path) -> Iterator[None]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(folder / ".ftplan.lock", "a")  # closed by the `with` below, after the lock is released
    except OSError as exc:
        raise FtplanError(f"the job folder {folder} cannot be used ({exc.strerror or exc}): it was moved, deleted or "
                          "made unwritable. Put it back, or `ftplan jobs --import DIR` from where it now is.") from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def view(record: dict) -> Job:
    """The provider's view of a stored job."""
    from ftplan.recipes.schema import load_recipe

    folder = Path(record["output_dir"])
    recipe_path = folder / "recipe.yaml"
    job = Job(id=record["id"], provider=record["provider"], folder=folder, recipe_path=recipe_path, recipe=None,
              plan=record.get("plan"), options=RunOptions(**(record.get("options") or {})),
              state=dict(record.get("provider_ids") or {}), events_offset=record.get("events_offset") or 0,
              resumed_from=record.get("resumed_from"))
    if recipe_path.is_file():
        job.recipe = load_recipe(recipe_path)
    return job


def write_record(store: JobStore, job_id: str) -> dict:
    """Mirror the job's record into its folder (done at creation and when it becomes final)."""
    record = store.get(job_id)
    folder = Path(record["output_dir"])
    tmp = folder / f"{RECORD}.{os.getpid()}.tmp"  # two CLIs mirroring at once never share a half-written file
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record, indent=2, default=str))
        tmp.replace(folder / RECORD)
    except OSError:
        pass  # the store keeps the record; the mirror is a convenience for rebuilding
    return record


def apply(store: JobStore, job: dict, events: list[dict]) -> dict:
    """Status, actuals and error that these new events imply; a final status is written once."""
    changes: dict = {}
    for e in events:
        kind = e.get("type")
        if kind == "started" and job["status"] in ("created", "submitted", "queued"):
            changes["status"] = "running"
        elif kind == "finished":
            changes["status"] = e.get("status", "completed")
            changes["actuals"] = {k: v for k, v in e.items() if k not in ("type", "time", "status")}
            if isinstance(changes["actuals"].get("eval"), dict):
                changes["eval"] = changes["actuals"]["eval"]
            break
        elif kind == "failed":
            changes["status"] = "failed"
            changes["error"] = e.get("error")
            break
    if not changes:
        return job
    store.update(job["id"], **changes)
    job = store.get(job["id"])
    if job["status"] in TERMINAL:
        write_record(store, job["id"])
        _record_speed(job)
    return job


def _record_speed(job: dict) -> None:
    """Predicted vs actual for a finished local GPU run: what `ftplan estimate` corrects its speed with."""
    from . import speedlog

    local = (job.get("plan") or {}).get("local") or {}
    actual = job.get("actuals") or {}
    if job["status"] == "completed" and local.get("gpu") and actual.get("tokens_per_second"):
        speedlog.record(local["gpu"], job["id"], local.get("tokens_per_second"), actual["tokens_per_second"],
                        local.get("per_gpu_bytes"), actual.get("peak_memory_bytes"))


def append_events(path: Path, events: list[dict]) -> None:
    writer = EventWriter(path)
    try:
        for e in events:
            fields = {k: v for k, v in e.items() if k != "type"}
            writer.emit(e["type"], **fields)
    finally:
        writer.close()


def sync(store: JobStore, job_id: str) -> tuple[dict, list[dict], str | None]:
    """(job, its new events in order, a warning when the provider could not be asked this time)."""
    job = store.get(job_id)
    if job["status"] in TERMINAL or not job.get("output_dir"):
        return job, [], None
    folder = Path(job["output_dir"])
    warning = None
    with job_lock(folder):
        job = store.get(job["id"])
        if job["status"] in TERMINAL:
            return job, [], None
        provider = registry.get(job["provider"])
        v = view(job)
        before = dict(v.state)
        news: list[dict] = []
        try:
            news = provider.poll(v)
        except TransientError as exc:
            warning = f"could not reach {job['provider']} this time ({exc}); the job is still followed"
        except FtplanError as exc:  # e.g. a key removed since: the job is not over, it just cannot be seen
            warning = f"could not ask {job['provider']} for news: {exc}"
        if news:
            append_events(v.events_path, news)
        if v.state != before:
            store.update(job["id"], provider_ids=v.state)
        pairs, offset = read_events(v.events_path, job["events_offset"])
        new = []
        if pairs:
            store.add_events(job["id"], pairs, offset)
            new = [e for _, e in pairs]
            job = apply(store, store.get(job["id"]), new)
    return job, new, warning


def cancel(store: JobStore, job_id: str, wait: float = 0.0, poll: float = 0.2) -> dict:
    """Ask the job to checkpoint and stop (the provider's way) and wait up to `wait` s for its final state."""
    job, _, _ = sync(store, job_id)
    if job["status"] in TERMINAL:
        raise FtplanError(f"job {job['id']} has already ended ({job['status']}); nothing to cancel.")
    registry.get(job["provider"]).cancel(view(job))
    try:
        store.update(job["id"], status="cancelling")
    except FinalRecordError:
        pass  # it ended on its own meanwhile
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        job, _, _ = sync(store, job["id"])
        if job["status"] in TERMINAL:
            break
        time.sleep(poll)
    return store.get(job["id"])


def pull(store: JobStore, job_id: str, checkpoints: bool = False) -> Path | None:
    """The job's outputs in its folder (downloaded if the provider keeps them); None when it keeps the model."""
    job, _, _ = sync(store, job_id)
    if job["status"] != "completed" and not (job["status"] == "blocked" and job["provider"] != "local"):
        raise FtplanError(f"job {job['id']} is {job['status']}: outputs exist once it has completed"
                          + (" (`ftplan logs JOB --follow` waits for it)." if job["status"] not in TERMINAL else "."))
    provider = registry.get(job["provider"])
    if not provider.has_outputs:
        return None
    v = view(job)
    extra = {}
    if checkpoints:
        import inspect

        if "checkpoints" not in inspect.signature(provider.fetch_outputs).parameters:
            raise FtplanError(f"{job['provider']} keeps no checkpoints to pull (job {job['id']}).")
        extra["checkpoints"] = True
    try:
        dest = provider.fetch_outputs(v, v.folder, **extra)
    except FtplanError as exc:
        store.update(job["id"], outputs={"error": str(exc), "at": time.time()})
        raise FtplanError(f"{exc} The job's outputs were not downloaded; `ftplan pull {job['id']}` tries "
                          "again.") from None
    if v.state != job["provider_ids"] and job["status"] not in TERMINAL:
        store.update(job["id"], provider_ids=v.state)
    store.update(job["id"], outputs={"path": str(dest) if dest else None, "at": time.time()})
    return dest


def write_loss_curve(store: JobStore, job: dict) -> Path | None:
    """`loss.svg` in the job's folder, beside the adapter: the loss by step from the job's events.

    Written for any provider whose events carry a loss (local, Modal; Together's do not), once the
    job has ended; a folder that cannot be written is not worth failing the run over.
    """
    points = [(int(e["step"]), float(e["loss"])) for e in store.events(job["id"])
              if e.get("type") == "step" and isinstance(e.get("loss"), (int, float)) and e.get("step") is not None]
    if len(points) < 2 or not job.get("output_dir"):
        return None
    from .plot import loss_svg

    path = Path(job["output_dir"]) / "loss.svg"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(loss_svg(points, f"{job.get('name') or job['id']}: training loss (job {job['id']})"),
                        encoding="utf-8")
    except OSError:
        return None
    return path


def outputs_path(job: dict) -> Path | None:
    """Where the job's adapter or model is on this machine (None until it has been written or pulled)."""
    done = (job.get("outputs") or {}).get("path")
    if done and Path(done).exists():
        return Path(done)
    folder = Path(job["output_dir"]) if job.get("output_dir") else None
    for name in ("adapter", "model"):
        if folder and (folder / name).is_dir():
            return folder / name
    return None


def import_folders(store: JobStore, root: Path) -> list[str]:
    """Put back into the store every job recorded under `root` (folders with job.json and events)."""
    added = []
    for record_path in sorted(root.glob("**/" + RECORD)):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or "id" not in record or "provider" not in record:
            continue
        record["output_dir"] = str(record_path.parent)
        record["events_offset"] = 0
        if store.insert_record(record):
            pairs, offset = read_events(record_path.parent / "events.jsonl", 0)
            store.add_events(record["id"], pairs, offset)
            added.append(record["id"])
    return added
