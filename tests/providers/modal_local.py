"""Modal's service on this machine, for tests: the same app, built from real SDK objects, run with `.local()`.

Volumes are folders under `root` (root/data, root/outputs, root/cache: what the function bodies use
when given `root`). A spawned call is a runner process (this file, run as a script) that builds
the app with `modal_app.build_app(spec)` and executes the function's body through the real
`modal.Function.local()` in a child process; like Modal it retries a failed attempt up to
`spec.retries` times, and a killed child is a preemption. Call states are files under root/calls,
so the CLI under test, the runners and the test itself all see them. Faults can be injected:
reads and state queries that raise the provider's transient error.

Only the service boundary is stood in for; the provider, the app, the bodies and the training
program are the real ones. What cannot be exercised here is Modal itself (`app.run`, `spawn`, real
Volumes, the control Dict); the README says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


class LocalCall:
    def __init__(self, object_id: str):
        self.object_id = object_id


class LocalTrain:
    """Stands in for the hydrated `train` Function handle a body receives: `.spawn()` starts a runner."""

    def __init__(self, root: Path, spec: dict):
        self.root, self.spec = Path(root), spec

    def spawn(self, job: dict, train, segment: int, root) -> LocalCall:
        return LocalCall(start_call(self.root, self.spec, "train", [job, segment]))


def start_call(root: Path, spec: dict, kind: str, args: list) -> str:
    call_id = "fc-" + uuid.uuid4().hex[:12]
    calls = root / "calls"
    calls.mkdir(parents=True, exist_ok=True)
    (calls / f"{call_id}.json").write_text(json.dumps({"kind": kind, "spec": spec, "args": args}))
    log = (calls / f"{call_id}.log").open("ab")
    subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(root), call_id], stdout=log,
                     stderr=subprocess.STDOUT, start_new_session=True,
                     env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])})
    log.close()
    return call_id


class LocalModalService:
    def __init__(self, root: Path, secrets: tuple[str, ...] = ("huggingface-secret",)):
        self.root = Path(root)
        self.secrets = set(secrets)
        self.uploaded: list[str] = []
        self.launched: list[dict] = []
        self.read_faults = 0  # the next N reads raise the transient error, as a network blip would
        self.state_faults = 0

    def check_auth(self) -> None:
        pass

    def secret_exists(self, name: str) -> bool:
        return name in self.secrets

    def upload(self, files: dict[str, Path]) -> None:
        for key, local in files.items():
            target = self.root / "data" / key
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if local.is_dir() else shutil.copy2)(local, target)
            self.uploaded.append(key)

    def launch(self, spec, job: dict) -> dict:
        self.launched.append({"spec": spec, "job": job})
        call_id = start_call(self.root, asdict(spec), "conduct", [job])
        return {"conduct_call": call_id, "app_id": "ap-local", "dashboard": "https://modal.com/id/ap-local"}

    def read(self, path: str) -> bytes | None:
        from ftplan.providers.base import TransientError

        if self.read_faults > 0:
            self.read_faults -= 1
            raise TransientError("Modal Volume read failed: connection reset (injected)")
        p = self.root / "outputs" / path
        return p.read_bytes() if p.is_file() else None

    def call_state(self, call_id: str) -> tuple[str, object]:
        from ftplan.providers.base import TransientError

        if self.state_faults > 0:
            self.state_faults -= 1
            raise TransientError(f"Modal could not be asked about call {call_id}: deadline exceeded (injected)")
        done = self.root / "calls" / f"{call_id}.state"
        if done.is_file():
            st = json.loads(done.read_text())
            return st["state"], st.get("detail")
        return "running", None

    def request_stop(self, job_id: str) -> None:
        stop = self.root / "outputs" / job_id / "STOP"
        stop.parent.mkdir(parents=True, exist_ok=True)
        stop.touch()

    def log_tail(self, call_id: str, entries: int = 20) -> list[str]:
        log = self.root / "calls" / f"{call_id}.log"
        return log.read_text(errors="replace").splitlines()[-entries:] if log.is_file() else []

    def download(self, job_id: str, dest: Path, *, checkpoints: bool = False) -> None:
        from ftplan.providers.modal_provider import _wanted

        src = self.root / "outputs" / job_id
        for p in src.rglob("*"):
            rel = p.relative_to(src)
            if p.is_file() and _wanted(rel, checkpoints):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, dest / rel)

    def kill_attempt(self, call_id: str) -> None:
        """A preemption: the attempt's process dies without a word; the runner retries, as Modal does."""
        pid = int((self.root / "calls" / f"{call_id}.attempt").read_text())
        os.killpg(pid, 9)

    def wait(self, call_id: str, timeout: float = 240) -> tuple[str, object]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.call_state(call_id)
            if state[0] != "running":
                return state
            time.sleep(0.2)
        raise TimeoutError(call_id)


ATTEMPT = """
import json, sys
from pathlib import Path
from ftplan.providers import modal_app
from modal_local import LocalTrain
root, call_id = Path(sys.argv[1]), sys.argv[2]
call = json.loads((root / "calls" / f"{call_id}.json").read_text())
spec = modal_app.ModalSpec(**call["spec"])
_, conduct, train = modal_app.build_app(spec)
handle = LocalTrain(root, call["spec"])
if call["kind"] == "conduct":
    result = conduct.local(call["args"][0], handle, str(root))
else:
    job, segment = call["args"]
    result = train.local(job, handle, segment, str(root))
(root / "calls" / f"{call_id}.result").write_text(json.dumps(result))
"""


def run_call(root: Path, call_id: str) -> None:
    """The runner: attempts until one succeeds or the retries are spent, then the call's final state."""
    call = json.loads((root / "calls" / f"{call_id}.json").read_text())
    attempts = 1 + (call["spec"]["retries"] if call["kind"] == "train" else 2)
    error = ""
    for _ in range(attempts):
        # Its own process group: a preemption takes the whole container, the training program included.
        proc = subprocess.Popen([sys.executable, "-c", ATTEMPT, str(root), call_id], start_new_session=True)
        (root / "calls" / f"{call_id}.attempt").write_text(str(proc.pid))
        code = proc.wait()
        result = root / "calls" / f"{call_id}.result"
        if code == 0 and result.is_file():
            state = {"state": "succeeded", "detail": json.loads(result.read_text())}
            break
        error = f"attempt exited with {code}"
    else:
        state = {"state": "failed", "detail": f"RuntimeError: {error}"}
    (root / "calls" / f"{call_id}.state").write_text(json.dumps(state))


if __name__ == "__main__":
    run_call(Path(sys.argv[1]), sys.argv[2])
