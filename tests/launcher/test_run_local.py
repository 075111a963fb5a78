"""`ftplan run --provider local` end to end on a tiny model, through the real CLI and subprocesses.

Each test drives the commands a user types (run, jobs, status, logs, cancel, pull) and checks the
job records, the job folders and the exit codes the README documents.
"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from polling import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.train]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RECORD_FIELDS = {"id", "provider", "status", "output_dir", "events_path", "plan", "actuals", "provider_ids",
                 "recipe_hash", "resumed_from", "options", "outputs", "eval", "error", "created_at", "updated_at"}


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


def start(*args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ftplan.launcher.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "FTPLAN_HOME": str(tmp_path / "home"), "COLUMNS": "120"}


def recipe(tmp_path, tiny, name, steps, every=2, out="out"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "model": str(tiny), "data": {"path": str(EXAMPLES / "chat.jsonl")},
        "method": {"objective": "sft", "lora": {"rank": 4}},
        "hyperparameters": {"max_steps": steps, "batch_size": 1, "gradient_accumulation": 1, "learning_rate": 1e-3,
                            "max_seq_length": 96, "precision": "fp32"},
        "checkpoint": {"every_steps": every, "every_minutes": None},
        "output": {"dir": str(tmp_path / out)}}))
    return path


def jobs(env) -> list[dict]:
    return json.loads(ftplan("jobs", "--json", env=env).stdout)


def status(job_id, env) -> dict:
    return json.loads(ftplan("status", job_id, "--json", env=env).stdout)



def started_id(out: str) -> str:
    return out.split("job ")[1].split()[0]


def step_reached(job_id, env, step):
    st = status(job_id, env)
    return st["last_step"] and st["last_step"]["step"] >= step and st


def file_events(job: dict) -> list[dict]:
    return [json.loads(line) for line in Path(job["events_path"]).read_text().splitlines()]


def test_attached_run_records_the_job_in_its_own_folder(tmp_path, tiny, env):
    res = ftplan("run", recipe(tmp_path, tiny, "att", 4), "--yes", env=env)
    assert "progress" in res.stdout and "4/4 steps" in res.stdout and "completed" in res.stdout
    [job] = jobs(env)
    assert RECORD_FIELDS <= set(job) and job["status"] == "completed" and job["actuals"]["steps"] == 4
    folder = Path(job["output_dir"])
    assert folder == tmp_path / "out" / job["id"] and Path(job["events_path"]) == folder / "events.jsonl"
    assert json.loads((folder / "job.json").read_text())["status"] == "completed"
    assert (folder / "recipe.yaml").is_file() and (folder / "adapter" / "adapter_config.json").is_file()
    assert job["recipe_hash"] and job["plan"]["dataset"]["examples"] == 50
    events = [json.loads(line) for line in ftplan("logs", job["id"], "--json", env=env).stdout.splitlines()]
    assert events[0]["type"] == "started" and events[-1]["type"] == "finished" and events == file_events(job)
    st = status(job["id"], env)
    assert st["last_step"]["step"] == 4 and [c["step"] for c in st["checkpoints"]] == [2, 4]
    assert st["outputs_path"] == str(folder / "adapter")
    assert str(folder / "adapter") in ftplan("pull", job["id"], env=env).stdout


def test_two_runs_of_one_recipe_keep_their_own_folders_events_and_results(tmp_path, tiny, env):
    path = recipe(tmp_path, tiny, "twin", 12, every=4)
    ids = [started_id(ftplan("run", path, "--yes", "--detach", env=env).stdout) for _ in range(2)]
    for job_id in ids:
        ftplan("logs", job_id, "--follow", env=env, timeout=180)
    records = {j["id"]: j for j in jobs(env)}
    assert len({records[i]["output_dir"] for i in ids}) == 2
    for job_id in ids:
        job = records[job_id]
        events = file_events(job)
        assert [e["type"] for e in events].count("started") == 1 and events[-1]["status"] == "completed"
        stored = [json.loads(line) for line in ftplan("logs", job_id, "--json", env=env).stdout.splitlines()]
        assert stored == events  # 18-ish each, never the other job's
        assert job["actuals"]["output"].startswith(job["output_dir"])


def test_cancel_then_resume_is_a_new_job_and_the_old_record_never_changes(tmp_path, tiny, env):
    path = recipe(tmp_path, tiny, "det", 3000, every=10_000)
    job_id = started_id(ftplan("run", path, "--yes", "--detach", env=env).stdout)
    wait_for(lambda: step_reached(job_id, env, 3))
    ftplan("cancel", job_id, "--wait", "60", env=env)
    old = status(job_id, env)
    assert old["status"] == "cancelled"
    ckpts = sorted((Path(old["output_dir"]) / "checkpoints").glob("checkpoint-*"))
    assert ckpts and (ckpts[-1] / "ftplan-complete.json").is_file()
    stopped = int(ckpts[-1].name.split("-")[1])
    assert "finished: cancelled" in ftplan("logs", job_id, "--follow", env=env, timeout=30).stdout
    old_events = ftplan("logs", job_id, "--json", env=env).stdout
    # Resume with fewer steps left so the test stays short.
    short = recipe(tmp_path, tiny, "det", stopped + 3, every=10_000)
    res = ftplan("run", short, "--yes", "--resume", job_id, env=env)
    new_id = started_id(res.stdout)
    new = status(new_id, env)
    assert new["status"] == "completed" and new["resumed_from"] == job_id and new["actuals"]["steps"] == stopped + 3
    first_step = next(e for e in file_events(new) if e["type"] == "step")
    assert first_step["step"] == stopped + 1 and new["output_dir"] != old["output_dir"]
    after = status(job_id, env)
    assert {k: after[k] for k in ("status", "actuals", "error", "updated_at")} == \
        {k: old[k] for k in ("status", "actuals", "error", "updated_at")}
    assert ftplan("logs", job_id, "--json", env=env).stdout == old_events


def test_a_killed_job_is_failed_and_stays_failed_after_its_resume(tmp_path, tiny, env):
    path = recipe(tmp_path, tiny, "kill", 3000, every=3)
    job_id = started_id(ftplan("run", path, "--yes", "--detach", env=env).stdout)
    wait_for(lambda: step_reached(job_id, env, 7))
    os.killpg(status(job_id, env)["provider_ids"]["pid"], signal.SIGKILL)
    failed = wait_for(lambda: (s := status(job_id, env))["status"] == "failed" and s)
    assert "without a final event" in failed["error"]
    done = [c["step"] for c in failed["checkpoints"]]
    ftplan("run", recipe(tmp_path, tiny, "kill", done[-1] + 2, every=3), "--yes", "--resume", job_id, env=env)
    after = status(job_id, env)
    assert after["status"] == "failed" and after["actuals"] is None and after["updated_at"] == failed["updated_at"]
    [new, _] = jobs(env)
    assert new["resumed_from"] == job_id and new["status"] == "completed"


def test_resume_skips_a_damaged_newest_checkpoint_and_says_which(tmp_path, tiny, env):
    first = ftplan("run", recipe(tmp_path, tiny, "dmg", 6, every=2), "--yes", env=env)
    job_id = started_id(first.stdout)
    folder = Path(status(job_id, env)["output_dir"])
    weights = folder / "checkpoints" / "checkpoint-6" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a copy cut short
    ftplan("run", recipe(tmp_path, tiny, "dmg", 8, every=2), "--yes", "--resume", job_id, env=env)
    new = jobs(env)[0]
    events = file_events(new)
    text = " ".join(e.get("message", "") for e in events if e["type"] == "log")
    assert "checkpoint-6 cannot be loaded (adapter_model.safetensors" in text
    assert "resuming from" in text and text.split("resuming from ")[1].split()[0].endswith("checkpoint-4")
    assert [e["step"] for e in events if e["type"] == "step"][0] == 5 and new["status"] == "completed"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_to_a_foreground_run_checkpoints_and_stops_the_training(tmp_path, tiny, env, sig):
    proc = start("run", recipe(tmp_path, tiny, "sig", 3000, every=10_000), "--yes", env=env)
    job_id = wait_for(lambda: jobs(env) and jobs(env)[0]["id"], proc=proc)
    wait_for(lambda: step_reached(job_id, env, 2), proc=proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, out + err
    assert signal.Signals(sig).name in out + err and "--resume" in err
    st = status(job_id, env)
    assert st["status"] == "cancelled" and st["checkpoints"]


def test_ctrl_c_stops_watching_only_and_says_how_to_follow(tmp_path, tiny, env):
    proc = start("run", recipe(tmp_path, tiny, "intr", 3000, every=10_000), "--yes", env=env)
    job_id = wait_for(lambda: jobs(env) and jobs(env)[0]["id"], proc=proc)
    wait_for(lambda: step_reached(job_id, env, 2), proc=proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4 and "keeps running" in out and f"ftplan logs {job_id} --follow" in out
    assert status(job_id, env)["status"] == "running"
    ftplan("cancel", job_id, "--wait", "60", env=env)
    assert status(job_id, env)["status"] == "cancelled"


def test_bad_recipe_exits_2_before_anything_starts(tmp_path, env):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\ndata: {path: nowhere.jsonl}\n")
    res = ftplan("run", bad, "--yes", env=env, check=False)
    assert res.returncode == 2 and "nowhere.jsonl" in res.stderr and "Traceback" not in res.stderr
    assert jobs(env) == []


def test_a_damaged_store_stops_job_commands_but_not_the_planner_and_can_be_rebuilt(tmp_path, tiny, env):
    path = recipe(tmp_path, tiny, "store", 2)
    job_id = started_id(ftplan("run", path, "--yes", env=env).stdout)
    store = tmp_path / "home" / "jobs.sqlite3"
    store.write_bytes(b"\x13\x37 this is not a database " * 64)
    for args in (("jobs",), ("status", job_id), ("logs", job_id)):
        res = ftplan(*args, env=env, check=False)
        assert res.returncode == 2 and str(store) in res.stderr and "Traceback" not in res.stderr
    for args in (("estimate", "--model", "llama-3.1-8b", "--json"), ("prices", "--json"), ("models", "--json"),
                 ("gpus", "--json"), ("plan", path, "--json")):
        assert ftplan(*args, env=env).returncode == 0
    store.rename(store.with_suffix(".damaged"))
    for side in ("-wal", "-shm"):
        Path(str(store) + side).unlink(missing_ok=True)
    ftplan("jobs", "--import", tmp_path / "out", env=env)
    [job] = jobs(env)
    assert job["id"] == job_id and job["status"] == "completed"
    assert ftplan("logs", job_id, env=env).stdout.count("step") >= 2


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
    [job] = jobs(env)
    assert job["status"] == "blocked" and job["options"]["golden_sha256"] and job["eval"]["passed"] is False
    assert not (Path(job["output_dir"]) / "merged").exists()
    # The verdict per category, wherever a person looks: the live view's end screen, status, logs and jobs.
    cat = job["eval"]["categories"]["safety"]
    line = f"safety: base {100 * cat['base']:.0f} % -> adapter {100 * cat['adapter']:.0f} % of 2"
    assert re.search(r"eval gate +BLOCKED on golden.jsonl", res.stdout) and line in res.stdout
    assert "eval gate: BLOCKED on golden.jsonl" in res.stderr and line in res.stderr
    shown = ftplan("status", job["id"], env=env).stdout
    assert "eval gate: BLOCKED on golden.jsonl" in shown and line in shown and "why: safety regresses" in shown
    logged = ftplan("logs", job["id"], env=env).stdout
    assert "eval gate: BLOCKED on golden.jsonl" in logged and line in logged
    table = ftplan("jobs", env=env).stdout
    assert "gate" in table and "blocked" in table.split(job["id"])[1].splitlines()[0]
    assert (Path(job["output_dir"]) / "loss.svg").is_file()
    again = ftplan("eval", job["id"], env=env, check=False)
    assert again.returncode == 1 and "BLOCKED" in again.stdout
    golden.write_text(golden.read_text().replace("paris", "rome"))
    refused = ftplan("eval", job["id"], env=env, check=False)
    assert refused.returncode == 2 and "changed after training began" in refused.stderr


def test_a_run_whose_projection_crosses_max_cost_is_cancelled_with_a_checkpoint(tmp_path, tiny, monkeypatch):
    from click.testing import CliRunner

    from ftplan.launcher.cli import cli
    from ftplan.providers.base import Quote
    from ftplan.providers.local import LocalProvider

    monkeypatch.setenv("FTPLAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FTPLAN_POLL_SECONDS", "0.2")
    # $3600 an hour is a dollar a second: the projection for 3000 steps crosses $2 within the first steps.
    monkeypatch.setattr(LocalProvider, "quote", lambda self, r, p: Quote(1.0, "a priced box", 3600.0, None, []))
    res = CliRunner().invoke(cli, ["run", str(recipe(tmp_path, tiny, "costly", 3000, every=10_000)), "--yes",
                                   "--max-cost", "2"])
    assert res.exit_code == 3 and "--max-cost" in res.output, res.output
    from ftplan.launcher.jobstore import JobStore

    [job] = JobStore().list()
    assert job["status"] == "cancelled" and job["actuals"]["steps"] < 3000
    assert list((Path(job["output_dir"]) / "checkpoints").glob("checkpoint-*/ftplan-complete.json"))
