"""A loopback Together AI fine-tuning API (127.0.0.1 only), written from the published OpenAPI spec.

Endpoints: /files, /files/upload, /fine-tunes (create, list), /fine-tunes/estimate-price,
/fine-tunes/{id} (+ /events, /checkpoints, /cancel), /fine-tunes/models/limits, /finetune/download.
Every JSON request body is validated against the spec (400 with the spec's ErrorData when it
does not conform). Jobs advance one state per GET of the job: pending -> queued -> running
(steps, a checkpoint) -> completed, emitting the spec's event types. Faults can be injected:
status storms with retry-after, a dropped connection mid-upload, a create whose answer is lost,
a slow endpoint, a job that fails.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

from loopback import BaseHandler, BaseState, Fault, LoopbackServer, parse_multipart  # noqa: F401
from spec import component, errors

STATES = ["pending", "queued", "running", "running", "running", "uploading", "completed"]


@dataclass
class State(BaseState):
    files: dict = field(default_factory=dict)
    jobs: dict = field(default_factory=dict)
    events: dict = field(default_factory=dict)
    created: int = 0
    fail_jobs: bool = False
    # What GET /finetune/download serves per checkpoint type; Together's docs: "This command will download
    # ZSTD compressed weights of the model. To extract the weights, run `tar -xf filename`."
    archives: dict = field(default_factory=lambda: {"adapter": zstd_tar({"adapter_config.json": b"{}"}),
                                                    "merged": zstd_tar({"config.json": b"{}"}),
                                                    "model_output_path": zstd_tar({"config.json": b"{}"})})
    downloads: list = field(default_factory=list)  # (ft_id, checkpoint) of every download served
    price_nanodollars: int = 2_500_000_000  # total_price is in nanodollars (together.utils.finetune_price_to_dollars)
    limits: dict = field(default_factory=lambda: {
        "model_name": "", "max_num_epochs": 20, "max_num_evals": 100, "max_learning_rate": 1.0,
        "min_learning_rate": 1e-8, "supports_vision": False, "supports_tools": False, "supports_reasoning": False,
        "merge_output_lora": True,
        "full_training": {"max_batch_size": 96, "max_batch_size_dpo": 48, "min_batch_size": 8},
        "lora_training": {"max_batch_size": 128, "max_batch_size_dpo": 64, "min_batch_size": 8, "max_rank": 64,
                          "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"]}})


def zstd_tar(files: dict[str, bytes], folder: str = "") -> bytes:
    """A zstd-compressed tar of `files` (name -> bytes), optionally under one top-level folder."""
    import io
    import tarfile

    import zstandard

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}" if folder else name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor().compress(raw.getvalue())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _event(kind: str, message: str, **kw) -> dict:
    e = {"object": "fine-tune-event", "created_at": _now(), "level": "info", "message": message, "type": kind,
         "param_count": 0, "token_count": 0, "total_steps": 0, "wandb_url": "", "step": 0, "checkpoint_path": "",
         "model_path": "", "training_offset": 0, "hash": uuid.uuid4().hex}
    e.update(kw)
    return e


class Handler(BaseHandler):
    state: State
    spec_name = "together"

    def handle_one(self) -> None:
        s = self.state
        handled, fault = self.pre()
        if handled:
            return
        url = urlparse(self.path)
        path, query = url.path.removeprefix("/v1"), parse_qs(url.query)
        route = (self.command, path)
        if route == ("GET", "/files"):
            return self.send_json(200, {"data": [{k: v for k, v in f.items() if not k.startswith("_")}
                                             for f in s.files.values()], "object": "list"})
        if route == ("POST", "/files/upload"):
            fields = parse_multipart(self.body(), self.headers.get("Content-Type", ""))
            missing = [f for f in ("purpose", "file_name", "file") if f not in fields]
            if missing or fields.get("purpose") != b"fine-tune":
                s.invalid.append((path, missing))
                return self.send_error_body(400, f"missing or bad multipart fields: {missing or 'purpose'}")
            fid = "file-" + uuid.uuid4().hex[:20]
            s.files[fid] = {"id": fid, "object": "file", "created_at": int(time.time()),
                            "filename": fields["file_name"].decode(), "bytes": len(fields["file"]),
                            "purpose": "fine-tune", "FileType": fields.get("file_type", b"jsonl").decode(),
                            "Processed": True, "LineCount": fields["file"].count(b"\n")}
            s.files[fid]["_content"] = fields["file"]
            return self.send_json(200, {k: v for k, v in s.files[fid].items() if not k.startswith("_")})
        if route == ("GET", "/fine-tunes/models/limits"):
            if "model_name" not in query:
                return self.send_error_body(400, "model_name is required")
            return self.send_json(200, {**s.limits, "model_name": query["model_name"][0]})
        if route == ("POST", "/fine-tunes/estimate-price"):
            body = self.json_body("/fine-tunes/estimate-price")
            if body is None:
                return
            f = s.files.get(body["training_file"])
            if f is None:
                return self.send_error_body(404, f"file {body['training_file']} not found")
            tokens = f["bytes"] // 4 * body.get("n_epochs", 1)
            return self.send_json(200, {"estimated_total_price": round(tokens / 1e6 * 0.48, 6),
                                        "allowed_to_proceed": True, "user_limit": 100.0,
                                        "estimated_train_token_count": tokens, "estimated_eval_token_count": 0})
        if route == ("POST", "/fine-tunes"):
            body = self.json_body("/fine-tunes", optional=("model",) if "from_checkpoint" in self._peek() else ())
            if body is None:
                return
            sent = dict(body)
            if "from_checkpoint" in body:
                parent = body["from_checkpoint"].split(":")[0]
                if parent not in s.jobs:
                    return self.send_error_body(400, f"from_checkpoint {body['from_checkpoint']}: no such job")
                body = {**body, "model": s.jobs[parent]["model"]}
            if body["training_file"] not in s.files:
                return self.send_error_body(400, f"training_file {body['training_file']} does not exist")
            jid = "ft-" + uuid.uuid4().hex[:24]
            with s.lock:
                s.created += 1
                s.jobs[jid] = {"id": jid, "status": "pending", "created_at": _now(), "updated_at": _now(),
                               "model": body["model"], "suffix": body.get("suffix"), "training_file":
                               body["training_file"], "n_epochs": body.get("n_epochs", 1),
                               "model_output_name": f"user/{body['model'].split('/')[-1]}-{body.get('suffix')}",
                               "token_count": 0, "total_price": 0, "_step": 0, "_body": sent,
                               "_training_type": body.get("training_type") or {"type": "Lora"}}
                s.events[jid] = [_event("job_pending", "Fine tune request created")]
            if fault and fault.drop and fault.after:
                return self.drop()  # the job exists, the answer is lost
            return self.send_json(200, self._job(jid))
        if route == ("GET", "/fine-tunes"):
            return self.send_json(200, {"data": [self._job(j) for j in s.jobs]})
        m = re.fullmatch(r"/fine-tunes/(ft-[0-9a-f]+)(/events|/checkpoints|/cancel)?", path)
        if m:
            jid, sub = m.group(1), m.group(2)
            if jid not in s.jobs:
                return self.send_error_body(404, f"fine-tune job {jid} not found", code="not_found")
            if sub == "/events":
                return self.send_json(200, {"data": s.events[jid]})
            if sub == "/checkpoints":
                return self.send_json(200, {"data": [{"step": e["step"], "created_at": e["created_at"],
                                                  "path": e["checkpoint_path"], "checkpoint_type": "Intermediate"}
                                                 for e in s.events[jid] if e["type"] == "checkpoint_save"]})
            if sub == "/cancel" and self.command == "POST":
                job = s.jobs[jid]
                if job["status"] not in ("completed", "cancelled", "error"):
                    job["status"] = "cancel_requested"
                    s.events[jid].append(_event("cancel_requested", "Cancel requested"))
                return self.send_json(200, self._job(jid))
            if self.command == "GET" and sub is None:
                self._advance(jid)
                return self.send_json(200, self._job(jid))
        if route == ("GET", "/finetune/download"):
            jid = (query.get("ft_id") or [""])[0]
            if jid not in s.jobs:
                return self.send_error_body(404, "fine-tune not found")
            if s.jobs[jid]["status"] != "completed":
                return self.send_error_body(400, "the job has not completed")
            kind = (query.get("checkpoint") or [""])[0]
            full = s.jobs[jid]["_training_type"].get("type") == "Full"
            # The SDK: full fine-tunes download checkpoint=model_output_path; LoRA ones merged or adapter.
            if (full and kind != "model_output_path") or (not full and kind not in ("adapter", "merged")):
                return self.send_error_body(400, f"checkpoint={kind!r} is not available for this "
                                            f"{'full' if full else 'LoRA'} fine-tune")
            s.downloads.append((jid, kind))
            if fault and fault.drop and fault.after:  # a body cut off half way
                data = s.archives[kind]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                return self.drop()
            return self.send_json(200, s.archives[kind])
        return self.send_error_body(404, f"no route {self.command} {path}")

    def _job(self, jid: str) -> dict:
        return {k: v for k, v in self.state.jobs[jid].items() if not k.startswith("_")}

    def _advance(self, jid: str) -> None:
        s = self.state
        job, evs = s.jobs[jid], s.events[jid]
        if job["status"] == "cancel_requested":
            job["status"] = "cancelled"
            evs.append(_event("job_stopped", "Job cancelled"))
            return
        if job["status"] in ("completed", "cancelled", "error"):
            return
        job["_step"] += 1
        st = STATES[min(job["_step"], len(STATES) - 1)]
        if s.fail_jobs and st == "running" and job["_step"] == 3:
            job["status"] = "error"
            evs.append(_event("job_error", "Training failed: CUDA error (injected)", level="error"))
            return
        if st == "queued":
            evs.append(_event("job_start", "Job started"))
        if st == "running":
            step = job["_step"] - 2
            evs.append(_event("training_start" if step == 1 else "epoch_complete", f"step {step}", step=step,
                              total_steps=3, token_count=1000 * step))
            if step == 2:
                evs.append(_event("checkpoint_save", "Checkpoint saved", step=2, checkpoint_path=f"s3://ckpt/{jid}/2"))
        if st == "uploading":
            evs.append(_event("model_uploading", "Uploading model"))
        if st == "completed":
            evs.append(_event("job_complete", "Job completed"))
            job["total_price"] = s.price_nanodollars
            job["token_count"] = 3000
        job["status"] = st
        job["updated_at"] = _now()


class TogetherServer(LoopbackServer):
    handler = Handler

    def __init__(self, key: str = "tg-test-key-0123456789"):
        super().__init__(State(key=key))

    def response_problems(self) -> list[str]:
        """Check the server's own job and event objects against the spec (the fake must be faithful)."""
        out = []
        for jid, job in self.state.jobs.items():
            out += errors("together", component("together", "FinetuneResponseTruncated"),
                          {k: v for k, v in job.items() if not k.startswith("_")})
            out += errors("together", component("together", "FinetuneListEvents"), {"data": self.state.events[jid]})
        for f in self.state.files.values():
            out += errors("together", component("together", "FileResponse"),
                          {k: v for k, v in f.items() if not k.startswith("_") and k != "LineCount"})
        return out
