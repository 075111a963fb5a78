import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from training_helpers import train

from ftplan.recipes.checks import make_judge, run_check
from ftplan.recipes.evalgate import decide
from ftplan.recipes.golden import GoldenItem, file_sha256, load_golden
from ftplan.sizing.errors import DataError

ITEM = GoldenItem(1, "q", None, "factuality", [])


def write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_malformed_golden_lines_are_all_reported_with_numbers(tmp_path):
    path = write(tmp_path / "g.jsonl", [
        {"prompt": "ok", "expected": "yes"},
        "{broken",
        {"expected": "no prompt"},
        {"prompt": "p", "checks": [{"type": "telepathy"}]},
        {"prompt": "p", "checks": [{"type": "regex"}]},
        {"prompt": "p"},
    ])
    with pytest.raises(DataError) as exc:
        load_golden(path)
    msg = str(exc.value)
    for needle in ("5 bad lines", "line 2: not valid JSON", "line 3: needs 'prompt'", "line 4: check",
                   "line 5: check 'regex' lacks pattern", "line 6: has no 'expected'"):
        assert needle in msg


def test_categories_default_from_the_checks(tmp_path):
    items = load_golden(write(tmp_path / "g.jsonl", [
        {"prompt": "a", "expected": "b"},
        {"prompt": "a", "checks": [{"type": "json"}]},
        {"messages": [{"role": "user", "content": "a"}], "checks": [{"type": "refusal"}]},
        {"prompt": "a", "category": "tone", "checks": [{"type": "contains", "value": "x"}]},
    ]))
    assert [i.category for i in items] == ["factuality", "format", "safety", "tone"]


def test_a_changed_golden_set_is_refused(tmp_path):
    path = write(tmp_path / "g.jsonl", [{"prompt": "a", "expected": "b"}])
    sha = file_sha256(path)
    assert load_golden(path, sha)
    write(path, [{"prompt": "a", "expected": "something easier"}])
    with pytest.raises(DataError, match="changed after training began"):
        load_golden(path, sha)


@pytest.mark.parametrize("check,output,ok", [
    ({"type": "json"}, '{"a": 1}', True), ({"type": "json"}, "not json", False),
    ({"type": "json"}, 'Here: ```json\n{"a": 1}\n```', True),
    ({"type": "json_schema", "schema": {"type": "object", "required": ["a"]}}, '{"a": 1}', True),
    ({"type": "json_schema", "schema": {"type": "object", "required": ["a"]}}, '{"b": 1}', False),
    ({"type": "regex", "pattern": r"^\d{3}-\d{4}$"}, "555-1234", True),
    ({"type": "exact", "value": "Paris"}, " paris ", True), ({"type": "exact", "value": "Paris"}, "Paris!", False),
    ({"type": "contains", "value": "Paris"}, "It is Paris.", True),
    ({"type": "numeric", "value": 42}, "The answer is 42.", True),
    ({"type": "numeric", "value": 3.14, "tolerance": 0.01}, "about 3.141", True),
    ({"type": "numeric", "value": 42}, "41", False),
    ({"type": "refusal"}, "I can't help with that.", True), ({"type": "refusal"}, "Sure! Step 1...", False),
    ({"type": "forbidden", "strings": ["password"]}, "the PASSWORD is", False),
    ({"type": "python", "function": "ftplan.recipes.rewards:contains_answer_one"}, "", None),
])
def test_each_check(check, output, ok):
    if ok is None:
        from ftplan.sizing.errors import FtplanError

        with pytest.raises(FtplanError, match="cannot be imported"):
            run_check(check, output, ITEM)
        return
    assert run_check(check, output, ITEM) is ok


def _long_enough(output, item):
    return len(output) >= 5


def test_python_verifier(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "golden_verifiers", sys.modules[__name__])
    assert run_check({"type": "python", "function": "golden_verifiers:_long_enough"}, "hello world", ITEM)
    assert not run_check({"type": "python", "function": "golden_verifiers:_long_enough"}, "hi", ITEM)


def test_llm_judge_through_an_openai_compatible_endpoint(monkeypatch):
    seen = []

    class Judge(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers["Authorization"], body["model"]))
            verdict = "PASS" if "polite" in body["messages"][0]["content"] and "please" in \
                body["messages"][0]["content"] else "FAIL"
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": verdict}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("JUDGE_KEY", "jk-1")
    judge = make_judge({"base_url": f"http://127.0.0.1:{srv.server_address[1]}/v1", "model": "judge-1",
                        "api_key_env": "JUDGE_KEY"})
    check = {"type": "judge", "criteria": "polite"}
    assert run_check(check, "yes, please", ITEM, judge) is True
    assert run_check(check, "no", ITEM, judge) is False
    assert seen[0] == ("/v1/chat/completions", "Bearer jk-1", "judge-1")
    srv.shutdown()


def test_gate_blocks_any_regression_and_missed_thresholds():
    items = [GoldenItem(i, "q", None, c, []) for i, c in enumerate(["format", "format", "safety", "safety"])]
    cats, reasons = decide(items, [True, True, True, False], [True, True, False, True], {})
    assert reasons == [] and cats["safety"]["change"] == 0
    cats, reasons = decide(items, [True, True, True, True], [True, False, True, True], {})
    assert reasons == ["format regresses: 100% -> 50% of 2"]
    _, reasons = decide(items, [True, False, True, True], [True, False, True, True], {"format": 0.9})
    assert reasons == ["format 50% is under its threshold 90%"]
    _, reasons = decide(items, [True, True, True, True], [True, False, True, True], {"max_regression": 0.5})
    assert reasons == []


# --- the gate on trained adapters (tiny model, CPU) ---------------------------------------------------


def _golden(tmp_path):
    return write(tmp_path / "golden.jsonl", [
        {"prompt": "what is two plus two?", "category": "safety", "checks": [{"type": "forbidden",
                                                                              "strings": ["paris paris"]}]},
        {"prompt": "explain photosynthesis", "category": "safety", "checks": [{"type": "forbidden",
                                                                               "strings": ["paris paris"]}]},
        {"prompt": "answer with the number only: 3 + 4", "category": "format",
         "checks": [{"type": "regex", "pattern": "^[\\s\\S]{0,400}$"}]},
    ])


def _recipe(tmp_path, tiny, name, lr, steps, merge=True):
    data = write(tmp_path / f"{name}.jsonl", [{"prompt": f"question {i}: what is two plus two?",
                                               "completion": " paris paris paris paris"} for i in range(40)])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "model": str(tiny), "data": {"path": str(data)}, "method": {"lora": {"rank": 8}},
        "hyperparameters": {"max_steps": steps, "batch_size": 4, "gradient_accumulation": 1, "learning_rate": lr,
                            "max_seq_length": 64, "precision": "fp32"},
        "checkpoint": {"every_steps": None, "every_minutes": None}, "eval": {"golden": str(_golden(tmp_path))},
        "output": {"dir": str(tmp_path / f"out-{name}"), "merge": merge}}))
    return path


def _finished(out: Path) -> dict:
    return [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()][-1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("torch")
    from ftplan.recipes.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.mark.slow
@pytest.mark.train
def test_a_broken_adapter_is_blocked_kept_and_never_merged(tmp_path, tiny):
    assert train(_recipe(tmp_path, tiny, "broken", 1e-2, 60)) == 0
    out = tmp_path / "out-broken"
    fin = _finished(out)
    assert fin["status"] == "blocked" and not fin["eval"]["passed"]
    assert any("safety regresses" in r for r in fin["eval"]["reasons"])
    assert (out / "adapter" / "adapter_config.json").is_file() and not (out / "merged").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["actuals"]["status"] == "blocked" and manifest["actuals"]["eval"]["golden_sha256"]
    from click.testing import CliRunner

    from ftplan.launcher.cli import cli

    res = CliRunner().invoke(cli, ["eval", str(out / "adapter"), "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["passed"] is False
    assert len(json.loads((out / "manifest.json").read_text())["evals"]) == 1


@pytest.mark.slow
@pytest.mark.train
def test_a_good_adapter_passes_and_is_merged(tmp_path, tiny):
    assert train(_recipe(tmp_path, tiny, "good", 1e-7, 2)) == 0
    out = tmp_path / "out-good"
    fin = _finished(out)
    assert fin["status"] == "completed" and fin["eval"]["passed"] and (out / "merged").is_dir()
    from click.testing import CliRunner

    from ftplan.launcher.cli import cli

    res = CliRunner().invoke(cli, ["eval", str(out)])
    assert res.exit_code == 0 and "gate PASSED" in res.output and "safety" in res.output


@pytest.mark.slow
@pytest.mark.train
def test_tampered_golden_set_is_refused_and_skip_eval_is_recorded(tmp_path, tiny):
    path = _recipe(tmp_path, tiny, "tamper", 1e-7, 2, merge=False)
    golden = tmp_path / "golden.jsonl"
    frozen = file_sha256(golden)
    golden.write_text(golden.read_text().replace("paris", "london"))
    assert train(path, "--golden-sha256", frozen) == 2
    assert "changed after training began" in _finished(tmp_path / "out-tamper")["error"]
    assert train(path, "--skip-eval") == 0
    fin = _finished(tmp_path / "out-tamper")
    assert fin["status"] == "completed" and fin["eval"] == {"skipped": True}


def test_the_bundled_example_golden_set_loads():
    items = load_golden(Path(__file__).resolve().parents[2] / "examples" / "golden.jsonl")
    assert {i.category for i in items} == {"factuality", "format", "safety"}
    assert {c["type"] for i in items for c in i.checks} >= {"contains", "numeric", "json_schema", "regex",
                                                             "refusal", "forbidden"}
