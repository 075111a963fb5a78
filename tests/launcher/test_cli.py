import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ftplan.launcher.cli import cli


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_estimate_json_has_the_documented_keys():
    res = run("estimate", "--model", "llama-3.1-8b", "--gpu", "L4", "--tokens", "1000000", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["memory"]["per_gpu_bytes"] == sum(out["memory"]["components"].values())
    assert isinstance(out["fits"], bool)
    assert out["hardware"] == {**out["hardware"], "gpu": "L4", "count": 1}
    assert out["throughput"]["tokens_per_second"] > 0
    assert out["time"]["seconds"] == pytest.approx(1e6 / out["throughput"]["tokens_per_second"], rel=1e-3)


def test_human_output_says_fit_and_lists_components():
    res = run("estimate", "--model", "llama-3.1-8b", "--gpu", "H100")
    assert res.exit_code == 0
    assert "Fits" in res.output and "activations" in res.output and "optimizer states" in res.output


def test_full_70b_does_not_fit_one_gpu():
    res = run("estimate", "--model", "llama-3.1-70b", "--adapter", "full", "--gpu", "h100", "--json")
    assert json.loads(res.output)["fits"] is False


def test_local_config_folder(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 2,
           "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    res = run("estimate", "--model", str(tmp_path), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["model"]["params"]["total"] > 0


def test_params_only_states_its_uncertainty():
    out = json.loads(run("estimate", "--params", "7B", "--json").output)
    assert out["memory"]["uncertainty_pct"] > 10 and any("assumed" in w for w in out["warnings"])


@pytest.mark.parametrize("args,needle", [
    (["--model", "lama-3.1-8b"], "llama-3.1-8b"),
    (["--model", "llama-3.1-8b", "--gpu", "H1OO"], "h100"),
    (["--model", "llama-3.1-8b", "--lora-rank", "0"], "--lora-rank"),
    (["--model", "llama-3.1-8b", "--seq-len", "-3"], "--seq-len"),
    (["--model", "llama-3.1-8b", "--batch-size", "0"], "--batch-size"),
    (["--model", "llama-3.1-8b", "--tokens", "-1"], "--tokens"),
    (["--model", "llama-3.1-8b", "--optimizer", "adam9"], "adamw_8bit"),
    (["--model", "llama-3.1-8b", "--lora-targets", "wq"], "q_proj"),
    (["--params", "12 parsecs"], "--params"),
    (["--model", "flan-t5-xl"], "encoder-decoder"),
    ([], "--model"),
])
def test_bad_input_exits_2_with_a_message(args, needle):
    res = run("estimate", *args)
    assert res.exit_code == 2
    assert needle in res.output
    assert "Traceback" not in res.output


def test_unreadable_config_exits_2(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    res = run("estimate", "--model", str(tmp_path))
    assert res.exit_code == 2 and "config.json" in res.output


def test_models_and_gpus_listings():
    models = json.loads(run("models", "--json").output)
    assert any(m["id"] == "meta-llama/Llama-3.1-405B" for m in models)
    gpus = json.loads(run("gpus", "--json").output)
    assert all(g["source"] and g["as_of"] for g in gpus)
    assert {"T4", "L4", "A10G", "H100", "B200", "RTX-4090"} <= {g["name"] for g in gpus}


def test_estimate_path_imports_no_heavy_libraries():
    probe = (
        "import sys\n"
        "from ftplan.launcher.cli import cli\n"
        "try:\n    cli(['estimate', '--model', 'llama-3.1-8b', '--json'], prog_name='ftplan')\n"
        "except SystemExit as e:\n    assert e.code in (0, None)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'rich', 'pydantic') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_every_registered_provider_speaks_the_one_interface_and_run_help_lists_them():
    from ftplan.providers import registry
    from ftplan.providers.base import Provider

    for name in registry.names():
        provider = registry.get(name)
        assert isinstance(provider, Provider) and provider.name == name
    out = CliRunner().invoke(cli, ["run", "--help"]).output
    assert all(name in out for name in registry.names()) and "Exit codes" in out


@pytest.mark.parametrize("command", ["status", "cancel", "logs", "pull"])
def test_job_ids_are_never_patterns(tmp_path, command):
    from ftplan.launcher.jobstore import JobStore

    store = JobStore(tmp_path / "jobs.sqlite3")
    store.create("local", job_id="20261202-070000-abcdef", status="running", output_dir=str(tmp_path / "j"))
    res = CliRunner().invoke(cli, [command, "%"], env={"FTPLAN_HOME": str(tmp_path)})
    assert res.exit_code == 2 and "no job '%'" in res.output
    assert store.get("20261202-070000-abcdef")["status"] == "running"


def test_recipe_paths_are_relative_to_the_recipe_not_to_where_ftplan_runs(tmp_path):
    """`ftplan plan proj/r.yaml` from another folder reads proj/data/chat.jsonl; a preset written elsewhere by
    `init -o` still names the bundled example it was written with."""
    import shutil
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples"
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    shutil.copy(examples / "chat.jsonl", proj / "data" / "chat.jsonl")
    (proj / "r.yaml").write_text("model: Qwen/Qwen2.5-0.5B\ndata:\n  path: data/chat.jsonl\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cmd = [sys.executable, "-m", "ftplan.launcher.cli"]
    out = subprocess.run([*cmd, "plan", str(proj / "r.yaml"), "--json"], cwd=elsewhere, capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout)["dataset"]["source"] == str(proj / "data" / "chat.jsonl")
    subprocess.run([*cmd, "init", "lora-sft", "-o", str(elsewhere / "preset.yaml")], cwd=examples.parent,
                   capture_output=True, text=True, check=True)
    planned = subprocess.run([*cmd, "plan", str(elsewhere / "preset.yaml"), "--json"], cwd=tmp_path,
                             capture_output=True, text=True)
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["dataset"]["source"] == str(examples / "chat.jsonl")


def test_init_without_a_method_lists_the_presets_and_exits_0():
    res = run("init")
    assert res.exit_code == 0
    for preset in ("lora-sft", "qlora-sft", "dpo", "grpo", "merge", "distillation"):
        assert f"  {preset} " in res.output
    assert "ftplan init --from plan.json" in res.output
