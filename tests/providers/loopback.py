"""Shared parts of the loopback API servers: faults, JSON answers, spec-checked bodies, multipart."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

from spec import errors, request_schema


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
class BaseState:
    key: str
    faults: list = field(default_factory=list)
    requests: list = field(default_factory=list)  # (method, path, status or None when dropped)
    invalid: list = field(default_factory=list)  # spec violations in requests
    lock: threading.Lock = field(default_factory=threading.Lock)


def parse_multipart(body: bytes, ctype: str) -> dict:
    boundary = re.search(r"boundary=([^;]+)", ctype).group(1).strip('"').encode()
    fields = {}
    for part in body.split(b"--" + boundary):
        if b"\r\n\r\n" not in part:
            continue
        head, _, content = part.partition(b"\r\n\r\n")
        name = re.search(rb'; name="([^"]+)"', head)
        if name:
            fields[name.group(1).decode()] = content[:-2] if content.endswith(b"\r\n") else content
            filename = re.search(rb'filename="([^"]+)"', head)
            if filename:
                fields[f"{name.group(1).decode()}.filename"] = filename.group(1).decode()
    return fields


class BaseHandler(BaseHTTPRequestHandler):
    state: BaseState
    spec_name = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def send_json(self, status: int, body, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.state.requests.append((self.command, urlparse(self.path).path, status))

    def send_error_body(self, status: int, message: str, type_: str = "invalid_request_error",
                        code: str | None = None) -> None:
        self.send_json(status, {"error": {"message": message, "type": type_, "param": None, "code": code}})

    def take_fault(self) -> Fault | None:
        path = urlparse(self.path).path
        with self.state.lock:
            for f in self.state.faults:
                if f.times > 0 and f.method == self.command and re.fullmatch(f.path, path):
                    f.times -= 1
                    return f
        return None

    def drop(self) -> None:
        self.state.requests.append((self.command, urlparse(self.path).path, None))
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def body(self) -> bytes:
        if not hasattr(self, "_body"):
            n = int(self.headers.get("Content-Length") or 0)
            self._body = self.rfile.read(n) if n else b""
        return self._body

    def _peek(self) -> dict:
        try:
            data = json.loads(self.body() or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def json_body(self, path: str, optional: tuple[str, ...] = ()) -> dict | None:
        """The JSON body, checked against the spec's request schema (400 with the spec's error body if not).

        `optional`: required fields this request may leave out, where the provider's own SDK does
        (cited at each call).
        """
        try:
            data = json.loads(self.body() or b"{}")
        except ValueError:
            self.send_error_body(400, "request body is not JSON")
            return None
        schema = request_schema(self.spec_name, path, "post")
        if optional:
            schema = {**schema, "required": [r for r in schema.get("required", []) if r not in optional]}
        problems = errors(self.spec_name, schema, data)
        if problems:
            self.state.invalid.append((path, problems))
            self.send_error_body(400, "; ".join(problems))
            return None
        return data

    def pre(self) -> tuple[bool, Fault | None]:
        """Auth and injected faults; (handled, fault to finish with after the real work)."""
        if self.headers.get("Authorization") != f"Bearer {self.state.key}":
            self.body()
            self.send_error_body(401, "Invalid API key provided", "authentication_error", "invalid_api_key")
            return True, None
        fault = self.take_fault()
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and fault.status:
            self.body()
            headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
            self.send_json(fault.status, {"error": {"message": f"injected {fault.status}", "type": "server_error",
                                                    "param": None, "code": None}}, headers)
            return True, None
        if fault and fault.drop and not fault.after:
            if self.command == "POST":
                self.rfile.read(min(64, int(self.headers.get("Content-Length") or 0)))  # part of the upload
            self.drop()
            return True, None
        return False, fault

    def do_GET(self):
        self.__dict__.pop("_body", None)  # one handler serves every request of a keep-alive connection
        self.handle_one()

    def do_POST(self):
        self.__dict__.pop("_body", None)
        self.handle_one()

    def handle_one(self) -> None:  # pragma: no cover - each server defines it
        raise NotImplementedError


class LoopbackServer:
    handler: type[BaseHandler]

    def __init__(self, state: BaseState):
        self.state = state
        handler = type("H", (self.handler,), {"state": state})
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
