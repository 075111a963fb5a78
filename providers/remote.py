"""What the managed-API providers share: a per-job lock and turning remote state into ftplan events once.

Remote events are keyed (the provider's event id, or a hash of their fields); the keys already
written live in the job's provider ids, and the whole poll runs under a file lock, so two CLIs
following the same job never write an event twice.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from ftplan.recipes.events import EventWriter


@contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def poll_into_events(store, job: dict, *, backend: str, reason: str,
                     fetch: Callable[[dict], tuple[dict, list[dict]]], key: Callable[[dict], str],
                     translate: Callable[[dict], tuple[str, dict]], terminal: dict[str, str],
                     final_fields: Callable[[dict, dict], dict]) -> None:
    """Fetch the remote job and its events (oldest first) and append the new ones to the events file."""
    events_path = Path(job["events_path"])
    with locked(events_path.with_suffix(".lock")):
        job = store.get(job["id"])
        ids = job["provider_ids"]
        if ids.get("final_emitted"):
            return
        remote, remote_events = fetch(ids)
        seen = set(ids.get("seen", []))
        writer = EventWriter(events_path)
        try:
            if not ids.get("started_emitted"):
                writer.emit("started", objective=ids.get("objective"), adapter=ids.get("adapter"), backend=backend,
                            backend_reason=reason, device="remote", remote_id=remote.get("id"),
                            remote_status=remote.get("status"))
                ids["started_emitted"] = True
            for e in remote_events:
                k = key(e)
                if k in seen:
                    continue
                seen.add(k)
                kind, fields = translate(e)
                writer.emit(kind, **fields)
            status = remote.get("status")
            if status in terminal:
                if terminal[status] == "failed":
                    err = remote.get("error")
                    msg = err.get("message") if isinstance(err, dict) and err.get("message") else None
                    writer.emit("failed", error=msg or f"{backend} job {remote.get('id')} ended with status {status}",
                                remote_id=remote.get("id"))
                else:
                    writer.emit("finished", status=terminal[status], remote_id=remote.get("id"),
                                **final_fields(remote, ids))
                ids["final_emitted"] = True
        finally:
            writer.close()
        ids["seen"] = sorted(seen)
        ids["remote_status"] = remote.get("status")
        store.update(job["id"], provider_ids=ids)
