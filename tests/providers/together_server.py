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

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from spec import component, errors, request_schema

STATES = ["pending", "queued", "running", "running", "running", "uploading", "completed"]


@dataclass
class Fault:
    method: str
    path: str  # regex matched against the path
    status: int | None = None  # answer this status (None: see `drop`/`delay`)
    times: int = 1
    retry_after: str | None = None
    drop: bool = False  # close the connection without an answer (after doing the work if `after`)
    after: bool = False  # do the real work first, then drop (a lost answer)
    delay: float = 0.0


@dataclass
class State:
    key: str
    files: dict = field(default_factory=dict)
    jobs: dict = field(default_factory=dict)
    events: dict = field(default_factory=dict)
    faults: list = field(default_factory=list)
    requests: list = field(default_factory=list)  # (method, path, status)
    invalid: list = field(default_factory=list)  # spec violations in requests
    created: int = 0
    fail_jobs: bool = False
    limits: dict = field(default_factory=lambda: {
        "model_name": "", "max_num_epochs": 20, "max_num_evals": 100, "max_learning_rate": 1.0,
        "min_learning_rate": 1e-8, "supports_vision": False, "supports_tools": False, "supports_reasoning": False,
        "merge_output_lora": True,
        "full_training": {"max_batch_size": 96, "max_batch_size_dpo": 48, "min_batch_size": 8},
        "lora_training": {"max_batch_size": 128, "max_batch_size_dpo": 64, "min_batch_size": 8, "max_rank": 64,
                          "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"]}})
    lock: threading.Lock = field(default_factory=threading.Lock)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _event(kind: str, message: str, **kw) -> dict:
    e = {"object": "fine-tune-event", "created_at": _now(), "level": "info", "message": message, "type": kind,
         "param_count": 0, "token_count": 0, "total_steps": 0, "wandb_url": "", "step": 0, "checkpoint_path": "",
         "model_path": "", "training_offset": 0, "hash": uuid.uuid4().hex}
    e.update(kw)
    return e


def _parse_multipart(body: bytes, ctype: str) -> dict:
    boundary = re.search(r"boundary=([^;]+)", ctype).group(1).strip('"').encode()
    fields = {}
    for part in body.split(b"--" + boundary):
        if b"\r\n\r\n" not in part:
            continue
        head, _, content = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head)
        if name:
            fields[name.group(1).decode()] = content[:-2] if content.endswith(b"\r\n") else content
    return fields


class Handler(BaseHTTPRequestHandler):
    state: State
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.state.requests.append((self.command, urlparse(self.path).path, status))

    def _error(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None):
        self._send(status, {"error": {"message": message, "type": type_, "param": None, "code": code}})

    def _fault(self) -> Fault | None:
        path = urlparse(self.path).path
        with self.state.lock:
            for f in self.state.faults:
                if f.times > 0 and f.method == self.command and re.fullmatch(f.path, path):
                    f.times -= 1
                    return f
        return None

    def _drop(self) -> None:
        self.state.requests.append((self.command, urlparse(self.path).path, None))
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _json_body(self, path: str) -> dict | None:
        raw = self._body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._error(400, "request body is not JSON")
            return None
        problems = errors("together", request_schema("together", path, "post"), body)
        if problems:
            self.state.invalid.append((path, problems))
            self._error(400, "; ".join(problems))
            return None
        return body

    def handle_one(self) -> None:
        s = self.state
        if self.headers.get("Authorization") != f"Bearer {s.key}":
            self._body()
            return self._error(401, "Invalid API key provided", "authentication_error", "invalid_api_key")
        fault = self._fault()
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and fault.status:
            self._body()
            headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
            return self._send(fault.status, {"error": {"message": f"injected {fault.status}", "type": "server_error",
                                                        "param": None, "code": None}}, headers)
        if fault and fault.drop and not fault.after:
            if self.command == "POST":
                self.rfile.read(min(64, int(self.headers.get("Content-Length") or 0)))  # part of the upload
            return self._drop()
        url = urlparse(self.path)
        path, query = url.path.removeprefix("/v1"), parse_qs(url.query)
        route = (self.command, path)
        if route == ("GET", "/files"):
            return self._send(200, {"data": [{k: v for k, v in f.items() if not k.startswith("_")}
                                             for f in s.files.values()], "object": "list"})
        if route == ("POST", "/files/upload"):
            fields = _parse_multipart(self._body(), self.headers.get("Content-Type", ""))
            missing = [f for f in ("purpose", "file_name", "file") if f not in fields]
            if missing or fields.get("purpose") != b"fine-tune":
                s.invalid.append((path, missing))
                return self._error(400, f"missing or bad multipart fields: {missing or 'purpose'}")
            fid = "file-" + uuid.uuid4().hex[:20]
            s.files[fid] = {"id": fid, "object": "file", "created_at": int(time.time()),
                            "filename": fields["file_name"].decode(), "bytes": len(fields["file"]),
                            "purpose": "fine-tune", "FileType": fields.get("file_type", b"jsonl").decode(),
                            "Processed": True, "LineCount": fields["file"].count(b"\n")}
            s.files[fid]["_content"] = fields["file"]
            return self._send(200, {k: v for k, v in s.files[fid].items() if not k.startswith("_")})
        if route == ("GET", "/fine-tunes/models/limits"):
            if "model_name" not in query:
                return self._error(400, "model_name is required")
            return self._send(200, {**s.limits, "model_name": query["model_name"][0]})
        if route == ("POST", "/fine-tunes/estimate-price"):
            body = self._json_body("/fine-tunes/estimate-price")
            if body is None:
                return
            f = s.files.get(body["training_file"])
            if f is None:
                return self._error(404, f"file {body['training_file']} not found")
            tokens = f["bytes"] // 4 * body.get("n_epochs", 1)
            return self._send(200, {"estimated_total_price": round(tokens / 1e6 * 0.48, 6), "allowed_to_proceed": True,
                                    "user_limit": 100.0, "estimated_train_token_count": tokens,
                                    "estimated_eval_token_count": 0})
        if route == ("POST", "/fine-tunes"):
            body = self._json_body("/fine-tunes")
            if body is None:
                return
            if body["training_file"] not in s.files:
                return self._error(400, f"training_file {body['training_file']} does not exist")
            jid = "ft-" + uuid.uuid4().hex[:24]
            with s.lock:
                s.created += 1
                s.jobs[jid] = {"id": jid, "status": "pending", "created_at": _now(), "updated_at": _now(),
                               "model": body["model"], "suffix": body.get("suffix"), "training_file":
                               body["training_file"], "n_epochs": body.get("n_epochs", 1),
                               "model_output_name": f"user/{body['model'].split('/')[-1]}-{body.get('suffix')}",
                               "token_count": 0, "total_price": 0, "_step": 0}
                s.events[jid] = [_event("job_pending", "Fine tune request created")]
            if fault and fault.drop and fault.after:
                return self._drop()  # the job exists, the answer is lost
            return self._send(200, self._job(jid))
        if route == ("GET", "/fine-tunes"):
            return self._send(200, {"data": [self._job(j) for j in s.jobs]})
        m = re.fullmatch(r"/fine-tunes/(ft-[0-9a-f]+)(/events|/checkpoints|/cancel)?", path)
        if m:
            jid, sub = m.group(1), m.group(2)
            if jid not in s.jobs:
                return self._error(404, f"fine-tune job {jid} not found", code="not_found")
            if sub == "/events":
                return self._send(200, {"data": s.events[jid]})
            if sub == "/checkpoints":
                return self._send(200, {"data": [{"step": e["step"], "created_at": e["created_at"],
                                                  "path": e["checkpoint_path"], "checkpoint_type": "Intermediate"}
                                                 for e in s.events[jid] if e["type"] == "checkpoint_save"]})
            if sub == "/cancel" and self.command == "POST":
                job = s.jobs[jid]
                if job["status"] not in ("completed", "cancelled", "error"):
                    job["status"] = "cancel_requested"
                    s.events[jid].append(_event("cancel_requested", "Cancel requested"))
                return self._send(200, self._job(jid))
            if self.command == "GET" and sub is None:
                self._advance(jid)
                return self._send(200, self._job(jid))
        if route == ("GET", "/finetune/download"):
            jid = (query.get("ft_id") or [""])[0]
            if jid not in s.jobs:
                return self._error(404, "fine-tune not found")
            if s.jobs[jid]["status"] != "completed":
                return self._error(400, "the job has not completed")
            return self._send(200, b"ADAPTER-BYTES:" + jid.encode())
        return self._error(404, f"no route {self.command} {path}")

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
            job["total_price"] = 3
            job["token_count"] = 3000
        job["status"] = st
        job["updated_at"] = _now()

    def do_GET(self):
        self.handle_one()

    def do_POST(self):
        self.handle_one()


class TogetherServer:
    def __init__(self, key: str = "tg-test-key-0123456789"):
        self.state = State(key=key)
        handler = type("H", (Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

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
