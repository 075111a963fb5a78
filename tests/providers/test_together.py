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


def test_whole_job_succeeds_once_with_events_in_order(server, env, tmp_path):
    server.state.faults += [Fault("GET", r"/v1/fine-tunes/ft-\w+", status=429, times=2, retry_after="0"),
                            Fault("GET", r"/v1/fine-tunes/ft-\w+/events", status=503, times=2, retry_after="0")]
    res = run("run", recipe(tmp_path), "--provider", "together", "--yes", env=env)
    assert res.exit_code == 0, res.output
    assert "Together quotes $" in res.output and "ftplan estimated $" in res.output
    assert server.state.created == 1
    jobs = json.loads(run("jobs", "--json", env=env).output)
    [job] = jobs
    remote = server.state.jobs[job["provider_ids"]["ft_id"]]
    assert job["status"] == "completed" == remote["status"]
    events = [json.loads(line) for line in run("logs", job["id"], "--json", env=env).output.splitlines()]
    remote_msgs = [e["message"] for e in server.state.events[remote["id"]]]
    got = [e["message"] for e in events if e.get("source") == "together"]
    assert got == remote_msgs  # every remote event once, in order
    assert events[0]["type"] == "started" and events[-1]["type"] == "finished"
    assert (tmp_path / "out" / "adapter.tar.zst").read_bytes().startswith(b"ADAPTER-BYTES")
    status = json.loads(run("status", job["id"], "--json", env=env).output)
    assert [c["step"] for c in status["checkpoints"]] == [2]  # Together's checkpoint list
    assert leaked(tmp_path, res.output) == []


def test_failed_remote_job_is_recorded(server, env, tmp_path):
    server.state.fail_jobs = True
    res = run("run", recipe(tmp_path), "--provider", "together", "--yes", env=env)
    assert res.exit_code == 1 and "failed" in res.output
    [job] = json.loads(run("jobs", "--json", env=env).output)
    assert job["status"] == "failed" and "error" in job["error"]


def test_detached_job_is_followed_and_cancelled(server, env, tmp_path):
    res = run("run", recipe(tmp_path), "--provider", "together", "--yes", "--detach", env=env)
    assert res.exit_code == 0, res.output
    [job] = json.loads(run("jobs", "--json", env=env).output)
    out = run("cancel", job["id"], "--wait", "5", env=env)
    assert "cancelled" in out.output, out.output
    assert server.state.jobs[job["provider_ids"]["ft_id"]]["status"] == "cancelled"
    assert server.state.created == 1


def test_limits_are_checked_before_any_job(server, env, tmp_path):
    res = run("run", recipe(tmp_path, lora={"rank": 128}), "--provider", "together", "--yes", env=env)
    assert res.exit_code == 2 and "max_rank 64" in res.output and "method.lora.rank" in res.output
    assert server.state.created == 0
    [job] = json.loads(run("jobs", "--json", env=env).output)
    assert job["status"] == "failed" and "checking the model's limits" in job["error"]


def test_max_cost_below_the_quote_refuses(server, env, tmp_path):
    res = run("run", recipe(tmp_path), "--provider", "together", "--yes", "--max-cost", "0.0000001", env=env)
    assert res.exit_code == 2 and "above --max-cost" in res.output and server.state.created == 0


def test_missing_key_stops_before_anything_is_sent(server, env, tmp_path):
    res = run("run", recipe(tmp_path), "--provider", "together", "--yes", env={**env, "TOGETHER_API_KEY": ""})
    assert res.exit_code == 2 and "export TOGETHER_API_KEY" in res.output
    assert server.state.requests == []
