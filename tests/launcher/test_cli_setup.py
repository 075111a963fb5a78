"""The plan's training setup reaches the recipe: `ftplan plan RECIPE --write` and `ftplan init --from PLAN`."""

import json
import shutil
from pathlib import Path

import yaml
from click.testing import CliRunner

from ftplan.launcher.cli import cli
from ftplan.recipes.schema import load_recipe

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PRESETS = Path(__file__).resolve().parents[2] / "recipes" / "presets"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def recipe(tmp_path, **hyper) -> Path:
    shutil.copy(EXAMPLES / "chat.jsonl", tmp_path / "chat.jsonl")
    text = (PRESETS / "lora-sft.yaml").read_text()
    text = text.replace("examples/chat.jsonl", "chat.jsonl").replace("Qwen/Qwen2.5-7B-Instruct", "llama-3.1-8b")
    for key, value in hyper.items():
        text = text.replace(f"  {key}: ", f"  {key}: {value} #", 1)
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def gpu_plan(out: dict) -> dict:
    return next(p for p in out["plans"] if p["setup"])


def test_estimate_says_which_program_and_whether_it_fits_with_margin():
    out = json.loads(run("estimate", "--model", "llama-3.1-8b", "--gpu", "L4", "--json").output)
    assert out["setup"]["trainer"] == "unsloth"  # one GPU, LoRA: what ftplan's program runs there
    assert out["verdict"] in ("fits", "tight", "does not fit") and out["memory"]["uncertainty_pct"] == 15
    trl = json.loads(run("estimate", "--model", "llama-3.1-8b", "--gpu", "L4", "--trainer", "trl", "--json").output)
    assert trl["setup"]["trainer"] == "trl" and trl["setup"]["loss"] == "standard"
    assert trl["memory"]["per_gpu_bytes"] > out["memory"]["per_gpu_bytes"]  # fp32 logits, fp32 adapters
    assert trl["throughput"]["mfu"] > 0 and trl["throughput"]["bound"]
    human = run("estimate", "--model", "llama-3.1-8b", "--gpu", "L4", "--trainer", "trl")
    assert "Tight" in human.output or "Does not fit" in human.output


def test_plan_write_sets_the_setup_keeps_comments_and_the_next_plan_is_the_same(tmp_path):
    path = recipe(tmp_path)
    res = run("plan", path, "--write", "--provider", "modal", "--json")
    assert res.exit_code == 0, res.output
    written = gpu_plan(json.loads(res.stdout))
    text = path.read_text()
    assert "# per GPU" in text and "# lora | qlora | dora | full" in text  # the preset's comments survive
    r = load_recipe(path)
    s = written["setup"]
    assert (r.hyperparameters.batch_size, r.hyperparameters.gradient_accumulation, r.hyperparameters.packing,
            r.hyperparameters.gradient_checkpointing) == (s["micro_batch_size"], s["grad_accum"], s["packing"],
                                                          s["gradient_checkpointing"])
    assert (r.hardware.gpu, r.hardware.gpus) == (written["gpu"], written["count"])
    again = gpu_plan(json.loads(run("plan", path, "--provider", "modal", "--json").stdout))
    assert (again["usd"], again["hours"], again["setup"]) == (written["usd"], written["hours"], written["setup"])


def test_plan_write_keeps_what_the_user_keeps(tmp_path):
    path = recipe(tmp_path, batch_size=3)
    res = run("plan", path, "--write", "--keep", "batch_size", "--provider", "modal", "--json")
    assert res.exit_code == 0, res.output
    assert load_recipe(path).hyperparameters.batch_size == 3
    bad = run("plan", path, "--keep", "batch_size")
    assert bad.exit_code == 2 and "--write" in bad.output
    bad = run("plan", path, "--write", "--keep", "learning_rate")
    assert bad.exit_code == 2 and "--keep learning_rate" in bad.output


def test_init_from_a_plan_writes_a_recipe_whose_plan_is_that_plan(tmp_path):
    shutil.copy(EXAMPLES / "chat.jsonl", tmp_path / "chat.jsonl")
    res = run("estimate", tmp_path / "chat.jsonl", "--model", "llama-3.1-8b", "--provider", "modal", "--json")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(res.stdout)
    out = tmp_path / "sub" / "r.yaml"
    out.parent.mkdir()
    made = run("init", "--from", plan_file, "-o", out)
    assert made.exit_code == 0, made.output
    r = load_recipe(out)
    assert r.model == "meta-llama/Llama-3.1-8B" and Path(r.data.path).name == "chat.jsonl"
    assert yaml.safe_load(out.read_text())["data"]["path"] == "../chat.jsonl"  # relative to the recipe
    planned = gpu_plan(json.loads(res.stdout))
    again = gpu_plan(json.loads(run("plan", out, "--provider", "modal", "--json").stdout))
    assert (again["gpu"], again["count"], again["setup"]) == (planned["gpu"], planned["count"], planned["setup"])
    assert again["usd"] == planned["usd"]


def test_init_from_something_that_is_not_a_plan_exits_2(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    res = run("init", "--from", bad)
    assert res.exit_code == 2 and "not JSON" in res.output and "Traceback" not in res.output
    bad.write_text(json.dumps({"hello": 1}))
    res = run("init", "--from", bad)
    assert res.exit_code == 2 and "not a plan" in res.output
