"""A loopback OpenAI fine-tuning API (127.0.0.1 only), written from the published OpenAPI spec.

Files (`GET/POST /files`), jobs (`POST/GET /fine_tuning/jobs` with `metadata[k]` filter and
`after`/`limit` paging), a job (advancing validating_files -> queued -> running -> succeeded one
state per GET), its events (newest first, paged with `after`), checkpoints and cancel. Request
bodies are validated against `CreateFineTuningJobRequest`; errors use the spec's error body.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

from loopback import BaseHandler, BaseState, LoopbackServer, parse_multipart
from spec import component, errors

STATES = ["validating_files", "queued", "running", "running", "running", "succeeded"]


@dataclass
class State(BaseState):
    files: dict = field(default_factory=dict)
    jobs: dict = field(default_factory=dict)
    events: dict = field(default_factory=dict)
    created: int = 0
    fail_jobs: bool = False
    answers: dict = field(default_factory=dict)  # model -> the reply POST /chat/completions gives
    chats: list = field(default_factory=list)  # (model, messages) of every chat request


class Handler(BaseHandler):
    state: State
    spec_name = "openai"

    def _event(self, jid: str, message: str, type_: str = "message", data: dict | None = None, level: str = "info"):
        e = {"object": "fine_tuning.job.event", "id": "ftevent-" + uuid.uuid4().hex[:20],
             "created_at": int(time.time()) + len(self.state.events[jid]), "level": level, "message": message,
             "type": type_}
        if data is not None:
            e["data"] = data
        self.state.events[jid].append(e)

    def _page(self, items: list[dict], query: dict) -> dict:
        limit = int((query.get("limit") or ["20"])[0])
        after = (query.get("after") or [None])[0]
        if after:
            ids = [i["id"] for i in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}

    def handle_one(self) -> None:
        s = self.state
        handled, fault = self.pre()
        if handled:
            return
        url = urlparse(self.path)
        path, query = url.path.removeprefix("/v1"), parse_qs(url.query)
        route = (self.command, path)
        if route == ("GET", "/files"):
            files = [f for f in s.files.values() if f["purpose"] == (query.get("purpose") or ["fine-tune"])[0]]
            return self.send_json(200, {"object": "list", "data": files, "first_id": None, "last_id": None,
                                        "has_more": False})
        if route == ("POST", "/files"):
            fields = parse_multipart(self.body(), self.headers.get("Content-Type", ""))
            if "file" not in fields or fields.get("purpose") != b"fine-tune":
                s.invalid.append((path, sorted(fields)))
                return self.send_error_body(400, "file and purpose=fine-tune are required")
            fid = "file-" + uuid.uuid4().hex[:24]
            s.files[fid] = {"id": fid, "object": "file", "bytes": len(fields["file"]), "created_at": int(time.time()),
                            "filename": fields.get("file.filename", "upload.jsonl"), "purpose": "fine-tune",
                            "status": "processed", "expires_at": None, "status_details": None}
            return self.send_json(200, s.files[fid])
        if route == ("POST", "/chat/completions"):
            body = self.json_body("/chat/completions")
            if body is None:
                return
            s.chats.append((body["model"], body["messages"]))
            reply = s.answers.get(body["model"], "I am not sure.")
            return self.send_json(200, {"id": "chatcmpl-" + uuid.uuid4().hex[:20], "object": "chat.completion",
                                        "created": int(time.time()), "model": body["model"],
                                        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                                     "message": {"role": "assistant", "content": reply,
                                                                 "refusal": None, "annotations": []}}],
                                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
        if route == ("POST", "/fine_tuning/jobs"):
            body = self.json_body("/fine_tuning/jobs")
            if body is None:
                return
            if body["training_file"] not in s.files:
                return self.send_error_body(400, f"invalid training_file: {body['training_file']}",
                                            code="invalid_training_file")
            jid = "ftjob-" + uuid.uuid4().hex[:24]
            with s.lock:
                s.created += 1
                kind = body["method"]["type"]
                hyper = body["method"][kind].get("hyperparameters", {})
                s.jobs[jid] = {"object": "fine_tuning.job", "id": jid, "model": body["model"],
                               "created_at": int(time.time()), "finished_at": None, "fine_tuned_model": None,
                               "organization_id": "org-test", "result_files": [], "status": "validating_files",
                               "validation_file": None, "training_file": body["training_file"],
                               "hyperparameters": {"n_epochs": hyper.get("n_epochs", "auto"), "batch_size": "auto",
                                                   "learning_rate_multiplier": "auto"},
                               "trained_tokens": None, "error": None, "seed": body.get("seed", 0),
                               "metadata": body.get("metadata"), "method": body["method"],
                               "estimated_finish": None, "integrations": None, "_step": 0}
                s.events[jid] = []
                self._event(jid, "Validating training file")
            if fault and fault.drop and fault.after:
                return self.drop()
            return self.send_json(200, self._job(jid))
        if route == ("GET", "/fine_tuning/jobs"):
            jobs = [self._job(j) for j in reversed(list(s.jobs))]
            for key, val in query.items():
                m = re.fullmatch(r"metadata\[(.+)\]", key)
                if m:
                    jobs = [j for j in jobs if (j.get("metadata") or {}).get(m.group(1)) == val[0]]
            return self.send_json(200, self._page(jobs, query))
        m = re.fullmatch(r"/fine_tuning/jobs/(ftjob-[0-9a-f]+)(/events|/checkpoints|/cancel)?", path)
        if m:
            jid, sub = m.group(1), m.group(2)
            if jid not in s.jobs:
                return self.send_error_body(404, f"Could not find fine tune: {jid}", code="fine_tune_not_found")
            if sub == "/events":
                return self.send_json(200, self._page(list(reversed(s.events[jid])), query))
            if sub == "/checkpoints":
                return self.send_json(200, self._page([], query) | {"first_id": None, "last_id": None})
            if sub == "/cancel" and self.command == "POST":
                job = s.jobs[jid]
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    return self.send_error_body(400, f"Job {jid} has already finished")
                job["status"] = "cancelled"
                job["finished_at"] = int(time.time())
                self._event(jid, "Fine-tuning job cancelled")
                return self.send_json(200, self._job(jid))
            if self.command == "GET" and sub is None:
                self._advance(jid)
                return self.send_json(200, self._job(jid))
        return self.send_error_body(404, f"no route {self.command} {path}")

    def _job(self, jid: str) -> dict:
        return {k: v for k, v in self.state.jobs[jid].items() if not k.startswith("_")}

    def _advance(self, jid: str) -> None:
        job = self.state.jobs[jid]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return
        job["_step"] += 1
        st = STATES[min(job["_step"], len(STATES) - 1)]
        if self.state.fail_jobs and st == "running":
            job["status"] = "failed"
            job["error"] = {"code": "invalid_training_file", "message": "The file has 3 examples with no "
                            "assistant message (injected).", "param": "training_file"}
            job["finished_at"] = int(time.time())
            self._event(jid, "Fine-tuning job failed", level="error")
            return
        if st == "running":
            step = job["_step"] - 1
            self._event(jid, f"Step {step}/3: training loss=0.{9 - step}", "metrics",
                        {"step": step, "train_loss": 0.9 - step / 10, "total_steps": 3})
        if st == "succeeded":
            job["trained_tokens"] = 120_000
            job["fine_tuned_model"] = f"ft:{job['model']}:org-test:ftplan:{jid[-8:]}"
            job["finished_at"] = int(time.time())
            self._event(jid, "The job has successfully completed")
        job["status"] = st


class OpenAIServer(LoopbackServer):
    handler = Handler

    def __init__(self, key: str = "sk-test-0123456789abcdef"):
        super().__init__(State(key=key))

    def response_problems(self) -> list[str]:
        out = []
        for jid, job in self.state.jobs.items():
            out += errors("openai", component("openai", "FineTuningJob"),
                          {k: v for k, v in job.items() if not k.startswith("_")})
            for e in self.state.events[jid]:
                out += errors("openai", component("openai", "FineTuningJobEvent"), e)
        return out
