import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from together_server import Fault, TogetherServer

from ftplan.launcher.cli import cli
from ftplan.providers.http import APIError
from ftplan.providers.together import TogetherClient
from ftplan.providers.together_data import prepare
from ftplan.sizing.errors import DataError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KEY = "tg-test-key-0123456789"


@pytest.fixture
def server():
    with TogetherServer(KEY) as srv:
        yield srv
        assert srv.state.invalid == [], srv.state.invalid  # every request conformed to the spec
        assert srv.response_problems() == []


@pytest.fixture
def env(server, tmp_path):
    return {"TOGETHER_BASE_URL": server.url, "TOGETHER_API_KEY": KEY, "FTPLAN_HOME": str(tmp_path / "home"),
            "FTPLAN_POLL_SECONDS": "0.02", "COLUMNS": "120"}


def client(server, **kw):
    return TogetherClient(server.url, KEY, sleep=lambda s: None, **kw)


def recipe(tmp_path, data="chat.jsonl", **method):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tg", "model": "meta-llama/Llama-3.1-8B-Instruct", "data": {"path": str(EXAMPLES / data)},
        "method": {"objective": "sft", "lora": {"rank": 8}, **method},
        "hyperparameters": {"epochs": 2, "learning_rate": 1e-4},
        "output": {"dir": str(tmp_path / "out")}}))
    return path


def run(*args, env):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


# --- data ---------------------------------------------------------------------------------------


def test_preference_is_written_in_togethers_layout(tmp_path):
    path, kind, n = prepare(EXAMPLES / "preference.jsonl", tmp_path, "dpo")
    first = json.loads(path.read_text().splitlines()[0])
    assert kind == "preference" and n == 50
    assert set(first) == {"input", "preferred_output", "non_preferred_output"}
    assert first["input"]["messages"][0]["role"] == "user" and first["preferred_output"][0]["role"] == "assistant"


@pytest.mark.parametrize("lines,needle", [
    ([{"messages": [{"role": "assistant", "content": "hi"}]}], "starts with 'assistant'"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}], "alternate"),
    ([{"prompt": "a", "completion": "b"}, {"messages": [{"role": "user", "content": "x"},
                                                          {"role": "assistant", "content": "y"}]}], "mixes formats"),
])
def test_together_rules_are_checked_before_upload(tmp_path, lines, needle):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(DataError, match=needle) as exc:
        prepare(data, tmp_path / "o", "sft")
    assert "line" in str(exc.value) and not list((tmp_path / "o").glob("*.jsonl"))


def test_objectives_together_cannot_train_are_refused(tmp_path):
    with pytest.raises(DataError, match="Together fine-tunes with SFT and DPO"):
        prepare(EXAMPLES / "kto.jsonl", tmp_path, "kto")


# --- the client ---------------------------------------------------------------------------------


def test_429_storm_is_retried_honouring_retry_after(server):
    server.state.faults.append(Fault("GET", "/v1/fine-tunes/models/limits", status=429, times=3, retry_after="0"))
    waits = []
    c = TogetherClient(server.url, KEY, sleep=waits.append)
    assert c.limits("m")["lora_training"]["max_rank"] == 64
    assert waits == [0.0, 0.0, 0.0]


def test_500_storm_beyond_retries_shows_the_providers_message(server):
    server.state.faults.append(Fault("GET", "/v1/fine-tunes/models/limits", status=500, times=10))
    with pytest.raises(APIError, match=r"HTTP 500.*injected 500") as exc:
        client(server, max_retries=2).limits("m")
    assert exc.value.status == 500


def test_bad_key_is_explained_and_never_echoed():
    with TogetherServer("right-key") as srv:
        with pytest.raises(APIError) as exc:
            TogetherClient(srv.url, "wrong-key-abcdef", sleep=lambda s: None).limits("m")
    assert "Invalid API key" in str(exc.value) and "TOGETHER_API_KEY" in str(exc.value)
    assert "wrong-key-abcdef" not in str(exc.value)


def test_dropped_upload_is_retried_and_stored_once(server, tmp_path):
    path, _, _ = prepare(EXAMPLES / "chat.jsonl", tmp_path, "sft")
    server.state.faults.append(Fault("POST", "/v1/files/upload", drop=True))
    f = client(server).upload(path)
    assert len(server.state.files) == 1 and f["filename"] == path.name
    assert client(server).upload(path)["id"] == f["id"]  # same bytes: reused, not uploaded again
    assert ("POST", "/v1/files/upload", None) in server.state.requests


def test_lost_create_answer_never_makes_a_second_job(server, tmp_path):
    path, _, _ = prepare(EXAMPLES / "chat.jsonl", tmp_path, "sft")
    c = client(server)
    fid = c.upload(path)["id"]
    server.state.faults.append(Fault("POST", "/v1/fine-tunes", drop=True, after=True))
    body = {"training_file": fid, "model": "m", "suffix": "ftplan-x1"}
    job = c.create_job(body)
    assert server.state.created == 1 and job["suffix"] == "ftplan-x1"
    assert c.create_job(body)["id"] == job["id"] and server.state.created == 1


def test_slow_server_times_out_with_a_clear_message(server):
    server.state.faults.append(Fault("GET", "/v1/fine-tunes/models/limits", delay=1.0, times=5))
    with pytest.raises(APIError, match="no response.*Timeout"):
        client(server, timeout=0.2, max_retries=1).limits("m")


# --- whole jobs through the CLI -------------------------------------------------------------------


def leaked(tmp_path: Path, text: str) -> list[str]:
    return [str(p) for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()] + \
        (["stdout"] if KEY in text else [])


RECORD_FIELDS = {"id", "provider", "status", "output_dir", "events_path", "plan", "actuals", "provider_ids",
                 "recipe_hash", "resumed_from", "options", "outputs", "eval", "error", "created_at", "updated_at"}


def job_of(env) -> dict:
    [job] = json.loads(run("jobs", "--json", env=env).output)
    return job


def test_whole_job_succeeds_once_with_events_in_order_and_the_adapter_unpacked(server, env, tmp_path):
    server.state.faults += [Fault("GET", r"/v1/fine-tunes/ft-\w+", status=429, times=2, retry_after="0"),
                            Fault("GET", r"/v1/fine-tunes/ft-\w+/events", status=503, times=2, retry_after="0")]
    res = run("run", recipe(tmp_path), "--provider", "together", "--yes", env=env)
    assert res.exit_code == 0, res.output
    assert "Together quotes $" in res.output and "ftplan estimated $" in res.output
    assert server.state.created == 1
    job = job_of(env)
    assert RECORD_FIELDS <= set(job)
    remote = server.state.jobs[job["provider_ids"]["ft_id"]]
    assert job["status"] == "completed" == remote["status"]
    events = [json.loads(line) for line in run("logs", job["id"], "--json", env=env).output.splitlines()]
    remote_msgs = [e["message"] for e in server.state.events[remote["id"]]]
    got = [e["message"] for e in events if e.get("source") == "together"]
    assert got == remote_msgs  # every remote event once, in order
    assert events[0]["type"] == "started" and events[-1]["type"] == "finished"
    folder = Path(job["output_dir"])
    assert folder.parent == tmp_path / "out" and (folder / "adapter" / "adapter_config.json").is_file()
    assert server.state.downloads == [(remote["id"], "adapter")]
    # The dollars Together reports (total_price, in nanodollars per the SDK's finetune_price_to_dollars).
    assert job["actuals"]["usd"] == pytest.approx(2.5) and job["actuals"]["usd_source"] == "Together's total_price"
    assert leaked(tmp_path, res.output) == []


def test_a_finished_job_answers_status_and_logs_offline(server, env, tmp_path):
    assert run("run", recipe(tmp_path), "--provider", "together", "--yes", env=env).exit_code == 0
    job = job_of(env)
    offline = {**env, "TOGETHER_API_KEY": "", "TOGETHER_BASE_URL": "http://127.0.0.1:9/v1"}
    before = len(server.state.requests)
    status = run("status", job["id"], "--json", env=offline)
    assert status.exit_code == 0, status.output
    assert [c["step"] for c in json.loads(status.output)["checkpoints"]] == [2]  # Together's list, kept
    logs = run("logs", job["id"], env=offline)  # Together's step events carry no loss
    assert logs.exit_code == 0 and "step 2/3" in logs.output and "loss" not in logs.output.split("step 2/3")[1][:10]
    assert len(server.state.requests) == before


def test_detached_job_is_followed_pulled_with_retries_and_cancel_is_refused_once_final(server, env, tmp_path):
    res = run("run", recipe(tmp_path), "--provider", "together", "--yes", "--detach", env=env)
    assert res.exit_code == 0, res.output
    job = job_of(env)
    assert not (Path(job["output_dir"]) / "adapter").exists()
    server.state.faults += [Fault("GET", "/v1/finetune/download", status=503, times=2, retry_after="0"),
                            Fault("GET", "/v1/finetune/download", drop=True, after=True)]
    early = run("pull", job["id"], env=env)
    assert early.exit_code == 2 and "once it has completed" in early.output
    follow = run("logs", job["id"], "--follow", env=env)
    assert follow.exit_code == 0 and "finished: completed" in follow.output, follow.output
    job = job_of(env)
    assert (Path(job["output_dir"]) / "adapter" / "adapter_config.json").is_file()
    assert len(server.state.downloads) == 2  # the cut-off body was fetched again
    assert run("pull", job["id"], env=env).exit_code == 0  # again: idempotent
    refused = run("cancel", job["id"], env=env)
    assert refused.exit_code == 2 and "already ended" in refused.output


def test_detached_job_is_cancelled(server, env, tmp_path):
    res = run("run", recipe(tmp_path), "--provider", "together", "--yes", "--detach", env=env)
    assert res.exit_code == 0, res.output
    job = job_of(env)
    out = run("cancel", job["id"], "--wait", "5", env=env)
    assert "cancelled" in out.output, out.output
    assert server.state.jobs[job["provider_ids"]["ft_id"]]["status"] == "cancelled"
    assert server.state.created == 1
    actuals = job_of(env)["actuals"]
    assert actuals["usd"] == 0 and actuals["quoted_usd"] > 0  # what Together charged, not the quote


def test_resume_continues_from_togethers_checkpoint_as_a_new_job(server, env, tmp_path):
    path = recipe(tmp_path)
    assert run("run", path, "--provider", "together", "--yes", "--detach", env=env).exit_code == 0
    old = job_of(env)
    ft_id = old["provider_ids"]["ft_id"]
    for _ in range(10):  # each look advances the loopback job: queued, running step 1, step 2 + checkpoint
        if json.loads(run("status", old["id"], "--json", env=env).output)["checkpoints"]:
            break
    assert run("cancel", old["id"], "--wait", "5", env=env).exit_code == 0
    old = json.loads(run("status", old["id"], "--json", env=env).output)
    assert old["status"] == "cancelled"
    wrong = run("run", path, "--resume", old["id"], "--yes", env=env)
    assert wrong.exit_code == 2 and "--provider together" in wrong.output
    res = run("run", path, "--provider", "together", "--resume", old["id"], "--yes", env=env)
    assert res.exit_code == 0, res.output
    assert server.state.created == 2
    new_ft = next(j for j in server.state.jobs.values() if j["id"] != ft_id)
    assert new_ft["_body"]["from_checkpoint"] == f"{ft_id}:2" and "model" not in new_ft["_body"]
    new = json.loads(run("jobs", "--json", env=env).output)[0]
    assert new["resumed_from"] == old["id"] and new["status"] == "completed"
    after = json.loads(run("status", old["id"], "--json", env=env).output)
    assert {k: after[k] for k in ("status", "updated_at", "actuals")} == \
        {k: old[k] for k in ("status", "updated_at", "actuals")}


def test_failed_remote_job_is_recorded_with_togethers_reason(server, env, tmp_path):
    server.state.fail_jobs = True
    res = run("run", recipe(tmp_path), "--provider", "together", "--yes", env=env)
    assert res.exit_code == 1 and "CUDA error (injected)" in res.output
    job = job_of(env)
    assert job["status"] == "failed" and "CUDA error (injected)" in job["error"]


def test_limits_are_checked_before_any_upload_or_job(server, env, tmp_path):
    res = run("run", recipe(tmp_path, lora={"rank": 128}), "--provider", "together", "--yes", env=env)
    assert res.exit_code == 2 and "max_rank 64" in res.output and "method.lora.rank" in res.output
    assert server.state.created == 0 and server.state.files == {}
    assert json.loads(run("jobs", "--json", env=env).output) == []


def test_max_cost_below_the_quote_refuses(server, env, tmp_path):
    res = run("run", recipe(tmp_path), "--provider", "together", "--yes", "--max-cost", "0.0000001", env=env)
    assert res.exit_code == 2 and "above --max-cost" in res.output and server.state.created == 0


def test_missing_key_stops_before_anything_is_sent(server, env, tmp_path):
    res = run("run", recipe(tmp_path), "--provider", "together", "--yes", env={**env, "TOGETHER_API_KEY": ""})
    assert res.exit_code == 2 and "export TOGETHER_API_KEY" in res.output
    assert server.state.requests == []


@pytest.mark.slow
@pytest.mark.train
def test_the_pulled_adapter_passes_through_ftplans_eval(server, env, tmp_path):
    """Together's archive holds a real PEFT adapter (built here on a tiny model); `ftplan eval JOB` loads it."""
    import io
    import tarfile

    import zstandard
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ftplan.recipes.tiny import build_tiny_model

    tiny = build_tiny_model(tmp_path / "tiny")
    adapter = tmp_path / "made"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny), LoraConfig(r=4, target_modules="all-linear")) \
        .save_pretrained(adapter)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(adapter, arcname="user--tiny-ftplan")  # one top-level folder, as Together names it
    server.state.archives["adapter"] = zstandard.ZstdCompressor().compress(raw.getvalue())
    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"prompt": "what is two plus two?", "category": "safety",
                                  "checks": [{"type": "forbidden", "strings": ["<unk>"]}]}) + "\n")
    assert run("run", recipe(tmp_path), "--provider", "together", "--yes", "--skip-eval", env=env).exit_code == 0
    job = job_of(env)
    res = run("eval", job["id"], "--model", str(tiny), "--golden", str(golden), "--json", env=env)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["passed"] is True
    assert job_of(env)["eval"]["passed"] is True
