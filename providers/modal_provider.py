"""Run a recipe on Modal: the provider adapter, and the few calls ftplan makes to Modal's service.

`ModalService` is the only code that talks to Modal (upload to a Volume, start the app, read the
job's files, ask a call's state, request a stop, tail a call's log, download outputs); everything
else here is translation between ftplan's job and what the app in `modal_app` does. Tests put a
stand-in service in its place that runs the same app's function bodies through `.local()`.

Polling survives faults: a network error or an expired token is a warning and the job is polled
again; only a terminal call state (after Modal's own retries) or the program's final event ends
the job. A failed attempt that Modal retries is shown as such ("attempt 2, resumed from ...").
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import yaml

from ftplan.recipes import preflight
from ftplan.recipes.schema import Recipe
from ftplan.sizing.errors import FtplanError

from . import modal_app
from .base import Job, Quote, TransientError

TERMINAL_PROGRAM = ("finished",)


def check_auth(env: dict | None = None) -> None:
    """Installed and authenticated, before anything is uploaded; the fix in the message otherwise."""
    env = os.environ if env is None else env
    try:
        import modal  # noqa: F401
    except ImportError:
        raise FtplanError("Modal is not installed: pip install 'ftplan[modal]', then `modal token new`.") from None
    if env.get("MODAL_TOKEN_ID") and env.get("MODAL_TOKEN_SECRET"):
        return
    config = Path(env.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")
    if not config.is_file() or "token_id" not in config.read_text():
        raise FtplanError("Modal is not authenticated: run `modal token new` (or set MODAL_TOKEN_ID and "
                          "MODAL_TOKEN_SECRET). Nothing was uploaded.")


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def local_inputs(recipe: Recipe) -> tuple[dict, dict[str, Path]]:
    """(the recipe as the container reads it, {path on the data Volume: local file or folder}).

    Every local input the recipe names goes up by content hash: data, eval data, golden set, a local
    model folder, a local teacher, the adapters a merge combines. Hub ids stay for the container to fetch.
    """
    data = recipe.model_dump(mode="json")
    files: dict[str, Path] = {}

    def put(value: str | None) -> str | None:
        if not value or not Path(value).exists():
            return value
        p = Path(value).resolve()
        key = f"{_hash(p)}/{p.name}"
        files[key] = p
        return f"/data/{key}"

    if data.get("data"):
        data["data"]["path"] = put(data["data"]["path"])
        data["data"]["eval_path"] = put(data["data"].get("eval_path"))
    data["eval"]["golden"] = put(data["eval"].get("golden"))
    data["model"] = put(data["model"])
    data["method"]["teacher"] = put(data["method"].get("teacher"))
    if data["method"].get("merge"):
        data["method"]["merge"]["adapters"] = [put(a) for a in data["method"]["merge"]["adapters"]]
    return data, files


class ModalService:
    """Every call to Modal's service, through the real SDK (never exercised without a Modal account)."""

    def check_auth(self) -> None:
        check_auth()

    def secret_exists(self, name: str) -> bool:
        import modal

        try:
            modal.Secret.from_name(name).hydrate()
        except modal.exception.NotFoundError:
            return False
        return True

    def upload(self, files: dict[str, Path]) -> None:
        import modal

        vol = modal.Volume.from_name(modal_app.VOLUMES["/data"], create_if_missing=True)
        missing = {}
        for key, local in files.items():
            try:
                vol.listdir(key)
            except Exception:  # noqa: BLE001 - not there yet
                missing[key] = local
        if missing:
            with vol.batch_upload() as batch:
                for key, local in missing.items():
                    (batch.put_directory if local.is_dir() else batch.put_file)(str(local), key)

    def launch(self, spec: modal_app.ModalSpec, job: dict) -> dict:
        import modal

        app, conduct, train = modal_app.build_app(spec)
        with modal.enable_output(), app.run(detach=True):
            call = conduct.spawn(job, train)
            return {"conduct_call": call.object_id, "app_id": app.app_id,
                    "dashboard": f"https://modal.com/id/{app.app_id}"}

    def read(self, path: str) -> bytes | None:
        import modal

        vol = modal.Volume.from_name(modal_app.VOLUMES["/outputs"])
        try:
            return b"".join(vol.read_file(path))
        except modal.exception.NotFoundError:
            return None
        except (modal.exception.ConnectionError, modal.exception.AuthError, OSError) as exc:
            raise TransientError(f"Modal Volume read failed: {exc}") from None

    def call_state(self, call_id: str) -> tuple[str, object]:
        """("running" | "succeeded" | "failed" | "cancelled", the result or the error text)."""
        import modal

        try:
            return "succeeded", modal.FunctionCall.from_id(call_id).get(timeout=0)
        except TimeoutError:
            return "running", None
        except (modal.exception.ConnectionError, modal.exception.AuthError, OSError) as exc:
            raise TransientError(f"Modal could not be asked about call {call_id}: {exc}") from None
        except modal.exception.InputCancellation as exc:
            return "cancelled", str(exc)
        except Exception as exc:  # noqa: BLE001 - the call ended with an error after its retries
            return "failed", f"{type(exc).__name__}: {exc}"

    def request_stop(self, job_id: str) -> None:
        import modal

        modal.Dict.from_name(modal_app.CONTROL, create_if_missing=True)[job_id] = "stop"

    def log_tail(self, call_id: str, entries: int = 20) -> list[str]:
        import modal

        return [e.message.rstrip() for e in modal.FunctionCall.from_id(call_id).logs.tail(entries=entries)]

    def download(self, job_id: str, dest: Path, *, checkpoints: bool = False) -> None:
        import modal

        vol = modal.Volume.from_name(modal_app.VOLUMES["/outputs"])
        for entry in vol.iterdir(job_id, recursive=True):
            rel = Path(entry.path).relative_to(job_id)
            if entry.type.name != "FILE" or not _wanted(rel, checkpoints):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            with part.open("wb") as fh:
                vol.read_file_into_fileobj(entry.path, fh)
            part.replace(target)


def _wanted(rel: Path, checkpoints: bool) -> bool:
    """What `pull` fetches: outputs and the manifest; never the events file poll keeps; checkpoints on request."""
    top = rel.parts[0]
    if top in ("adapter", "model", "merged"):
        return True
    if top == "checkpoints":
        return checkpoints
    return rel.name in ("manifest.json", "calls.json")


def service() -> ModalService:
    return ModalService()


class ModalProvider:
    name = "modal"
    summary = "Modal GPUs, billed per second"
    has_outputs = True

    def __init__(self, svc: ModalService | None = None):
        self.svc = svc or service()
        self.spec: modal_app.ModalSpec | None = None

    def check_ready(self, recipe: Recipe) -> None:
        preflight.check(recipe)  # what the program would refuse in the container, refused before any upload
        self.svc.check_auth()
        name = modal_app.spec_secret(recipe)
        if name and not self.svc.secret_exists(name):
            raise FtplanError(f"Modal has no secret {name!r}, which {recipe.model} needs for its HF_TOKEN: create it "
                              f"with `modal secret create {name} HF_TOKEN=hf_...` (or name yours in "
                              "providers.modal.hf_secret). Nothing was uploaded.")
        for tracker in recipe.output.report_to:
            secret, keys = modal_app.tracker_secret(recipe, tracker) or (None, ())
            if secret and not self.svc.secret_exists(secret):
                raise FtplanError(f"output.report_to {tracker}: Modal has no secret {secret!r} to carry "
                                  f"{', '.join(keys)} into the job: create it with `modal secret create {secret} "
                                  f"{keys[0]}=...` (or name yours in providers.modal.{tracker}_secret). Nothing was "
                                  "uploaded.")

    def quote(self, recipe: Recipe, plan: dict | None) -> Quote:
        spec = self.spec = modal_app.spec_for(recipe, plan)
        hours = spec.hours
        usd = spec.usd_per_hour * hours if hours is not None else None
        lines = [modal_app.describe(spec)]
        if hours is not None:
            lines.append(f"Plan on Modal: {spec.gpus} x {spec.gpu_name}, ~{hours:,.2f} h, ~${usd:,.2f} at "
                         f"${spec.usd_per_hour:,.2f}/h (per second, start-up included).")
        lines += spec.notes
        region = f", region {spec.region}" if spec.region else ""
        return Quote(usd, f"ftplan's plan: {spec.gpus} x {spec.gpu_name} on Modal at ${spec.usd_per_hour:,.2f}/h "
                     f"(GPU, CPU and memory{region})", spec.usd_per_hour, hours, lines)

    def submit(self, job: Job, quote: Quote) -> dict:
        return self._launch(job, [])

    def resume(self, job: Job, previous: Job, quote: Quote) -> dict:
        from ftplan.recipes.events import read_events

        pairs, _ = read_events(previous.events_path)
        if not any(e.get("type") == "checkpoint" for _, e in pairs):
            raise FtplanError(f"job {previous.id} recorded no checkpoint on Modal; there is nothing to resume. Run the "
                              "recipe without --resume.")
        job.options.checkpoint_dirs = [f"/outputs/{previous.id}/checkpoints", *previous.options.checkpoint_dirs]
        return self._launch(job, job.options.checkpoint_dirs)

    def _launch(self, job: Job, resume_dirs: list[str]) -> dict:
        spec = self.spec or modal_app.spec_for(job.recipe, job.plan)
        recipe, files = local_inputs(job.recipe)
        self.svc.upload(files)
        args = {"id": job.id, "recipe_yaml": yaml.safe_dump(recipe), "usd_per_hour": spec.usd_per_hour,
                "segment_seconds": spec.segment_seconds, "resume_dirs": resume_dirs,
                "skip_eval": job.options.skip_eval, "golden_sha256": job.options.golden_sha256,
                "hub_model": None if recipe["model"].startswith("/data/") else recipe["model"]}
        launched = self.svc.launch(spec, args)
        return {**launched, "gpu": spec.gpu, "gpus": spec.gpus, "nodes": spec.nodes, "usd_per_hour": spec.usd_per_hour,
                "retries": spec.retries, "uploaded": sorted(files)}

    # --- following the job ----------------------------------------------------------------------

    def _current_call(self, job: Job) -> tuple[str, str]:
        raw = self.svc.read(f"{job.id}/calls.json")
        calls = json.loads(raw) if raw else []
        if calls:
            job.state["calls"] = calls
            return calls[-1]["call_id"], f"segment {calls[-1]['segment']}"
        return job.state["conduct_call"], "weights download"

    def poll(self, job: Job) -> list[dict]:
        if not job.state.get("conduct_call"):
            return []
        offset = job.state.get("remote_offset", 0)
        raw = self.svc.read(f"{job.id}/events.jsonl") or b""
        end = raw.rfind(b"\n") + 1
        lines = raw[offset:end].splitlines() if end > offset else []
        job.state["remote_offset"] = max(offset, end)
        call_id, stage = self._current_call(job)
        state, detail = self.svc.call_state(call_id)
        out: list[dict] = []
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            out += self._translate(job, e, state)
        if job.state.get("final"):
            self._keep_log_tail(job, call_id)
            return out
        if state == "failed":
            error = job.state.get("last_error") or detail
            out.append({"type": "failed", "error": f"Modal call {call_id} ({stage}) failed after its retries: {error}",
                        "kind": "modal"})
            job.state["final"] = True
        elif state == "cancelled":
            out.append({"type": "finished", "status": "cancelled", "reason": "the Modal call was cancelled"})
            job.state["final"] = True
        elif state == "succeeded" and isinstance(detail, dict) and detail.get("status") not in ("spawned", "segment"):
            out.append({"type": "failed", "error": f"the Modal call {call_id} ended ({detail.get('status')}) "
                        "without the program's final event", "kind": "modal"})
            job.state["final"] = True
        if job.state.get("final"):
            self._keep_log_tail(job, call_id)
        return out

    def _keep_log_tail(self, job: Job, call_id: str) -> None:
        """The container's last log lines, kept with the job: `status` and `logs` show them offline later."""
        try:
            job.state["log_tail"] = self.svc.log_tail(call_id, 20)
        except Exception as exc:  # noqa: BLE001 - the tail is a convenience; the dashboard link stays
            job.state["log_tail"] = [f"(the container log could not be fetched: {exc})"]

    def _bill(self, job: Job, e: dict, kind: str) -> None:
        """GPU seconds across attempts and segments: each program only knows its own attempt's time."""
        st, t = job.state, e.get("time")
        if not isinstance(t, (int, float)):
            return
        if kind == "started":
            if st.get("attempt_began") is not None:
                st["billed_seconds"] = st.get("billed_seconds", 0.0) + st.get("last_time", t) - st["attempt_began"]
            st["attempt_began"] = t
        st["last_time"] = t
        if kind == "finished" and st.get("attempt_began") is not None:
            billed = st.get("billed_seconds", 0.0) + t - st["attempt_began"]
            e["usd"] = round(billed * st.get("usd_per_hour", 0.0) / 3600, 4)
            e["billed_seconds"] = round(billed, 1)

    def _translate(self, job: Job, e: dict, call_state: str) -> list[dict]:
        """The program's events, except that a failed attempt Modal will retry is not the job's end."""
        kind = e.pop("type", "log")
        self._bill(job, e, kind)
        if kind == "started":
            n = job.state["attempts"] = job.state.get("attempts", 0) + 1
            if n > 1:
                where = e.get("resumed_from") or "the start"
                return [{"type": "log", "level": "warning", "message": f"attempt {n} of this job on Modal (after a "
                         f"preemption, timeout or crash), resumed from {where}"}, {"type": kind, **e}]
        if kind == "log" and e.get("kind") == "segment_end":
            job.state["attempts"] = 0
        if kind == "failed":
            job.state["last_error"] = e.get("error")
            if e.get("kind") != "input" and call_state != "failed":
                return [{"type": "log", "level": "warning", "message": f"attempt failed ({e.get('error')}); Modal "
                         "retries it from the last complete checkpoint"}]
            job.state["final"] = True
        if kind == "finished":
            job.state["final"] = True
        return [{"type": kind, **e}]

    def cancel(self, job: Job) -> None:
        """Ask the program to checkpoint and stop at its next step (through the control Dict)."""
        self.svc.request_stop(job.id)

    def fetch_outputs(self, job: Job, dest: Path, checkpoints: bool = False) -> Path | None:
        """The adapter or model and the manifest from the outputs Volume; checkpoints only when asked."""
        for attempt in range(3):
            try:
                self.svc.download(job.id, dest, checkpoints=checkpoints)
                break
            except TransientError:
                if attempt == 2:
                    raise
                time.sleep(2 ** attempt)
        for name in ("adapter", "model", "merged"):
            if (dest / name).is_dir():
                return dest / name
        raise FtplanError(f"no adapter or model folder in Modal's outputs for job {job.id}.")

    def log_tail(self, job: Job, entries: int = 20) -> tuple[list[str], str | None]:
        """(the container's last log lines, the Modal dashboard link); kept lines once the job is final."""
        if "log_tail" in job.state:
            lines = job.state["log_tail"][-entries:]
        else:
            call_id, _ = self._current_call(job)
            lines = self.svc.log_tail(call_id, entries)
        return lines, job.state.get("dashboard")
