import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from loopback import Fault
from openai_server import OpenAIServer

from ftplan.launcher.cli import cli
from ftplan.providers.openai_ft import OpenAIClient, calendar_check, prepare
from ftplan.sizing.errors import DataError, FtplanError
from ftplan.sizing.prices import load_prices, parse_date

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def server():
    with OpenAIServer(KEY) as srv:
        yield srv
        assert srv.state.invalid == [], srv.state.invalid
        assert srv.response_problems() == []


@pytest.fixture
def env(server, tmp_path):
    return {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": KEY, "FTPLAN_HOME": str(tmp_path / "home"),
            "FTPLAN_POLL_SECONDS": "0.02", "FTPLAN_TODAY": "2026-11-24", "COLUMNS": "120"}


def recipe(tmp_path, data="chat.jsonl", model="gpt-4.1-mini-2025-04-14", **method):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "name": "oa", "model": model, "data": {"path": str(EXAMPLES / data)},
        "method": {"objective": "sft", **method}, "hyperparameters": {"epochs": 2},
        "output": {"dir": str(tmp_path / "out")}}))
    return path


def run(*args, env):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def test_calendar_warns_before_and_refuses_after_the_cutoff():
    book = load_prices()
    assert "no new jobs after 2027-01-06" in calendar_check(book, "gpt-4.1-mini-2025-04-14", parse_date("2026-11-24"))
    with pytest.raises(FtplanError, match="stopped accepting.*--provider together"):
        calendar_check(book, "gpt-4.1-mini-2025-04-14", parse_date("2027-01-07"))
    with pytest.raises(FtplanError, match="retired gpt-4.1-nano"):
        calendar_check(book, "gpt-4.1-nano-2025-04-14", parse_date("2026-11-24"))
    with pytest.raises(FtplanError, match="not an OpenAI model"):
        calendar_check(book, "llama-3.1-8b", parse_date("2026-11-24"))


def test_formats_for_each_method(tmp_path):
    sft, n = prepare(EXAMPLES / "prompt_completion.jsonl", tmp_path, "sft")
    assert n == 50 and [m["role"] for m in json.loads(sft.read_text().splitlines()[0])["messages"]] == \
        ["user", "assistant"]
    dpo, _ = prepare(EXAMPLES / "preference.jsonl", tmp_path, "dpo")
    assert set(json.loads(dpo.read_text().splitlines()[0])) == {"input", "preferred_output", "non_preferred_output"}
    rft, _ = prepare(EXAMPLES / "prompts.jsonl", tmp_path, "grpo")
    assert set(json.loads(rft.read_text().splitlines()[0])) == {"messages", "answer"}
    with pytest.raises(DataError, match="line 1"):
        prepare(EXAMPLES / "chat.jsonl", tmp_path, "dpo")
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps({"prompt": "a", "completion": "b"}) + "\n" for _ in range(3)))
    with pytest.raises(DataError, match="at least 10"):
        prepare(few, tmp_path, "sft")


def test_events_are_read_across_pages_oldest_first(server, tmp_path):
    c = OpenAIClient(server.url, KEY, sleep=lambda s: None)
    path, _ = prepare(EXAMPLES / "chat.jsonl", tmp_path, "sft")
    fid = c.upload(path)["id"]
    assert c.upload(path)["id"] == fid and len(server.state.files) == 1  # same bytes and name: reused
    job = c.create_job({"model": "gpt-4.1-mini-2025-04-14", "training_file": fid, "metadata": {"ftplan_job": "j"},
                        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}})
    for _ in range(6):
        c.get_job(job["id"])
    events = [e for e in c.events(job["id"])]
    assert len(events) == 5 and events[0]["message"] == "Validating training file"
    assert [e["created_at"] for e in events] == sorted(e["created_at"] for e in events)
    paged = OpenAIClient(server.url, KEY, sleep=lambda s: None)
    assert [e["id"] for e in paged._pages(f"/fine_tuning/jobs/{job['id']}/events", limit=2)] == \
        [e["id"] for e in reversed(events)]


def test_whole_sft_job_once_with_cost_from_trained_tokens(server, env, tmp_path):
    server.state.faults += [Fault("POST", "/v1/fine_tuning/jobs", drop=True, after=True),
                            Fault("GET", r"/v1/fine_tuning/jobs/ftjob-\w+", status=500, times=2)]
    res = run("run", recipe(tmp_path), "--provider", "openai", "--yes", env=env)
    assert res.exit_code == 0, res.output
    assert "legacy" in res.output and server.state.created == 1
    [job] = json.loads(run("jobs", "--json", env=env).output)
    assert job["status"] == "completed"
    assert job["actuals"]["usd"] == pytest.approx(120_000 / 1e6 * 5.0)
    assert job["actuals"]["output"].startswith("ft:gpt-4.1-mini")
    events = [json.loads(line) for line in run("logs", job["id"], "--json", env=env).output.splitlines()]
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == [1, 2, 3]
    assert all(KEY.encode() not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_failed_job_shows_openais_message(server, env, tmp_path):
    server.state.fail_jobs = True
    res = run("run", recipe(tmp_path), "--provider", "openai", "--yes", env=env)
    assert res.exit_code == 1 and "no assistant message" in res.output


def test_after_the_cutoff_nothing_is_sent(server, env, tmp_path):
    res = run("run", recipe(tmp_path), "--provider", "openai", "--yes", env={**env, "FTPLAN_TODAY": "2027-02-01"})
    assert res.exit_code == 2 and "stopped accepting" in res.output and server.state.requests == []


def test_reinforcement_needs_a_grader(server, env, tmp_path):
    res = run("run", recipe(tmp_path, data="prompts.jsonl", model="o4-mini-2025-04-16", objective="grpo",
                            rewards=["ftplan.recipes.rewards:exact_answer"]), "--provider", "openai", "--yes", env=env)
    assert res.exit_code == 2 and "providers.openai.grader" in res.output and server.state.created == 0


def test_cancel_a_detached_job(server, env, tmp_path):
    assert run("run", recipe(tmp_path), "--provider", "openai", "--yes", "--detach", env=env).exit_code == 0
    [job] = json.loads(run("jobs", "--json", env=env).output)
    out = run("cancel", job["id"], "--wait", "5", env=env)
    assert "cancelled" in out.output


RECORD_FIELDS = {"id", "provider", "status", "output_dir", "events_path", "plan", "actuals", "provider_ids",
                 "recipe_hash", "resumed_from", "options", "outputs", "eval", "error", "created_at", "updated_at"}


def test_one_flow_run_status_logs_pull_eval_and_a_refused_resume(server, env, tmp_path):
    golden = tmp_path / "golden.jsonl"
    golden.write_text("".join(json.dumps({"prompt": q, "category": "factuality", "expected": "paris"}) + "\n"
                              for q in ("capital of france?", "where is the louvre?")))
    path = recipe(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["eval"] = {"golden": str(golden)}
    path.write_text(yaml.safe_dump(spec))
    res = run("run", path, "--provider", "openai", "--yes", "--detach", env=env)
    assert res.exit_code == 0, res.output
    [job] = json.loads(run("jobs", "--json", env=env).output)
    assert RECORD_FIELDS <= set(job) and job["options"]["golden_sha256"]
    follow = run("logs", job["id"], "--follow", env=env)
    assert follow.exit_code == 0 and "finished: completed" in follow.output
    status = json.loads(run("status", job["id"], "--json", env=env).output)
    tuned = status["actuals"]["output"]
    assert status["status"] == "completed" and tuned.startswith("ft:gpt-4.1-mini")
    pulled = run("pull", job["id"], env=env)
    assert pulled.exit_code == 0 and "keeps the model" in pulled.output and tuned in pulled.output
    # The gate asks OpenAI's chat endpoint for the base and the fine-tuned model's answers.
    server.state.answers = {tuned: "Paris, of course."}
    res = run("eval", job["id"], "--json", env=env)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["categories"]["factuality"]["change"] == 1.0
    assert {m for m, _ in server.state.chats} == {"gpt-4.1-mini-2025-04-14", tuned}
    server.state.answers = {"gpt-4.1-mini-2025-04-14": "paris", tuned: "rome"}
    blocked = run("eval", job["id"], env=env)
    assert blocked.exit_code == 1 and "BLOCKED" in blocked.output
    refused = run("run", path, "--provider", "openai", "--resume", job["id"], "--yes", env=env)
    assert refused.exit_code == 2 and "cannot continue a job" in refused.output and server.state.created == 1
