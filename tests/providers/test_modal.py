"""The Modal app is built from real SDK objects and inspected; its body runs through `.local()`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ftplan.providers import modal_app
from ftplan.recipes.schema import parse_recipe
from ftplan.sizing.errors import FtplanError

modal = pytest.importorskip("modal")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def plan_with(gpu: str, count: int, hours: float, usd_per_hour: float = 8.0) -> dict:
    return {"per_provider": [{"provider": "modal", "gpu": gpu, "count": count, "hours": hours, "adapter": "lora",
                              "usd": hours * usd_per_hour, "usd_per_hour": usd_per_hour}]}


def recipe(**kw):
    return parse_recipe({"model": kw.pop("model", "Qwen/Qwen2.5-7B-Instruct"), "data": {"path": "d.jsonl"}, **kw})


def test_spec_follows_the_plan():
    spec = modal_app.spec_for(recipe(), plan_with("H100", 2, 3.0))
    assert spec.gpu == "H100:2" and spec.nodes == 1 and spec.segments == 1
    assert spec.timeout == int(3.0 * 3600 * 1.5) + 15 * 60
    assert spec.secret is None and spec.usd_per_hour == 8.0
    assert not any(p.startswith("unsloth") for p in spec.packages)  # two GPUs: PEFT + accelerate


def test_single_gpu_lora_gets_unsloth_gated_models_get_the_hf_secret():
    spec = modal_app.spec_for(recipe(model="meta-llama/Llama-3.1-8B-Instruct"), plan_with("A10G", 1, 0.5))
    assert spec.gpu == "A10" and spec.secret == "huggingface-secret"
    assert modal_app.UNSLOTH in spec.packages and spec.timeout == modal_app.MIN_TIMEOUT + int(0.5 * 3600 * 1.5)


def test_long_plans_run_as_24h_segments_and_big_ones_as_clusters():
    spec = modal_app.spec_for(recipe(), plan_with("B200", 32, 60.0))
    assert spec.timeout == 24 * 3600 and spec.segments == 4 and spec.gpu == "B200:8" and spec.nodes == 4


def test_fallbacks_pins_and_refusals():
    spec = modal_app.spec_for(recipe(providers={"modal": {"gpu_fallbacks": ["A100-80GB"]}}), plan_with("H100", 4, 1))
    assert spec.gpu == ["H100:4", "A100-80GB:4"]
    assert modal_app.spec_for(recipe(hardware={"gpu": "l40s", "gpus": 2}), None).gpu == "L40S:2"
    with pytest.raises(FtplanError, match="not a GPU Modal rents"):
        modal_app.spec_for(recipe(hardware={"gpu": "RTX-4090"}), None)
    with pytest.raises(FtplanError, match="at most 4 x A10"):
        modal_app.modal_gpu_string("A10G", 8)


def test_app_is_built_from_real_sdk_objects():
    spec = modal_app.spec_for(recipe(model="meta-llama/Llama-3.1-8B"), plan_with("H100", 2, 2.0))
    app, fn = modal_app.build_app(spec)
    assert isinstance(app, modal.App) and isinstance(fn, modal.Function)
    s = fn._spec_
    assert s.gpus == "H100:2" or s.gpus == ["H100:2"]
    assert {m: v.name for m, v in s.volumes.items()} == modal_app.VOLUMES
    from modal.image import _Image  # the spec holds the SDK's underlying (unwrapped) objects

    assert len(s.secrets) == 1 and isinstance(s.image, _Image)
    big = modal_app.spec_for(recipe(), plan_with("H100", 16, 2.0))
    _, cluster_fn = modal_app.build_app(big)
    assert isinstance(cluster_fn, modal.Function) and big.nodes == 2


def test_not_authenticated_is_refused_before_any_upload(tmp_path):
    with pytest.raises(FtplanError, match="modal token new"):
        modal_app.check_ready({"MODAL_CONFIG_PATH": str(tmp_path / "none.toml")})
    (tmp_path / "m.toml").write_text('[default]\ntoken_id = "ak-x"\ntoken_secret = "as-y"\n')
    modal_app.check_ready({"MODAL_CONFIG_PATH": str(tmp_path / "m.toml")})


def test_cli_refuses_without_auth_and_uploads_nothing(tmp_path):
    from click.testing import CliRunner

    from ftplan.launcher.cli import cli

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": "Qwen/Qwen2.5-7B-Instruct",
                                    "data": {"path": str(EXAMPLES / "chat.jsonl")}}))
    res = CliRunner().invoke(cli, ["run", str(path), "--provider", "modal", "--yes"],
                             env={"MODAL_CONFIG_PATH": str(tmp_path / "none.toml"), "FTPLAN_HOME": str(tmp_path)})
    assert res.exit_code == 2 and "modal token new" in res.output
    assert not (tmp_path / "jobs.sqlite3").exists() or "[]" in CliRunner().invoke(
        cli, ["jobs", "--json"], env={"FTPLAN_HOME": str(tmp_path)}).output


def tiny_recipe(tiny, steps: int, every: int = 2) -> str:
    return yaml.safe_dump({"name": "modal-tiny", "model": str(tiny), "data": {"path": str(EXAMPLES / "chat.jsonl")},
                           "method": {"objective": "sft", "lora": {"rank": 4}},
                           "hyperparameters": {"max_steps": steps, "batch_size": 1, "gradient_accumulation": 1,
                                               "learning_rate": 1e-3, "max_seq_length": 96, "precision": "fp32"},
                           "checkpoint": {"every_steps": every, "every_minutes": None}})


@pytest.mark.slow
@pytest.mark.train
def test_function_body_runs_locally_and_feeds_the_same_live_view(tmp_path):
    from ftplan.launcher.follow import sync
    from ftplan.launcher.jobstore import JobStore
    from ftplan.recipes.tiny import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny")
    spec = modal_app.spec_for(recipe(), plan_with("H100", 1, 0.1))
    _, fn = modal_app.build_app(spec)
    store = JobStore(tmp_path / "j.sqlite3")
    job_id = store.create("modal", events_path=str(tmp_path / "root" / "outputs" / "JOB" / "events.jsonl"),
                          status="submitted")
    result = fn.local(tiny_recipe(tiny, 4), "JOB", 3.9, str(tmp_path / "root"))
    assert result["job"] == "JOB" and (tmp_path / "root" / "outputs" / "JOB" / "adapter").is_dir()
    job, new = sync(store, job_id)
    assert job["status"] == "completed" and [e["type"] for e in new][0] == "started"
    assert [e["step"] for e in new if e["type"] == "step"] == [1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.train
def test_a_call_killed_midway_resumes_from_its_checkpoint_like_a_preemption(tmp_path):
    from ftplan.recipes.tiny import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny")
    root = tmp_path / "root"
    script = tmp_path / "call.py"
    script.write_text(
        "import sys\nfrom ftplan.providers import modal_app\n"
        "spec = modal_app.spec_for(modal_app.parse_recipe({'model': 'x', 'data': {'path': 'd'}}), "
        "{'per_provider': [{'provider': 'modal', 'gpu': 'H100', 'count': 1, 'hours': 0.1, 'usd_per_hour': 4}]})\n"
        "_, fn = modal_app.build_app(spec)\n"
        f"fn.local(open(sys.argv[1]).read(), 'JOB', 4.0, {str(root)!r})\n")
    long = tmp_path / "long.yaml"
    long.write_text(tiny_recipe(tiny, 3000, every=5))
    proc = subprocess.Popen([sys.executable, str(script), str(long)], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = root / "outputs" / "JOB" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not list(ckpts.glob("checkpoint-*/ftplan-complete.json")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # a preemption: no goodbye, no final event
    proc.wait(30)
    done = sorted(int(p.parent.name.split("-")[1]) for p in ckpts.glob("checkpoint-*/ftplan-complete.json"))
    assert done, "no checkpoint was completed before the kill"
    short = tmp_path / "short.yaml"
    short.write_text(tiny_recipe(tiny, done[-1] + 3, every=5))
    subprocess.run([sys.executable, str(script), str(short)], check=True, capture_output=True, timeout=240)
    events = [json.loads(x) for x in (root / "outputs" / "JOB" / "events.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["type"] == "started"]
    assert len(starts) == 2 and starts[1]["resumed_from"].endswith(f"checkpoint-{done[-1]}")
    after = events[events.index(starts[1]):]
    assert [e["step"] for e in after if e["type"] == "step"][0] == done[-1] + 1
    assert after[-1]["type"] == "finished" and after[-1]["status"] == "completed"


def test_image_carries_every_ftplan_subpackage():
    dirs = dict((remote, local) for local, remote in modal_app.source_dirs())
    assert set(dirs) == {"/root/src/ftplan", "/root/src/ftplan/sizing", "/root/src/ftplan/launcher",
                         "/root/src/ftplan/providers", "/root/src/ftplan/recipes"}
    assert all((Path(local) / "__init__.py").is_file() for local in dirs.values())
    assert (Path(dirs["/root/src/ftplan/recipes"]) / "train.py").is_file()
    assert (Path(dirs["/root/src/ftplan/sizing"]) / "data" / "prices.json").is_file()
