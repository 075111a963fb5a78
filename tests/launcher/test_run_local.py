"""`ftplan run --provider local` end to end on a tiny model, through the real CLI and subprocesses."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.train]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from ftplan.recipes.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def ftplan(*args, env, timeout=240, check=True):
    res = subprocess.run([sys.executable, "-m", "ftplan.launcher.cli", *map(str, args)], capture_output=True,
                         text=True, env=env, timeout=timeout)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "FTPLAN_HOME": str(tmp_path / "home"), "COLUMNS": "120"}


def recipe(tmp_path, tiny, name, steps, every=2):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "model": str(tiny), "data": {"path": str(EXAMPLES / "chat.jsonl")},
        "method": {"objective": "sft", "lora": {"rank": 4}},
        "hyperparameters": {"max_steps": steps, "batch_size": 1, "gradient_accumulation": 1, "learning_rate": 1e-3,
                            "max_seq_length": 96, "precision": "fp32"},
        "checkpoint": {"every_steps": every, "every_minutes": None},
        "output": {"dir": str(tmp_path / f"out-{name}")}}))
    return path


def test_attached_run_shows_progress_and_records_the_job(tmp_path, tiny, env):
    res = ftplan("run", recipe(tmp_path, tiny, "att", 4), "--yes", env=env)
    assert "progress" in res.stdout and "4/4 steps" in res.stdout and "completed" in res.stdout
    jobs = json.loads(ftplan("jobs", "--json", env=env).stdout)
    assert len(jobs) == 1 and jobs[0]["status"] == "completed" and jobs[0]["actuals"]["steps"] == 4
    assert jobs[0]["recipe_hash"] and jobs[0]["plan"]["dataset"]["examples"] == 50
    logs = ftplan("logs", jobs[0]["id"], "--json", env=env).stdout.splitlines()
    events = [json.loads(line) for line in logs]
    assert events[0]["type"] == "started" and events[-1]["type"] == "finished"
    status = json.loads(ftplan("status", jobs[0]["id"], "--json", env=env).stdout)
    assert status["last_step"]["step"] == 4 and [c["step"] for c in status["checkpoints"]] == [2, 4]
    assert (tmp_path / "out-att" / "adapter" / "adapter_config.json").is_file()


def test_detached_run_cancel_checkpoints_and_resume_continues(tmp_path, tiny, env):
    path = recipe(tmp_path, tiny, "det", 3000, every=10_000)
    out = ftplan("run", path, "--yes", "--detach", env=env).stdout
    job_id = out.split("job ")[1].split()[0]
    deadline = time.time() + 120
    while time.time() < deadline:
        st = json.loads(ftplan("status", job_id, "--json", env=env).stdout)
        if st["last_step"] and st["last_step"]["step"] >= 3:
            break
        time.sleep(0.5)
    ftplan("cancel", job_id, "--wait", "60", env=env)
    st = json.loads(ftplan("status", job_id, "--json", env=env).stdout)
    assert st["status"] == "cancelled"
    ckpts = sorted((tmp_path / "out-det" / "checkpoints").glob("checkpoint-*"))
    assert ckpts and (ckpts[-1] / "ftplan-complete.json").is_file()
    stopped = int(ckpts[-1].name.split("-")[1])
    followed = ftplan("logs", job_id, "--follow", env=env, timeout=30).stdout
    assert "finished: cancelled" in followed
    # Resume from the cancel's checkpoint, with fewer steps left so the test stays short.
    short = recipe(tmp_path, tiny, "det", stopped + 3, every=10_000)
    ftplan("run", short, "--yes", "--resume", job_id, env=env)
    jobs = json.loads(ftplan("jobs", "--json", env=env).stdout)
    resumed = jobs[0]
    assert resumed["status"] == "completed" and resumed["actuals"]["steps"] == stopped + 3
    first_step = next(json.loads(line) for line in ftplan("logs", resumed["id"], "--json", env=env).stdout.splitlines()
                      if '"step"' in line and '"type": "step"' in line)
    assert first_step["step"] == stopped + 1


def test_bad_recipe_exits_2_before_anything_starts(tmp_path, env):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\ndata: {path: nowhere.jsonl}\n")
    res = ftplan("run", bad, "--yes", env=env, check=False)
    assert res.returncode == 2 and "nowhere.jsonl" in res.stderr and "Traceback" not in res.stderr
    assert json.loads(ftplan("jobs", "--json", env=env).stdout) == []


def test_init_and_plan(tmp_path, tiny, env):
    text = ftplan("init", "dpo", env=env).stdout
    assert "objective: dpo" in text
    res = ftplan("init", "nonsense", env=env, check=False)
    assert res.returncode == 2 and "lora-sft" in res.stderr
    plan = json.loads(ftplan("plan", recipe(tmp_path, tiny, "p", 4), "--json", env=env).stdout)
    assert plan["dataset"]["exact_tokens"] and plan["method"]["objective"] == "sft"


def test_run_blocks_a_regressing_adapter_and_eval_refuses_a_tampered_set(tmp_path, tiny, env):
    golden = tmp_path / "golden.jsonl"
    golden.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "what is two plus two?", "category": "safety",
         "checks": [{"type": "forbidden", "strings": ["paris paris"]}]},
        {"prompt": "explain photosynthesis", "category": "safety",
         "checks": [{"type": "forbidden", "strings": ["paris paris"]}]}]))
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q {i}: what is two plus two?",
                                        "completion": " paris paris paris paris"}) + "\n" for i in range(40)))
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump({
        "name": "gate", "model": str(tiny), "data": {"path": str(data)}, "method": {"lora": {"rank": 8}},
        "hyperparameters": {"max_steps": 60, "batch_size": 4, "gradient_accumulation": 1, "learning_rate": 1e-2,
                            "max_seq_length": 64, "precision": "fp32"},
        "checkpoint": {"every_steps": None, "every_minutes": None}, "eval": {"golden": str(golden)},
        "output": {"dir": str(tmp_path / "out-gate"), "merge": True}}))
    res = ftplan("run", path, "--yes", env=env, check=False)
    assert res.returncode == 1 and "BLOCKED by the eval gate" in res.stderr
    [job] = json.loads(ftplan("jobs", "--json", env=env).stdout)
    assert job["status"] == "blocked" and job["golden_sha256"] and job["eval"]["passed"] is False
    assert not (tmp_path / "out-gate" / "merged").exists()
    again = ftplan("eval", job["id"], env=env, check=False)
    assert again.returncode == 1 and "BLOCKED" in again.stdout
    golden.write_text(golden.read_text().replace("paris", "rome"))
    refused = ftplan("eval", job["id"], env=env, check=False)
    assert refused.returncode == 2 and "changed after training began" in refused.stderr


def test_a_run_whose_projection_crosses_max_cost_is_cancelled_with_a_checkpoint(tmp_path, tiny, monkeypatch):
    from rich.console import Console

    from ftplan.launcher.jobstore import JobStore
    from ftplan.launcher.runs import start_local, watch
    from ftplan.recipes.schema import load_recipe

    monkeypatch.setenv("FTPLAN_HOME", str(tmp_path / "home"))
    path = recipe(tmp_path, tiny, "costly", 3000, every=10_000)
    store = JobStore()
    # $3600 an hour is a dollar a second: the projection for 3000 steps crosses $2 within the first steps.
    job_id = start_local(store, str(path), load_recipe(path), plan=None, usd_per_hour=3600.0)
    job = watch(store, job_id, label="costly", usd_per_hour=3600.0, planned_usd=None, max_cost=2.0,
                console=Console(file=open(os.devnull, "w")), poll=0.2)
    deadline = time.time() + 60
    while job["status"] not in ("cancelled", "completed", "failed") and time.time() < deadline:
        time.sleep(0.3)
        job = store.get(job_id)
    assert job["status"] == "cancelled", job
    ckpts = list((tmp_path / "out-costly" / "checkpoints").glob("checkpoint-*/ftplan-complete.json"))
    assert ckpts and job["actuals"]["steps"] < 3000
