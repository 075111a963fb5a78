import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftplan.launcher.cli import cli
from ftplan.launcher.localgpu import gpu_from_smi_name

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def test_estimate_data_json_schema():
    res = run("estimate", EXAMPLES / "chat.jsonl", "--model", "llama-3.1-8b", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    for key in ("dataset", "method", "workload", "cheapest", "fastest", "local", "per_provider", "pareto", "plans",
                "suggestion", "notes", "warnings", "stale_prices"):
        assert key in out
    assert out["dataset"]["examples"] == 50 and out["method"]["objective"] == "sft"
    assert {p["provider"] for p in out["per_provider"]} >= {"modal", "lambda", "runpod", "aws", "together"}


def test_human_plan_output_has_table_plot_and_reasons():
    res = run("estimate", EXAMPLES / "preference.jsonl", "--model", "Qwen/Qwen2.5-7B-Instruct", "--local", "RTX-4090",
              env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for needle in ("Method", "dpo", "cheapest", "Pareto", "Local 1 x RTX-4090", "USD"):
        assert needle in res.output


def test_gpu_and_provider_flags_narrow_the_search():
    out = json.loads(run("estimate", EXAMPLES / "chat.jsonl", "--model", "llama-3.1-8b", "--gpu", "a100-80gb",
                         "--gpus", "2", "--provider", "runpod", "--json").output)
    assert {(p["provider"], p["gpu"], p["count"]) for p in out["plans"]} == {("runpod", "A100-80GB", 2)}


def test_max_cost_with_no_plan_left_exits_1_and_says_what_fits():
    res = run("estimate", EXAMPLES / "chat.jsonl", "--model", "llama-3.1-70b", "--max-cost", "0.001")
    assert res.exit_code == 1 and "No plan fits --max-cost" in res.output and "cheapest plan" in res.output


@pytest.mark.parametrize("args,needle", [
    (["{tmp}/bad.jsonl", "--model", "llama-3.1-8b"], "line 2"),
    (["{tmp}/none.jsonl", "--model", "llama-3.1-8b"], "no such file"),
    ([str(EXAMPLES / "chat.jsonl")], "--model"),
    ([str(EXAMPLES / "chat.jsonl"), "--model", "llama-3.1-8b", "--method", "dpo"], "cannot train"),
    ([str(EXAMPLES / "chat.jsonl"), "--model", "llama-3.1-8b", "--local", "RTX-9999"], "not a GPU"),
    ([str(EXAMPLES / "chat.jsonl"), "--model", "llama-3.1-8b", "--provider", "acme"], "--provider"),
    ([str(EXAMPLES / "chat.jsonl"), "--model", "llama-3.1-8b", "--region", "mars"], "--region"),
    ([str(EXAMPLES / "chat.jsonl"), "--model", "llama-3.1-8b", "--max-hours", "-2"], "--max-hours"),
    ([str(EXAMPLES / "chat.jsonl"), "--model", "llama-3.1-8b", "--prices", "{tmp}/none.toml"], "no such file"),
    ([str(EXAMPLES / "chat.jsonl"), "--model", "llama-3.1-8b", "--plot", "{tmp}/p.gif"], ".html"),
])
def test_bad_input_exits_2_without_traceback(tmp_path, args, needle):
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{broken\n')
    res = run("estimate", *[a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output


def test_matrix_json_and_table():
    out = json.loads(run("estimate", "--matrix", "--json").output)
    assert len(out["cells"]) == 16 and out["tokens_per_example"] > 0
    res = run("estimate", "--matrix")
    assert res.exit_code == 0 and "405B" in res.output and "1,000,000" in res.output


def test_prices_lists_rows_with_dates_and_flags_stale_ones(tmp_path):
    out = json.loads(run("prices", "--json").output)
    assert all(r["source"] and r["as_of"] for r in out["gpu_rows"])
    assert out["stale_count"] == sum(r["age_days"] > 90 for r in out["gpu_rows"])
    f = tmp_path / "p.toml"
    f.write_text('[[gpu]]\nprovider = "acme"\ngpu = "H100"\nusd_per_gpu_hour = 1.5\nsource = "quote"\n'
                 'as_of = "2026-11-20"\n')
    out = json.loads(run("prices", "--prices", f, "--json").output)
    assert out["user_file"] == str(f) and any(r["provider"] == "acme" for r in out["gpu_rows"])
    res = run("prices")
    assert res.exit_code == 0 and "as of" in res.output.lower() and "Together" in res.output


def test_compare_local_vs_cloud_with_break_even():
    res = run("compare", EXAMPLES / "chat.jsonl", "--model", "llama-3.1-8b", "--local", "RTX-4090",
              "--card-price", "1800", "--epochs", "3", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    local = out["rows"][0]
    assert local["provider"] == "local" and local["saving_vs_local"] is None
    cloud = [r for r in out["rows"] if r["provider"] not in ("local",)]
    for r in cloud:
        if r["saving_vs_local"] and r["saving_vs_local"] > 0:
            assert r["break_even_runs"] == pytest.approx(1800 / r["saving_vs_local"], rel=0.01)
    human = run("compare", EXAMPLES / "chat.jsonl", "--model", "llama-3.1-8b", "--local", "RTX-4090")
    assert human.exit_code == 0 and "--card-price" in human.output


@pytest.mark.parametrize("name,expected", [
    ("NVIDIA GeForce RTX 4090", "RTX-4090"), ("NVIDIA A100-SXM4-80GB", "A100-80GB"), ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA L4", "L4"), ("Tesla T4", "T4"), ("NVIDIA Nonexistent X9", None),
])
def test_nvidia_smi_names_map_to_catalog_gpus(name, expected):
    gpu = gpu_from_smi_name(name)
    assert (gpu.name if gpu else None) == expected


def test_local_box_detected_from_nvidia_smi(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA GeForce RTX 4090'\necho 'NVIDIA GeForce RTX 4090'\n")
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    out = json.loads(run("estimate", EXAMPLES / "chat.jsonl", "--model", "llama-3.1-8b", "--json", env=env).output)
    assert out["local"]["label"] == "Local 2 x RTX-4090" and "nvidia-smi" in out["local"]["source"]


def test_plan_path_imports_no_heavy_libraries():
    probe = (
        "import sys\n"
        "from ftplan.launcher.cli import cli\n"
        f"try:\n    cli(['estimate', {str(EXAMPLES / 'chat.jsonl')!r}, '--model', 'llama-3.1-8b', '--json'],"
        " prog_name='ftplan')\n"
        "except SystemExit as e:\n    assert e.code in (0, None)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'rich', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_estimate_uses_the_users_measured_speed_and_never_opens_the_job_store(tmp_path):
    from ftplan.launcher import speedlog

    env = {"FTPLAN_HOME": str(tmp_path)}
    base = json.loads(run("estimate", "--model", "llama-3.1-8b", "--gpu", "L4", "--json", env=env).output)
    speedlog.record("L4", "j1", 1000.0, 500.0, file=tmp_path / "speed.json")
    (tmp_path / "jobs.sqlite3").write_bytes(b"garbage, not a database")  # estimate must not care
    slow = json.loads(run("estimate", "--model", "llama-3.1-8b", "--gpu", "L4", "--json", env=env).output)
    assert slow["throughput"]["tokens_per_second"] == pytest.approx(base["throughput"]["tokens_per_second"] / 2, 0.01)
    assert any("scaled by 0.50" in w for w in slow["warnings"])
    plan = json.loads(run("estimate", EXAMPLES / "chat.jsonl", "--model", "llama-3.1-8b", "--gpu", "L4", "--json",
                          env=env).output)
    assert any("scaled by 0.50" in n for n in plan["notes"])


def test_compare_takes_a_recipe_too(tmp_path):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": "llama-3.1-8b", "data": {"path": str(EXAMPLES / "chat.jsonl")},
                                    "hyperparameters": {"epochs": 3}}))
    res = run("compare", path, "--local", "RTX-4090", "--card-price", "1800", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["rows"][0]["provider"] == "local" and len(out["rows"]) > 3
