"""Modal: the spec and price from the plan, the app from real SDK objects, whole jobs through the one run flow.

Whole jobs use `modal_local.LocalModalService` in place of Modal's service: the same app is built
and its function bodies run through the real `modal.Function.local()`, with Volumes as folders.
"""

import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from polling import wait_for

from ftplan.providers import modal_app, modal_provider
from ftplan.recipes.schema import parse_recipe
from ftplan.sizing.errors import FtplanError
from ftplan.sizing.prices import load_prices

modal = pytest.importorskip("modal")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RECORD_FIELDS = {"id", "provider", "status", "output_dir", "events_path", "plan", "actuals", "provider_ids",
                 "recipe_hash", "resumed_from", "options", "outputs", "eval", "error", "created_at", "updated_at"}


def modal_row(gpu: str, count: int, hours: float) -> dict:
    return {"provider": "modal", "gpu": gpu, "count": count, "hours": hours, "train_seconds": hours * 3600 - 300,
            "adapter": "lora", "usd": 1.0, "usd_per_hour": 1.0}


def plan_with(*rows) -> dict:
    return {"plans": list(rows), "per_provider": list(rows[:1])}


def recipe(**kw):
    return parse_recipe({"model": kw.pop("model", "Qwen/Qwen2.5-7B-Instruct"), "data": {"path": "d.jsonl"}, **kw})


def billed(gpu: str, count: int, region: str = "none") -> float:
    """Modal's bill per hour from the price rows: GPUs plus the CPU and memory requested beside each."""
    book = load_prices()
    m = book.providers["modal"]
    gpu_usd = next(r.usd_per_gpu_hour for r in book.gpu_rows if r.provider == "modal" and r.gpu == gpu)
    per_gpu = gpu_usd + m["cpu_usd_per_core_hour"] * m["cpu_cores_per_gpu"] + \
        m["memory_usd_per_gib_hour"] * m["memory_gib_per_gpu"]
    return count * per_gpu * m["region_multipliers"][region]


def test_spec_asks_for_and_prices_what_modal_bills():
    spec = modal_app.spec_for(recipe(), plan_with(modal_row("H100", 2, 3.0)))
    # "H100!" keeps Modal from serving an H200 at the H200 price (modal.com/docs/guide/gpu).
    assert spec.gpu == "H100!:2" and spec.nodes == 1 and spec.segments == 1
    m = load_prices().providers["modal"]
    assert spec.cpu == 2 * m["cpu_cores_per_gpu"] and spec.memory_mib == 2 * m["memory_gib_per_gpu"] * 1024
    assert spec.usd_per_hour == pytest.approx(billed("H100", 2))
    assert spec.timeout == int((3.0 * 3600 - 300) * 1.5) + 15 * 60 and spec.segment_seconds < spec.timeout
    assert spec.secret is None and not spec.unsloth


def test_a_region_request_pays_modals_multiplier():
    broad = modal_app.spec_for(recipe(providers={"modal": {"region": "us"}}), plan_with(modal_row("A100-80GB", 1, 1)))
    narrow = modal_app.spec_for(recipe(providers={"modal": {"region": "us-east"}}),
                                plan_with(modal_row("A100-80GB", 1, 1)))
    assert broad.usd_per_hour == pytest.approx(billed("A100-80GB", 1, "broad"))
    assert narrow.usd_per_hour == pytest.approx(billed("A100-80GB", 1, "narrow"))


def test_single_gpu_lora_gets_the_unsloth_image_gated_models_the_hf_secret():
    spec = modal_app.spec_for(recipe(model="meta-llama/Llama-3.1-8B-Instruct"), plan_with(modal_row("A10G", 1, 0.5)))
    assert spec.gpu == "A10" and spec.secret == "huggingface-secret" and spec.unsloth
    assert any(p.startswith("unsloth==") for p in spec.packages)
    zero3 = modal_app.spec_for(recipe(hardware={"distributed": "zero3"}), plan_with(modal_row("H100", 4, 1)))
    assert any(p.startswith("deepspeed==") for p in zero3.packages) and not zero3.unsloth


def test_a_60_hour_plan_runs_as_segments_and_16_gpus_as_two_billed_nodes():
    spec = modal_app.spec_for(recipe(), plan_with(modal_row("B200", 16, 60.0)))
    assert spec.timeout == 24 * 3600 and spec.gpu == "B200:8" and spec.nodes == 2
    assert spec.segment_seconds == 24 * 3600 - 30 * 60
    assert spec.segments == math.ceil((60 * 3600 - 300) / spec.segment_seconds) == 3
    assert spec.usd_per_hour == pytest.approx(billed("B200", 16))
    with pytest.raises(FtplanError, match="whole nodes of 8 GPUs"):
        modal_app.spec_for(recipe(hardware={"gpu": "H100", "gpus": 12}), None)


def test_a_pinned_gpu_takes_its_count_and_price_from_the_plan_and_fallbacks_are_replanned():
    plan = plan_with(modal_row("L40S", 1, 2.0), modal_row("H100", 4, 1.0), modal_row("A100-80GB", 2, 1.5))
    pinned = modal_app.spec_for(recipe(hardware={"gpu": "h100"}), plan)
    assert pinned.gpu == "H100!:4" and pinned.gpus == 4 and pinned.hours == 1.0
    assert pinned.usd_per_hour == pytest.approx(billed("H100", 4))
    spec = modal_app.spec_for(recipe(providers={"modal": {"gpu_fallbacks": ["A100-80GB"]}}), plan)
    assert spec.gpu == ["L40S", "A100-80GB:2"]
    assert spec.fallbacks[0]["usd_per_hour"] == pytest.approx(billed("A100-80GB", 2))
    with pytest.raises(FtplanError, match="cannot hold this job"):
        modal_app.spec_for(recipe(providers={"modal": {"gpu_fallbacks": ["T4"]}}), plan)
    with pytest.raises(FtplanError, match="not a GPU Modal rents"):
        modal_app.spec_for(recipe(hardware={"gpu": "RTX-4090"}), None)
    with pytest.raises(FtplanError, match="at most 4 x A10G"):
        modal_app.modal_gpu_string("A10G", 8)


def test_app_is_built_from_real_sdk_objects():
    spec = modal_app.spec_for(recipe(model="meta-llama/Llama-3.1-8B", providers={"modal": {"region": "us"}}),
                              plan_with(modal_row("H100", 2, 2.0)))
    app, conduct, train = modal_app.build_app(spec)
    assert isinstance(app, modal.App) and isinstance(train, modal.Function) and isinstance(conduct, modal.Function)
    s = train._spec_
    assert s.gpus in ("H100!:2", ["H100!:2"]) and s.cpu == spec.cpu and s.memory == spec.memory_mib
    assert {m: v.name for m, v in s.volumes.items()} == modal_app.VOLUMES and s.scheduler_placement is not None
    from modal.image import _Image  # the spec holds the SDK's underlying (unwrapped) objects

    assert len(s.secrets) == 1 and isinstance(s.image, _Image)
    assert conduct._spec_.gpus in (None, []) and conduct._spec_.cpu == modal_app.CONDUCT_CPU
    big = modal_app.spec_for(recipe(), plan_with(modal_row("H100", 16, 2.0)))
    _, _, cluster_fn = modal_app.build_app(big)
    assert isinstance(cluster_fn, modal.Function) and big.nodes == 2


def test_trackers_bring_their_packages_and_secrets_and_steer_off_an_image_they_cannot_join():
    wandb = modal_app.spec_for(recipe(output={"report_to": ["wandb"], "project": "acme"}),
                               plan_with(modal_row("A10G", 1, 0.5)))
    assert wandb.unsloth and any(p.startswith("wandb==") for p in wandb.packages)
    assert wandb.tracker_secrets == [("wandb-secret", ("WANDB_API_KEY",))]  # Modal's examples' name and key
    mlflow = modal_app.spec_for(recipe(output={"report_to": ["mlflow"]},
                                       providers={"modal": {"mlflow_secret": "team-mlflow"}}),
                                plan_with(modal_row("A10G", 1, 0.5)))
    assert not mlflow.unsloth and any("Unsloth" in n for n in mlflow.notes)
    assert any(p.startswith("mlflow-skinny==") for p in mlflow.packages)
    assert mlflow.tracker_secrets == [("team-mlflow", ("MLFLOW_TRACKING_URI",))]
    tb = modal_app.spec_for(recipe(output={"report_to": "tensorboard"}), plan_with(modal_row("A10G", 1, 0.5)))
    assert tb.tracker_secrets == [] and any(p.startswith("tensorboard==") for p in tb.packages)
    with pytest.raises(FtplanError, match="cannot hold trackio beside tensorboard: they pin pillow"):
        modal_app.spec_for(recipe(output={"report_to": ["tensorboard", "trackio"]}),
                           plan_with(modal_row("H100", 2, 0.5)))
    app, _, train = modal_app.build_app(wandb)
    assert len(train._spec_.secrets) == 1
    assert "secret wandb-secret" in modal_app.describe(wandb) and "reports to wandb" in modal_app.describe(wandb)


def test_a_tracker_without_its_secret_is_refused_before_any_upload(tmp_path):
    from modal_local import LocalModalService

    svc = LocalModalService(tmp_path, secrets=())
    provider = modal_provider.ModalProvider(svc)
    with pytest.raises(FtplanError, match="modal secret create wandb-secret WANDB_API_KEY=") as err:
        provider.check_ready(recipe(output={"report_to": ["wandb"]}))
    assert "output.report_to wandb" in str(err.value) and svc.uploaded == []


def test_not_authenticated_is_refused_before_any_upload(tmp_path):
    with pytest.raises(FtplanError, match="modal token new"):
        modal_provider.check_auth({"MODAL_CONFIG_PATH": str(tmp_path / "none.toml")})
    (tmp_path / "m.toml").write_text('[default]\ntoken_id = "ak-x"\ntoken_secret = "as-y"\n')
    modal_provider.check_auth({"MODAL_CONFIG_PATH": str(tmp_path / "m.toml")})


def test_cli_refuses_without_auth_and_uploads_nothing(tmp_path):
    from ftplan.launcher.cli import cli

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": "Qwen/Qwen2.5-7B-Instruct",
                                    "data": {"path": str(EXAMPLES / "chat.jsonl")}}))
    res = CliRunner().invoke(cli, ["run", str(path), "--provider", "modal", "--yes"],
                             env={"MODAL_CONFIG_PATH": str(tmp_path / "none.toml"), "FTPLAN_HOME": str(tmp_path)})
    assert res.exit_code == 2 and "modal token new" in res.output
    assert not (tmp_path / "jobs.sqlite3").exists() or "[]" in CliRunner().invoke(
        cli, ["jobs", "--json"], env={"FTPLAN_HOME": str(tmp_path)}).output


def test_image_carries_every_ftplan_subpackage():
    dirs = dict((remote, local) for local, remote in modal_app.source_dirs())
    assert set(dirs) == {"/root/src/ftplan", "/root/src/ftplan/sizing", "/root/src/ftplan/launcher",
                         "/root/src/ftplan/providers", "/root/src/ftplan/recipes"}
    assert all((Path(local) / "__init__.py").is_file() for local in dirs.values())
    assert (Path(dirs["/root/src/ftplan/recipes"]) / "train.py").is_file()
    assert (Path(dirs["/root/src/ftplan/providers"]) / "data" / "modal-image.lock").is_file()


def test_every_local_input_goes_to_the_data_volume_by_content_hash(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    golden = tmp_path / "g.jsonl"
    golden.write_text('{"prompt": "x", "expected": "y"}\n')
    r = parse_recipe({"model": str(model), "data": {"path": str(EXAMPLES / "chat.jsonl"),
                                                    "eval_path": str(EXAMPLES / "chat.jsonl")},
                      "eval": {"golden": str(golden)}})
    data, files = modal_provider.local_inputs(r)
    assert data["data"]["path"] == data["data"]["eval_path"]  # the same bytes, one upload
    assert data["model"].startswith("/data/") and data["eval"]["golden"].startswith("/data/")
    assert sorted(p.name for p in files.values()) == ["chat.jsonl", "g.jsonl", "model"]
    hub = parse_recipe({"model": "Qwen/Qwen2.5-7B", "data": {"path": "tatsu-lab/alpaca"}})
    assert modal_provider.local_inputs(hub) == (hub.model_dump(mode="json"), {})


def test_a_gated_model_without_the_hf_secret_is_refused_before_any_upload(tmp_path):
    from modal_local import LocalModalService

    svc = LocalModalService(tmp_path, secrets=())
    provider = modal_provider.ModalProvider(svc)
    with pytest.raises(FtplanError, match="modal secret create huggingface-secret HF_TOKEN"):
        provider.check_ready(recipe(model="meta-llama/Llama-3.1-8B-Instruct"))
    assert svc.uploaded == []


# --- whole jobs through `ftplan run --provider modal`, with the function bodies run locally ---------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from ftplan.recipes.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def service(tmp_path, monkeypatch):
    from modal_local import LocalModalService

    svc = LocalModalService(tmp_path / "modal")
    monkeypatch.setattr(modal_provider, "service", lambda: svc)
    monkeypatch.setenv("FTPLAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FTPLAN_POLL_SECONDS", "0.3")
    return svc


def tiny_recipe(tmp_path, tiny, steps: int, every: int = 2, **extra) -> Path:
    path = tmp_path / "modal-tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "modal-tiny", "model": str(tiny), "data": {"path": str(EXAMPLES / "chat.jsonl")},
        "method": {"objective": "sft", "lora": {"rank": 4}},
        "hyperparameters": {"max_steps": steps, "batch_size": 1, "gradient_accumulation": 1, "learning_rate": 1e-3,
                            "max_seq_length": 96, "precision": "fp32"},
        "checkpoint": {"every_steps": every, "every_minutes": None}, "hardware": {"gpu": "L4"},
        "output": {"dir": str(tmp_path / "out")}, **extra}))
    return path


def ftplan(*args):
    from ftplan.launcher.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def only_job() -> dict:
    [job] = json.loads(ftplan("jobs", "--json").output)
    return job



def status(job_id) -> dict:
    return json.loads(ftplan("status", job_id, "--json").output)


def step_reached(job_id, step):
    st = status(job_id)
    return st["last_step"] and st["last_step"]["step"] >= step and st


@pytest.mark.slow
@pytest.mark.train
def test_run_status_logs_pull_and_eval_through_the_one_flow(tmp_path, tiny, service):
    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"prompt": "two plus two?", "category": "safety",
                                  "checks": [{"type": "forbidden", "strings": ["<unk>"]}]}) + "\n")
    stale = service.root / "outputs" / "20261201-000000-000000" / "events.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"type": "finished", "status": "completed", "time": 1}) + "\n")
    res = ftplan("run", tiny_recipe(tmp_path, tiny, 4, eval={"golden": str(golden)}), "--provider", "modal", "--yes")
    assert res.exit_code == 0, res.output
    job = only_job()
    assert RECORD_FIELDS <= set(job) and job["status"] == "completed" and job["actuals"]["steps"] == 4
    assert job["eval"]["passed"] is True  # the program's own gate, run inside the container
    assert sorted(k.split("/")[1] for k in service.uploaded) == ["chat.jsonl", "golden.jsonl", "model"]
    launched = service.launched[0]["job"]
    assert launched["id"] == job["id"] and launched["hub_model"] is None
    events = [json.loads(line) for line in ftplan("logs", job["id"], "--json").output.splitlines()]
    assert events[0]["type"] == "started" and events[-1]["type"] == "finished"
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4]
    folder = Path(job["output_dir"])
    before = (folder / "events.jsonl").read_bytes()
    assert (folder / "adapter" / "adapter_config.json").is_file() and (folder / "manifest.json").is_file()
    assert not (folder / "checkpoints").exists() and (folder / "events.jsonl").read_bytes() == before
    res = ftplan("eval", job["id"], "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["passed"] is True
    # The container's log tail and the dashboard link, kept with the finished job.
    st = ftplan("status", job["id"]).output
    assert "dashboard: https://modal.com/id/ap-local" in st and "  | " in st
    assert ftplan("pull", job["id"], "--checkpoints").exit_code == 0 and (folder / "checkpoints").is_dir()
    assert "container log (https://modal.com/id/ap-local):" in ftplan("logs", job["id"], "--container", "5").output


@pytest.mark.slow
@pytest.mark.train
def test_poll_faults_leave_the_job_running_and_cancel_leaves_a_checkpoint(tmp_path, tiny, service):
    res = ftplan("run", tiny_recipe(tmp_path, tiny, 3000, every=10_000), "--provider", "modal", "--yes", "--detach")
    assert res.exit_code == 0, res.output
    job_id = only_job()["id"]
    wait_for(lambda: step_reached(job_id, 2))
    service.read_faults, service.state_faults = 2, 2
    for _ in range(3):
        st = status(job_id)
        assert st["status"] == "running"
    assert "injected" in json.dumps(st["warning"]) or service.read_faults == 0
    assert ftplan("cancel", job_id, "--wait", "120").exit_code == 0
    st = wait_for(lambda: (s := status(job_id))["status"] == "cancelled" and s)
    assert st["actuals"]["steps"] < 3000
    done = list((service.root / "outputs" / job_id / "checkpoints").glob("checkpoint-*/ftplan-complete.json"))
    assert done


@pytest.mark.slow
@pytest.mark.train
def test_a_preempted_attempt_resumes_and_a_resume_job_continues_on_modal(tmp_path, tiny, service):
    res = ftplan("run", tiny_recipe(tmp_path, tiny, 60, every=5), "--provider", "modal", "--yes", "--detach")
    assert res.exit_code == 0, res.output
    job_id = only_job()["id"]
    wait_for(lambda: step_reached(job_id, 6))
    call = json.loads((service.root / "outputs" / job_id / "calls.json").read_text())[-1]["call_id"]
    service.kill_attempt(call)  # a preemption: Modal retries the input in a new container
    st = wait_for(lambda: (s := status(job_id))["status"] == "completed" and s)
    events = [json.loads(line) for line in ftplan("logs", job_id, "--json").output.splitlines()]
    notes = [e["message"] for e in events if e["type"] == "log" and "attempt 2" in e.get("message", "")]
    assert notes and "resumed from" in notes[0] and "checkpoint-" in notes[0]
    assert [e["step"] for e in events if e["type"] == "step"][-1] == 60 and st["actuals"]["steps"] == 60
    # Billed across both attempts, not only the one that finished.
    starts = [e["time"] for e in events if e["type"] == "started"]
    assert st["actuals"]["billed_seconds"] > events[-1]["time"] - starts[-1]
    # --resume on Modal: a new job that starts from this one's checkpoints on the outputs Volume.
    res = ftplan("run", tiny_recipe(tmp_path, tiny, 63, every=5), "--provider", "modal", "--yes", "--resume", job_id)
    assert res.exit_code == 0, res.output
    new = json.loads(ftplan("jobs", "--json").output)[0]
    assert new["resumed_from"] == job_id and new["status"] == "completed"
    steps = [json.loads(x)["step"] for x in Path(new["events_path"]).read_text().splitlines() if '"step"' in x
             and '"type": "step"' in x]
    assert steps == [61, 62, 63]


@pytest.mark.slow
@pytest.mark.train
def test_a_job_longer_than_its_attempt_runs_as_segments(tmp_path, tiny, service, monkeypatch):
    real = modal_app.spec_for

    def short_segments(recipe, plan, prices=None):
        spec = real(recipe, plan, prices)
        spec.segment_seconds = 4  # stands in for ~23.5 h: each segment checkpoints and hands over
        return spec

    monkeypatch.setattr(modal_app, "spec_for", short_segments)
    res = ftplan("run", tiny_recipe(tmp_path, tiny, 400, every=10_000), "--provider", "modal", "--yes")
    assert res.exit_code == 0, res.output
    job = only_job()
    calls = json.loads((service.root / "outputs" / job["id"] / "calls.json").read_text())
    assert job["status"] == "completed" and len(calls) >= 2
    assert [c["segment"] for c in calls] == list(range(1, len(calls) + 1))
    steps = [json.loads(x)["step"] for x in Path(job["events_path"]).read_text().splitlines()
             if '"type": "step"' in x]
    assert steps == list(range(1, 401))  # every step once, across the segments
