"""What the managed-API providers share: turning a remote job and its events into ftplan events, once each.

Remote events are keyed (the provider's event id, or a hash of their fields); the keys already
translated live in the job's state, which the run flow stores after every poll under the job's
lock, so two CLIs following the same job never produce an event twice.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import Job


def translate_remote(job: Job, remote: dict, remote_events: list[dict], *, backend: str, reason: str,
                     key: Callable[[dict], str], translate: Callable[[dict], tuple[str, dict]],
                     terminal: dict[str, str], final_fields: Callable[[dict, dict], dict],
                     failure: Callable[[dict, list[dict]], str] | None = None) -> list[dict]:
    """New ftplan events for this remote job state and its events (oldest first); updates `job.state`."""
    state = job.state
    out: list[dict] = []
    if not state.get("started_emitted"):
        out.append({"type": "started", "objective": state.get("objective"), "adapter": state.get("adapter"),
                    "backend": backend, "backend_reason": reason, "device": "remote", "remote_id": remote.get("id"),
                    "remote_status": remote.get("status"), "resumed_from": state.get("from_checkpoint")})
        state["started_emitted"] = True
    seen = set(state.get("seen", []))
    for e in remote_events:
        k = key(e)
        if k in seen:
            continue
        seen.add(k)
        kind, fields = translate(e)
        out.append({"type": kind, **fields})
    status = remote.get("status")
    if status in terminal:
        if terminal[status] == "failed":
            msg = failure(remote, remote_events) if failure else None
            out.append({"type": "failed", "remote_id": remote.get("id"),
                        "error": msg or f"{backend} job {remote.get('id')} ended with status {status}"})
        else:
            out.append({"type": "finished", "status": terminal[status], "remote_id": remote.get("id"),
                        **final_fields(remote, state)})
    state["seen"] = sorted(seen)
    state["remote_status"] = status
    return out

