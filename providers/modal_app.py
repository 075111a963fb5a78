"""What runs on Modal for a recipe, and what it costs: the one module to read.

A job on Modal is one App with two Functions, built from real SDK objects (the `modal` extra):

- `conduct` (CPU): puts the model's weights into the HF-cache Volume, so no GPU second is billed
  for a download, then spawns the first training segment.
- `train` (the plan's GPUs, the CPU cores and memory priced beside them): the same training
  program the local provider runs, on the Volumes, always with `--resume`, so an attempt that
  Modal retries after a preemption or crash continues from the last complete checkpoint. The
  program stops by itself before the attempt's timeout (at most Modal's 24 h), checkpoints, and
  this body spawns the next segment: a 60 h plan runs as three segments, and `Retries` stays for
  real failures.

Volumes: /cache (Hugging Face cache), /data (the recipe's local inputs, by content hash),
/outputs (one folder per job: events, checkpoints, adapter, manifest, calls.json). A Dict
`ftplan-control` carries cancel requests: the program checkpoints and stops at its next step.
Only the main process of a multi-node run writes events and the manifest.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ftplan.recipes.schema import Recipe
from ftplan.recipes.tracking import TRACKERS
from ftplan.sizing.errors import FtplanError

APP_NAME = "ftplan-train"
PYTHON = "3.11"
MAX_TIMEOUT = 24 * 3600  # Modal's per-attempt maximum (modal.com/docs/guide/timeouts)
MIN_TIMEOUT = 15 * 60
HANDOVER_SECONDS = 30 * 60  # before the timeout, a segment checkpoints and hands over to the next
RETRIES = 3  # preemptions and real failures, per segment (Modal's fine-tuning examples use 3)
CONDUCT_CPU, CONDUCT_MEMORY_MIB, CONDUCT_TIMEOUT = 2.0, 8192, 4 * 3600
VOLUMES = {"/cache": "ftplan-hf-cache", "/data": "ftplan-data", "/outputs": "ftplan-outputs"}
CONTROL = "ftplan-control"  # modal.Dict: job id -> "stop"
GATED_PREFIXES = ("meta-llama/", "google/gemma", "mistralai/")
# ftplan GPU name -> Modal's GPU string (modal.com/docs/guide/gpu). H100 is pinned with "!": unpinned,
# Modal may serve an H200 at the H200 price, which the plan did not price.
MODAL_GPUS = {"T4": "T4", "L4": "L4", "A10G": "A10", "L40S": "L40S", "A100-40GB": "A100-40GB",
              "A100-80GB": "A100-80GB", "RTX-PRO-6000": "RTX-PRO-6000", "H100": "H100!", "H200": "H200", "B200": "B200"}
MAX_PER_CONTAINER = {"A10": 4}  # every other Modal GPU: up to 8 in one container
MAX_NODES = 32  # Modal's clusters: up to 32 nodes / 256 GPUs (guide "Multi-node Clusters")


@dataclass
class ModalSpec:
    """What the app asks Modal for, computed from the recipe, the plan and the price rows; inspected by tests."""

    gpu: str | list[str]  # e.g. "H100!:2", or a list of fallbacks in preference order
    gpu_name: str  # ftplan's name of the preferred GPU
    gpus: int  # all GPUs of the job
    nodes: int
    cpu: float  # cores per container (requested, so priced: Modal bills max(request, usage))
    memory_mib: int  # per container, likewise
    timeout: int  # seconds per attempt
    segment_seconds: int  # the program hands over to a new segment after this long
    segments: int  # how many segments the plan's time needs
    retries: int
    region: str | list[str] | None
    region_kind: str  # none | broad | narrow: the price multiplier's key
    packages: tuple[str, ...]
    unsloth: bool
    volumes: dict[str, str]
    secret: str | None
    usd_per_hour: float  # all containers: GPUs + CPU + memory, region multiplier applied
    hours: float | None  # the plan's hours on this GPU (start-up included)
    fallbacks: list[dict] = field(default_factory=list)  # {"gpu", "count", "usd_per_hour"} each
    notes: list[str] = field(default_factory=list)
    trackers: tuple[str, ...] = ()  # output.report_to: their packages are in `packages`
    tracker_secrets: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (name, required keys)

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // self.nodes


def modal_gpu_string(gpu: str, count: int) -> str:
    """Modal's GPU string for `count` GPUs of `gpu` in one container ("H100!:4", "A10", ...)."""
    name = MODAL_GPUS.get(gpu)
    if name is None:
        raise FtplanError(f"{gpu} is not a GPU Modal rents; Modal has {', '.join(sorted(MODAL_GPUS))}. Pin one in the "
                          "recipe (hardware.gpu) or let the plan choose.")
    top = MAX_PER_CONTAINER.get(name, 8)
    if count > top:
        raise FtplanError(f"Modal puts at most {top} x {gpu} in one container; ask for fewer or another GPU.")
    return name if count == 1 else f"{name}:{count}"


def _nodes(count: int) -> int:
    if count <= 8:
        return 1
    if count % 8 or count // 8 > MAX_NODES:
        raise FtplanError(f"{count} GPUs: Modal clusters are whole nodes of 8 GPUs, at most {MAX_NODES} nodes; set "
                          f"hardware.gpus to 8 or a multiple of 8 up to {8 * MAX_NODES} (or at most 8 on one node).")
    return count // 8


def region_kind(region) -> str:
    """Modal prices a region request 1.5x when broad (`us`, `eu`) and 1.75x when narrow (`us-east`)."""
    if not region:
        return "none"
    regions = [region] if isinstance(region, str) else list(region)
    return "narrow" if all("-" in r for r in regions) else "broad"


def _lock(name: str) -> tuple[str, ...]:
    text = resources.files("ftplan.providers").joinpath("data", name).read_text(encoding="utf-8")
    return tuple(line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip())


def image_packages(unsloth: bool, deepspeed: bool, trackers: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The image's exact package set: one resolved lock and its add-ons (CI resolves each against the index).

    Add-ons (DeepSpeed, a lock per experiment tracker) were resolved with every pin of the base lock
    held; a package two of them both pin must agree, else the recipe is refused here, by name.
    """
    packages = list(_lock("modal-image-unsloth.lock" if unsloth else "modal-image.lock"))
    addons = (["modal-image-deepspeed.lock"] if deepspeed else []) + [f"modal-image-{t}.lock" for t in trackers]
    pinned = {_name(p): (p, "the training stack") for p in packages}
    for lock in addons:
        what = lock.removeprefix("modal-image-").removesuffix(".lock")
        for p in _lock(lock):
            have = pinned.get(_name(p))
            if have and have[0] != p:
                raise FtplanError(f"the Modal image cannot hold {what} beside {have[1]}: they pin {have[0]} and {p}. "
                                  "Report to fewer trackers at once (output.report_to).")
            if not have:
                pinned[_name(p)] = (p, what)
                packages.append(p)
    return tuple(packages)


def _name(pin: str) -> str:
    return pin.split("==")[0].strip().lower().replace("_", "-")


def _best(plans: list[dict], gpu: str, count: int | None) -> dict | None:
    return next((p for p in plans if p["gpu"] == gpu and (count is None or p["count"] == count)), None)


def spec_for(recipe: Recipe, plan: dict | None, prices=None) -> ModalSpec:
    """GPU string, nodes, CPU and memory, timeout and segments, retries, image, volumes and price."""
    from ftplan.sizing.gpus import get_gpu
    from ftplan.sizing.plan import modal_usd_per_hour
    from ftplan.sizing.prices import load_prices

    book = prices or load_prices()
    modal = book.providers["modal"]
    rows = {r.gpu: r for r in book.gpu_rows if r.provider == "modal"}
    cfg = recipe.providers.get("modal", {})
    plans = [p for p in (plan or {}).get("plans", []) if p["provider"] == "modal"]
    notes: list[str] = []
    pinned_count = recipe.hardware.gpus
    if recipe.hardware.gpu:
        gpu = get_gpu(recipe.hardware.gpu).name
        chosen = _best(plans, gpu, pinned_count)
        count = pinned_count or (chosen["count"] if chosen else 1)
        if chosen is None and plan is not None:
            notes.append(f"the planner found no Modal plan with {count} x {gpu} that fits; running as pinned")
    elif plans:
        chosen = plans[0]
        gpu, count = chosen["gpu"], chosen["count"]
    else:
        raise FtplanError("no Modal plan for this recipe (nothing fits a Modal GPU?): pin hardware.gpu in the recipe.")
    if gpu not in rows:
        raise FtplanError(f"{gpu} is not a GPU Modal rents; Modal has {', '.join(sorted(rows))}.")
    nodes = _nodes(count)
    region = cfg.get("region")
    kind = region_kind(region)
    gpu_str: str | list[str] = modal_gpu_string(gpu, count // nodes)
    fallbacks = []
    for name in cfg.get("gpu_fallbacks") or []:
        alt = get_gpu(name).name
        option = _best(plans, alt, None)
        if option is None or alt not in rows:
            raise FtplanError(f"providers.modal.gpu_fallbacks: {alt} cannot hold this job in any count the planner "
                              "tried; remove it or pick a larger GPU.")
        fallbacks.append({"gpu": alt, "count": option["count"], "string": modal_gpu_string(alt, option["count"]),
                          "usd_per_hour": modal_usd_per_hour(rows[alt].usd_per_gpu_hour, modal, option["count"], kind)})
    if fallbacks:
        if nodes > 1:
            raise FtplanError("providers.modal.gpu_fallbacks work on one node only; remove them for a multi-node job.")
        gpu_str = [gpu_str] + [f["string"] for f in fallbacks]
        notes.append("fallbacks: " + ", ".join(f"{f['count']} x {f['gpu']} at ${f['usd_per_hour']:,.2f}/h"
                                                for f in fallbacks))
    hours = chosen["hours"] if chosen else None
    train_seconds = (chosen or {}).get("train_seconds") or 3600.0
    wanted = int(train_seconds * 1.5) + MIN_TIMEOUT  # the plan's time with margin, plus start-up
    timeout = max(MIN_TIMEOUT, min(MAX_TIMEOUT, wanted))
    segment_seconds = timeout - min(HANDOVER_SECONDS, timeout // 4)
    segments = max(1, math.ceil(train_seconds / segment_seconds))
    if segments > 1:
        notes.append(f"~{train_seconds / 3600:,.1f} h of training: {segments} segments of at most "
                     f"{segment_seconds / 3600:,.1f} h, each resuming from the last checkpoint")
    per_node = count // nodes
    unsloth = count == 1 and recipe.method.adapter in ("lora", "qlora") and cfg.get("unsloth", True)
    trackers = tuple(recipe.output.report_to)
    clash = [t for t in trackers if not TRACKERS[t].unsloth_image]
    if unsloth and clash:
        unsloth = False
        notes.append(f"PEFT image, not Unsloth's: {', '.join(clash)} cannot be installed beside Unsloth's pinned stack")
    deepspeed = recipe.hardware.distributed == "zero3" and count > 1
    return ModalSpec(
        gpu=gpu_str, gpu_name=gpu, gpus=count, nodes=nodes, cpu=float(modal["cpu_cores_per_gpu"] * per_node),
        memory_mib=int(modal["memory_gib_per_gpu"] * per_node * 1024), timeout=timeout,
        segment_seconds=segment_seconds, segments=segments, retries=RETRIES, region=region, region_kind=kind,
        packages=image_packages(unsloth, deepspeed, trackers), unsloth=bool(unsloth), volumes=dict(VOLUMES),
        secret=spec_secret(recipe),
        usd_per_hour=modal_usd_per_hour(rows[gpu].usd_per_gpu_hour, modal, count, kind), hours=hours,
        fallbacks=fallbacks, notes=notes, trackers=trackers, tracker_secrets=tracker_secrets(recipe))


def tracker_secret(recipe: Recipe, tracker: str) -> tuple[str, tuple[str, ...]] | None:
    """(Modal secret, keys it must hold) for one tracker: `wandb-secret` with WANDB_API_KEY (Modal's examples'
    name), `mlflow-secret` with MLFLOW_TRACKING_URI; `providers.modal.<tracker>_secret` names another."""
    secret = recipe.providers.get("modal", {}).get(f"{tracker}_secret", TRACKERS[tracker].secret)
    return (secret, TRACKERS[tracker].keys) if secret else None


def tracker_secrets(recipe: Recipe) -> list[tuple[str, tuple[str, ...]]]:
    return [s for name in recipe.output.report_to if (s := tracker_secret(recipe, name))]


def spec_secret(recipe: Recipe) -> str | None:
    """The Modal secret carrying HF_TOKEN, for gated models (Llama, Gemma, Mistral) or when the recipe names one."""
    cfg = recipe.providers.get("modal", {})
    gated = recipe.model.startswith(GATED_PREFIXES) or bool(cfg.get("hf_secret"))
    return cfg.get("hf_secret", "huggingface-secret") if gated else None


def describe(spec: ModalSpec) -> str:
    gpu = spec.gpu if isinstance(spec.gpu, str) else " or ".join(spec.gpu)
    parts = [f"gpu={gpu}", f"cpu={spec.cpu:g}", f"memory={spec.memory_mib // 1024} GiB",
             f"timeout={spec.timeout // 60} min", f"retries={spec.retries}"]
    if spec.nodes > 1:
        parts.append(f"{spec.nodes} nodes (modal.clustered)")
    if spec.region:
        parts.append(f"region={spec.region} (x{spec.region_kind} price)")
    if spec.secret:
        parts.append(f"secret {spec.secret}")
    for name, _ in spec.tracker_secrets:
        parts.append(f"secret {name}")
    if spec.trackers:
        parts.append(f"reports to {', '.join(spec.trackers)}")
    return (f"Modal: {', '.join(parts)}; ${spec.usd_per_hour:,.2f}/h for GPUs, CPU and memory; image pins "
            f"{len(spec.packages)} packages" + (" (Unsloth)" if spec.unsloth else ""))


# --- the app ---------------------------------------------------------------------------------------


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


def build_app(spec: ModalSpec, app_name: str = APP_NAME):
    """(App, conduct Function, train Function) from real SDK objects; nothing is contacted until the app runs."""
    import modal

    image = (modal.Image.debian_slim(python_version=PYTHON)
             .uv_pip_install(*spec.packages)
             .env({"HF_HOME": "/cache/hf", "HF_HUB_ENABLE_HF_TRANSFER": "0", "TRL_EXPERIMENTAL_SILENCE": "1",
                   "PYTHONPATH": "/root/src"}))
    for local, remote in source_dirs():
        image = image.add_local_dir(local, remote, ignore=["**/__pycache__/**"])
    volumes = {mount: modal.Volume.from_name(name, create_if_missing=True) for mount, name in spec.volumes.items()}
    secrets = [modal.Secret.from_name(spec.secret, required_keys=["HF_TOKEN"])] if spec.secret else []
    secrets += [modal.Secret.from_name(name, required_keys=list(keys)) for name, keys in spec.tracker_secrets]
    app = modal.App(app_name, image=image)
    train_body = run_training
    if spec.nodes > 1:
        train_body = modal.clustered(size=spec.nodes, rdma=True)(run_training)
    train = app.function(gpu=spec.gpu, cpu=spec.cpu, memory=spec.memory_mib, timeout=spec.timeout, volumes=volumes,
                         secrets=secrets, region=spec.region,
                         retries=modal.Retries(max_retries=spec.retries, initial_delay=0.0, backoff_coefficient=1.0),
                         single_use_containers=True, serialized=True, name="train")(train_body)
    conduct_fn = app.function(cpu=CONDUCT_CPU, memory=CONDUCT_MEMORY_MIB, timeout=CONDUCT_TIMEOUT, volumes=volumes,
                              secrets=secrets, retries=modal.Retries(max_retries=2, initial_delay=5.0),
                              serialized=True, name="conduct")(conduct)
    return app, conduct_fn, train


# --- the bodies (run inside Modal; `root` stands in for the Volume mounts when run with .local()) ------


def _outputs(job: dict, root: str | None) -> Path:
    out = Path(root or "/") / "outputs" / job["id"]
    out.mkdir(parents=True, exist_ok=True)
    return out


def record_call(out: Path, call_id: str, kind: str, segment: int) -> None:
    """Append a spawned call to the job's calls.json: how ftplan finds the segment that is running now."""
    path = out / "calls.json"
    calls = json.loads(path.read_text()) if path.exists() else []
    calls.append({"call_id": call_id, "kind": kind, "segment": segment, "time": time.time()})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(calls))
    tmp.replace(path)


def _commit(mount: str) -> None:
    """Persist a Volume's writes so ftplan (outside) sees them; nothing to do outside Modal."""
    try:
        import modal

        if not modal.is_local():
            modal.Volume.from_name(VOLUMES[mount]).commit()
    except Exception:  # noqa: BLE001 - a failed commit is retried by Modal's background commits
        pass


def _stop_requested(job_id: str) -> bool:
    try:
        import modal

        return not modal.is_local() and modal.Dict.from_name(CONTROL, create_if_missing=True).get(job_id) == "stop"
    except Exception:  # noqa: BLE001 - the control Dict unreachable: keep training
        return False


def conduct(job: dict, train, root: str | None = None) -> dict:
    """CPU: the model's weights into the HF-cache Volume, then the first training segment."""
    out = _outputs(job, root)
    base = Path(root or "/")
    os.environ.setdefault("HF_HOME", str(base / "cache" / "hf"))
    if job.get("hub_model"):
        from huggingface_hub import snapshot_download

        snapshot_download(job["hub_model"], allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                             "*.jinja", "tokenizer*"])
        _commit("/cache")
    if _stop_requested(job["id"]) or (out / "STOP").exists():
        return {"status": "cancelled before training"}
    call = train.spawn(job, train, 1, root)
    record_call(out, call.object_id, "train", 1)
    _commit("/outputs")
    return {"status": "spawned", "call": call.object_id}


def _rebase(value, base: Path):
    """The recipe's Volume paths (/data/...) under `base`: the identity inside Modal, a folder with .local()."""
    if isinstance(value, dict):
        return {k: _rebase(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, base) for v in value]
    if isinstance(value, str) and value.startswith("/data/"):
        return str(base / value.lstrip("/"))
    return value


def _topology() -> tuple[int, int, int, str | None]:
    """(GPUs in this container, machines, this machine's rank, the main machine's address)."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 1
    try:
        import modal

        if not modal.is_local():
            cluster = modal.Cluster.from_context()
            ips = cluster.container_ips(family="ipv4")
            if len(ips) > 1:
                return gpus, len(ips), cluster.container_rank(), ips[0]
    except Exception:  # noqa: BLE001 - not in a cluster
        pass
    return gpus, 1, 0, None


def _watch_stop(job_id: str, stop_file: Path, done: threading.Event) -> None:
    """Turn a cancel request in the control Dict into the stop file the training program watches."""
    while not done.wait(15):
        if _stop_requested(job_id):
            stop_file.touch()
            return


def run_training(job: dict, train=None, segment: int = 1, root: str | None = None) -> dict:
    """GPU: one segment of the training program, resuming; hands over to the next segment when it says so."""
    import subprocess

    import yaml

    from ftplan.recipes.events import read_events
    from ftplan.recipes.launch import training_command

    out = _outputs(job, root)
    base = Path(root or "/")
    os.environ.setdefault("HF_HOME", str(base / "cache" / "hf"))
    gpus, machines, rank, main_ip = _topology()
    recipe = _rebase(yaml.safe_load(job["recipe_yaml"]), base)
    recipe.setdefault("output", {})["dir"] = str(out)
    recipe_path = (out if rank == 0 else Path("/tmp")) / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    stop_file = out / "STOP"
    extra = ["--stop-file", str(stop_file), "--max-seconds", str(job["segment_seconds"])]
    if job.get("skip_eval"):
        extra.append("--skip-eval")
    if job.get("golden_sha256"):
        extra += ["--golden-sha256", job["golden_sha256"]]
    for d in job.get("resume_dirs") or []:
        extra += ["--resume-from", str(base / d.lstrip("/"))]
    events = out / "events.jsonl"
    cmd = training_command(str(recipe_path), out, events, usd_per_hour=job["usd_per_hour"], resume=True,
                           gpus=gpus * machines, distributed=recipe.get("hardware", {}).get("distributed", "auto"),
                           precision=recipe.get("hyperparameters", {}).get("precision", "bf16"),
                           config_dir=out if rank == 0 else Path("/tmp"), machines=machines, rank=rank,
                           main_ip=main_ip, extra=extra)
    done = threading.Event()
    if rank == 0:
        threading.Thread(target=_watch_stop, args=(job["id"], stop_file, done), daemon=True).start()
    try:
        code = subprocess.run(cmd).returncode
    finally:
        done.set()
        _commit("/outputs")
    if code != 0:
        raise RuntimeError(f"training exited with {code}; see {events}")  # Modal retries the attempt
    if rank != 0:
        return {"status": "worker done"}
    pairs, _ = read_events(events)
    last = pairs[-1][1] if pairs else {}
    if last.get("kind") == "segment_end" and train is not None:
        call = train.spawn(job, train, segment + 1, root)
        record_call(out, call.object_id, "train", segment + 1)
        _commit("/outputs")
        return {"status": "segment", "next": call.object_id}
    return {"status": last.get("status", "ended")}
