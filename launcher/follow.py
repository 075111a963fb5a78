"""Keep the job store in step with a run's events file, and derive the job's status from its events.

There is no daemon: every command that looks at a job (`run` attached, `status`, `logs`, `jobs`)
first ingests whatever the events file gained. Events are keyed by their byte offset in the
file, so two CLIs ingesting at once store each event once.
"""

from __future__ import annotations

from ftplan.providers import local as local_provider
from ftplan.recipes.events import read_events

from .jobstore import TERMINAL, JobStore


def apply(store: JobStore, job: dict, events: list[dict]) -> dict:
    """Status, actuals and error that these new events imply."""
    changes: dict = {}
    for e in events:
        kind = e.get("type")
        if kind == "started" and job["status"] in ("created", "queued", "submitted"):
            changes["status"] = "running"
        elif kind == "finished":
            changes["status"] = e.get("status", "completed")
            changes["actuals"] = {k: v for k, v in e.items() if k not in ("type", "time", "status")}
            if isinstance(changes["actuals"].get("eval"), dict):
                changes["eval"] = changes["actuals"]["eval"]
        elif kind == "failed":
            changes["status"] = "failed"
            changes["error"] = e.get("error")
    if changes:
        store.update(job["id"], **changes)
        job = {**job, **changes}
    return job


def sync(store: JobStore, job_id: str) -> tuple[dict, list[dict]]:
    """Ingest new events of a local-file job; returns (job, the new events in order)."""
    job = store.get(job_id)
    path = job.get("events_path")
    if not path:
        return job, []
    if job["provider"] in ("together", "openai") and job["status"] not in TERMINAL and job["provider_ids"]:
        from ftplan.providers import openai_ft, together

        # The API's status and events, translated into the events file.
        (together if job["provider"] == "together" else openai_ft).poll(store, job)
        job = store.get(job["id"])
    if job["provider"] == "modal" and job["status"] not in TERMINAL and job["provider_ids"].get("function_call"):
        from ftplan.providers import modal_app

        modal_app.poll(store, job)  # the events file on the outputs Volume, copied here
    pairs, offset = read_events(path, job["events_offset"])
    new = []
    if pairs:
        store.add_events(job["id"], pairs, offset)
        new = [e for _, e in pairs]
        job = apply(store, store.get(job["id"]), new)
    pid = job["provider_ids"].get("pid")
    if job["provider"] == "local" and job["status"] not in TERMINAL and pid and not local_provider.alive(pid):
        # The process is gone without a final event (killed -9, out of memory): say so, keep the checkpoints.
        pairs, offset = read_events(path, job["events_offset"])
        if pairs:
            store.add_events(job["id"], pairs, offset)
            new += [e for _, e in pairs]
            job = apply(store, store.get(job["id"]), [e for _, e in pairs])
        if job["status"] not in TERMINAL:
            store.update(job["id"], status="failed", error="the training process exited without a final event "
                         "(killed or out of memory); its checkpoints are kept: ftplan run RECIPE --resume")
            job = store.get(job["id"])
    return job, new
