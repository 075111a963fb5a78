"""Run a recipe on Modal GPUs: the app, image, volumes, secret, GPU string, timeout and retries from the plan.

Everything is built with the real Modal SDK (the `modal` extra, 1.6.x); building contacts nothing.
The remote function's body is `run_training()`: the same training program the local provider
runs, with its outputs, checkpoints and events on a Volume, started with `--resume` on every
attempt, so a preempted container that Modal retries continues from the last complete
checkpoint. Attempts last at most 24 h; a longer plan runs as resumable segments.
"""

from __future__ import annotations

import hashlib
import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ftplan.recipes.schema import Recipe, parse_recipe  # noqa: F401  (re-exported for scripts)
from ftplan.sizing.errors import FtplanError

APP_NAME = "ftplan-train"
MAX_TIMEOUT = 24 * 3600
MIN_TIMEOUT = 15 * 60
VOLUMES = {"/cache": "ftplan-hf-cache", "/data": "ftplan-data", "/outputs": "ftplan-outputs"}
# The training stack the image pins: what the tests run against, so remote runs match local ones.
STACK = ("torch==2.7.1", "transformers==5.23.0", "peft==0.21.2", "trl==1.16.0", "accelerate==1.15.0",
         "datasets==5.2.0", "bitsandbytes==0.50.2", "tokenizers>=0.22", "pydantic>=2.5", "pyyaml>=6.0",
         "click>=8.1", "rich>=13.0", "platformdirs>=3.0", "jinja2>=3.1", "pyarrow>=14", "httpx>=0.27")
UNSLOTH = "unsloth==2026.11.1"
GATED_PREFIXES = ("meta-llama/", "google/gemma", "mistralai/")
MODAL_GPUS = {"T4": "T4", "L4": "L4", "A10G": "A10", "L40S": "L40S", "A100-40GB": "A100-40GB",
              "A100-80GB": "A100-80GB", "RTX-PRO-6000": "RTX-PRO-6000", "H100": "H100", "H200": "H200", "B200": "B200"}
MAX_PER_CONTAINER = {"A10": 4}


@dataclass
class ModalSpec:
    """What the app will ask Modal for; computed from the recipe and the plan, inspected by tests."""

    gpu: str | list[str]
    gpus: int
    nodes: int
    timeout: int
    segments: int
    retries: int
    packages: tuple[str, ...]
    volumes: dict[str, str]
    secret: str | None
    usd_per_hour: float
    notes: list[str] = field(default_factory=list)


def modal_gpu_string(gpu: str, count: int) -> str:
    name = MODAL_GPUS.get(gpu)
    if name is None:
        raise FtplanError(f"{gpu} is not a GPU Modal rents; Modal has {', '.join(sorted(set(MODAL_GPUS.values())))}. "
                          "Pin one in the recipe (hardware.gpu) or let the plan choose.")
    per_node = min(count, 8)
    if per_node > MAX_PER_CONTAINER.get(name, 8):
        raise FtplanError(f"Modal puts at most {MAX_PER_CONTAINER[name]} x {name} in one container; ask for fewer "
                          "or another GPU.")
    return name if per_node == 1 else f"{name}:{per_node}"


def spec_for(recipe: Recipe, plan: dict | None) -> ModalSpec:
    """GPU string, timeout (with segments past 24 h), retries, image and volumes for this recipe."""
    notes = []
    modal_plan = None
    if plan:
        modal_plan = next((p for p in plan.get("per_provider", []) if p["provider"] == "modal"), None)
    if recipe.hardware.gpu:
        from ftplan.sizing.gpus import get_gpu

        gpu, count = get_gpu(recipe.hardware.gpu).name, recipe.hardware.gpus or 1
    elif modal_plan:
        gpu, count = modal_plan["gpu"], modal_plan["count"]
    else:
        raise FtplanError("no Modal plan for this recipe (nothing fits a Modal GPU?): pin hardware.gpu in the recipe.")
    gpu_str: str | list[str] = modal_gpu_string(gpu, count)
    fallbacks = recipe.providers.get("modal", {}).get("gpu_fallbacks")
    if fallbacks:
        gpu_str = [gpu_str] + [modal_gpu_string(g, count) for g in fallbacks]
    hours = (modal_plan or {}).get("hours") or 1.0
    wanted = int(hours * 3600 * 1.5) + MIN_TIMEOUT  # the plan's time with margin, plus start-up
    segments = max(1, math.ceil(wanted / MAX_TIMEOUT))
    timeout = max(MIN_TIMEOUT, min(MAX_TIMEOUT, wanted))
    if segments > 1:
        notes.append(f"plan needs ~{hours:,.1f} h: {segments} segments of at most 24 h, each resuming the last")
    single_gpu_lora = count == 1 and recipe.method.adapter in ("lora", "qlora")
    packages = STACK + ((UNSLOTH,) if single_gpu_lora and recipe.providers.get("modal", {}).get("unsloth", True)
                        else ())
    gated = recipe.model.startswith(GATED_PREFIXES) or bool(recipe.providers.get("modal", {}).get("hf_secret"))
    secret = recipe.providers.get("modal", {}).get("hf_secret", "huggingface-secret") if gated else None
    usd = (modal_plan or {}).get("usd_per_hour") or 0.0
    return ModalSpec(gpu_str, count, max(1, math.ceil(count / 8)), timeout, segments, 3, packages, dict(VOLUMES),
                     secret, usd, notes)


def run_training(recipe_yaml: str, job_id: str, usd_per_hour: float, root: str | None = None) -> dict:
    """The remote function's body: the training program on the Volumes, always resuming.

    `root` replaces the Volume mounts when the body runs outside Modal (`.local()`, tests).
    """
    import yaml

    from ftplan.recipes.train import main as train_main

    base = Path(root or "/")
    out = base / "outputs" / job_id
    out.mkdir(parents=True, exist_ok=True)
    recipe = yaml.safe_load(recipe_yaml)
    recipe.setdefault("output", {})["dir"] = str(out)
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    os.environ.setdefault("HF_HOME", str(base / "cache" / "hf"))
    gpus, machines, rank, main_ip = _topology()
    if gpus * machines > 1:  # accelerate across the container's GPUs, and the cluster's nodes
        import subprocess

        from ftplan.recipes.launch import training_command

        cmd = training_command(str(path), out, out / "events.jsonl", usd_per_hour=usd_per_hour, resume=True,
                               gpus=gpus * machines, distributed=recipe.get("hardware", {}).get("distributed", "auto"),
                               precision=recipe.get("hyperparameters", {}).get("precision", "bf16"),
                               machines=machines, rank=rank, main_ip=main_ip)
        code = subprocess.run(cmd).returncode
    else:
        code = train_main([str(path), "--output", str(out), "--events", str(out / "events.jsonl"), "--resume",
                           "--usd-per-hour", str(usd_per_hour)])
    _commit_volumes()
    if code != 0:
        raise RuntimeError(f"training exited with {code}; see {out / 'events.jsonl'}")  # Modal retries it
    return {"job": job_id, "output": str(out)}


def _topology() -> tuple[int, int, int, str | None]:
    """(GPUs in this container, machines, this machine's rank, the main machine's address)."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 1
    try:
        import modal.experimental

        info = modal.experimental.get_cluster_info()
        if info and len(info.container_ips) > 1:
            return gpus, len(info.container_ips), info.rank, info.container_ips[0]
    except Exception:  # not in a cluster (or not in Modal at all)
        pass
    return gpus, 1, 0, None


def _commit_volumes() -> None:
    """Persist the outputs Volume (inside Modal only)."""
    try:
        import modal

        if not modal.is_local():
            modal.Volume.from_name(VOLUMES["/outputs"]).commit()
    except Exception:  # outside Modal there is nothing to commit
        pass


def data_key(path: Path) -> str:
    h = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{h}/{path.name}"


def build_app(spec: ModalSpec, app_name: str = APP_NAME):
    """(App, Function) from real SDK objects; nothing is contacted until the app runs."""
    import modal

    image = (modal.Image.debian_slim(python_version="3.11")
             .uv_pip_install(*spec.packages)
             .env({"HF_HOME": "/cache/hf", "HF_HUB_ENABLE_HF_TRANSFER": "0", "TRL_EXPERIMENTAL_SILENCE": "1",
                   "PYTHONPATH": "/root/src"}))
    for local, remote in source_dirs():
        image = image.add_local_dir(local, remote, ignore=["**/__pycache__/**"])
    volumes = {mount: modal.Volume.from_name(name, create_if_missing=True) for mount, name in spec.volumes.items()}
    secrets = [modal.Secret.from_name(spec.secret, required_keys=["HF_TOKEN"])] if spec.secret else []
    app = modal.App(app_name, image=image)
    kwargs = dict(gpu=spec.gpu, timeout=spec.timeout, volumes=volumes, secrets=secrets,
                  retries=modal.Retries(max_retries=spec.retries, initial_delay=0.0, backoff_coefficient=1.0),
                  single_use_containers=True, serialized=True, name="train")
    body = run_training
    if spec.nodes > 1:
        body = modal.clustered(size=spec.nodes, rdma=True)(run_training)
    fn = app.function(**kwargs)(body)
    return app, fn


def source_dirs() -> list[tuple[str, str]]:
    """ftplan's own package folders and where they go in the image.

    `ftplan.sizing` and its siblings live in their own folders (setuptools package-dir), so an
    editable install has no single package folder to copy: each subpackage is placed under
    /root/src/ftplan/ by its dotted name, which works for editable and wheel installs alike.
    """
    import importlib

    out = []
    for name in ("ftplan", "ftplan.sizing", "ftplan.launcher", "ftplan.providers", "ftplan.recipes"):
        folder = Path(importlib.import_module(name).__file__).parent
        out.append((str(folder), "/root/src/" + name.replace(".", "/")))
    return out


def check_ready(env: dict | None = None) -> None:
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


def describe(spec: ModalSpec) -> str:
    gpu = spec.gpu if isinstance(spec.gpu, str) else " or ".join(spec.gpu)
    parts = [f"gpu={gpu}", f"timeout={spec.timeout // 60} min", f"retries={spec.retries}"]
    if spec.nodes > 1:
        parts.append(f"{spec.nodes} nodes (modal.clustered)")
    if spec.secret:
        parts.append(f"secret {spec.secret}")
    return "Modal: " + ", ".join(parts) + f", image pins {len(spec.packages)} packages" + \
        (f" ({shlex.quote(UNSLOTH)})" if UNSLOTH in spec.packages else "")


def upload_data(local: Path) -> str:
    """Put the data file on the data Volume unless the same content is there; returns its path in the container."""
    import modal

    key = data_key(local)
    vol = modal.Volume.from_name(VOLUMES["/data"], create_if_missing=True)
    folder = key.split("/")[0]
    try:
        present = {Path(e.path).name for e in vol.listdir(folder)}
    except Exception:  # the folder does not exist yet
        present = set()
    if local.name not in present:
        with vol.batch_upload() as batch:
            batch.put_file(str(local), key)
    return f"/data/{key}"


def submit(recipe: Recipe, spec: ModalSpec, job_id: str, *, detach: bool) -> str:
    """Upload the data, start the app and spawn the training call; returns the FunctionCall id."""
    import modal
    import yaml

    data = dict(recipe.model_dump(mode="json"))
    data["data"] = dict(data["data"], path=upload_data(Path(recipe.data.path)))
    app, fn = build_app(spec)
    with modal.enable_output(), app.run(detach=True):
        call = fn.spawn(yaml.safe_dump(data), job_id, spec.usd_per_hour)
    return call.object_id


def poll(store, job: dict) -> None:
    """Copy new bytes of the run's events file from the outputs Volume; notice a finished or failed call."""
    import modal

    ids = job["provider_ids"]
    local = Path(job["events_path"])
    vol = modal.Volume.from_name(VOLUMES["/outputs"])
    try:
        remote = b"".join(vol.read_file(f"{job['id']}/events.jsonl"))
    except Exception:  # not written yet
        remote = b""
    have = local.stat().st_size if local.exists() else 0
    if len(remote) > have:
        local.parent.mkdir(parents=True, exist_ok=True)
        with local.open("ab") as fh:
            fh.write(remote[have:])
    call = modal.FunctionCall.from_id(ids["function_call"])
    try:
        call.get(timeout=0)
    except TimeoutError:
        return
    except Exception as exc:  # the call ended with an error after its retries
        from ftplan.recipes.events import EventWriter

        w = EventWriter(local)
        w.emit("failed", error=f"Modal call failed: {type(exc).__name__}: {exc}")
        w.close()


def cancel(job: dict) -> None:
    import modal

    modal.FunctionCall.from_id(job["provider_ids"]["function_call"]).cancel()


def pull(job: dict, dest: Path) -> Path:
    """Download the job's outputs (adapter, manifest, events) from the outputs Volume."""
    import modal

    vol = modal.Volume.from_name(VOLUMES["/outputs"])
    for entry in vol.iterdir(job["id"], recursive=True):
        if entry.type.name != "FILE":
            continue
        target = dest / Path(entry.path).relative_to(job["id"])
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as fh:
            vol.read_file_into_fileobj(entry.path, fh)
    return dest
