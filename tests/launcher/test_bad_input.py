"""Every bad input: exit 2, one message naming the file, line, field or option, no traceback, no job left behind.

The cases are the classes of the bad-input campaign (issue 16) and their neighbours: data files,
recipes, flags, model configs, price files, job ids and the environment. Each runs the command a
person types (in-process, through click), then checks the exit code, that the message names the
thing (`needle`), that no traceback was printed or raised, and that the job store holds no job in
a non-final state (a refused `run` starts nothing).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ftplan.launcher.cli import cli
from ftplan.launcher.jobstore import TERMINAL

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHAT = str(EXAMPLES / "chat.jsonl")
M = ["--model", "llama-3.1-8b"]

# --- the bad files -----------------------------------------------------------------------------------------------

CHAT_LINE = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}

DATA_FILES: dict[str, str | bytes] = {
    "broken.jsonl": json.dumps(CHAT_LINE) + "\n{broken\n",
    "empty.jsonl": "",
    "blank.jsonl": "\n\n   \n",
    "trailing_comma.jsonl": json.dumps(CHAT_LINE) + ",\n",
    "string_records.jsonl": '"hello"\n"world"\n',
    "array_records.jsonl": "[1, 2]\n[3]\n",
    "number_records.jsonl": "1\n2\n",
    "messages_not_list.jsonl": '{"messages": "hi there"}\n',
    "messages_empty.jsonl": '{"messages": []}\n',
    "role_missing.jsonl": '{"messages": [{"content": "hi"}, {"role": "assistant", "content": "x"}]}\n',
    "role_number.jsonl": '{"messages": [{"role": 1, "content": "hi"}, {"role": "assistant", "content": "x"}]}\n',
    "role_human.jsonl": "".join(json.dumps({"messages": [{"role": "human", "content": "q"},
                                                         {"role": "bot", "content": "a"}]}) + "\n" for _ in range(3)),
    "no_assistant.jsonl": "".join(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n"
                                  for _ in range(3)),
    "content_missing.jsonl": '{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}\n',
    "surrogate.jsonl": '{"messages": [{"role": "user", "content": "a \\ud800 b"}, '
                       '{"role": "assistant", "content": "x"}]}\n',
    "deep.jsonl": "[" * 100_000 + "]" * 100_000 + "\n",
    "bad_utf8.jsonl": b'{"text": "caf\xe9 \xff"}\n',
    "binary.jsonl": bytes(range(256)) * 4,
    "unknown_fields.jsonl": '{"foo": 1, "bar": 2}\n{"foo": 3, "bar": 4}\n',
    "mixed_formats.jsonl": json.dumps(CHAT_LINE) + "\n" + '{"chosen": "a", "rejected": "b"}\n',
    "prompt_null.jsonl": '{"prompt": null, "completion": "x"}\n',
    "text_number.jsonl": '{"text": 5}\n',
    "kto_label.jsonl": '{"prompt": "q", "completion": "a", "label": "maybe"}\n',
    "json_scalar.json": "5",
    "json_object.json": '{"data": 5}',
    "json_list_numbers.json": "[1, 2, 3]",
    "json_broken.json": '[{"text": "a"}, {broken',
    "csv_quote.csv": 'text\n"unterminated, starts here\nanother line\n',
    "csv_empty.csv": "",
    "csv_header_only.csv": "text\n",
    "csv_unknown_columns.csv": "foo,bar\n1,2\n",
    "csv_bad_messages.csv": 'messages\n"[{""role"": ""user""}"\n',
    "corrupt.parquet": b"PAR1" + b"\x00" * 800 + b"PAR1",
    "text.parquet": "this is not parquet at all\n",
    "sheet.xlsx": "not a spreadsheet",
    "preference_no_rejected.jsonl": '{"prompt": "q", "chosen": "a"}\n',
}

CONFIGS: dict[str, object] = {
    "list_config": [{"hidden_size": 4096}],
    "zero_heads": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 0,
                   "intermediate_size": 11008, "vocab_size": 32000},
    "string_sizes": {"model_type": "llama", "hidden_size": "4096", "num_hidden_layers": 32,
                     "num_attention_heads": 32, "intermediate_size": 11008, "vocab_size": 32000},
    "negative_hidden": {"model_type": "llama", "hidden_size": -4096, "num_hidden_layers": 32,
                        "num_attention_heads": 32, "intermediate_size": 11008, "vocab_size": 32000},
    "zero_layers": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 0, "num_attention_heads": 32,
                    "intermediate_size": 11008, "vocab_size": 32000},
    "zero_vocab": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                   "intermediate_size": 11008, "vocab_size": 0},
    "float_layers": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32.5,
                     "num_attention_heads": 32, "intermediate_size": 11008, "vocab_size": 32000},
    "bool_heads": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": True,
                   "intermediate_size": 11008, "vocab_size": 32000},
    "empty_config": {},
    "no_sizes": {"model_type": "llama"},
    "negative_ffn": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                     "intermediate_size": -1, "vocab_size": 32000},
}

PRICE_FILES = {
    "not_toml.toml": "this is = = not toml\n",
    "price_string.toml": '[[gpu]]\nprovider = "acme"\ngpu = "H100"\nusd_per_gpu_hour = "cheap"\nsource = "q"\n'
                         'as_of = "2026-11-20"\n',
    "price_negative.toml": '[[gpu]]\nprovider = "acme"\ngpu = "H100"\nusd_per_gpu_hour = -1.0\nsource = "q"\n'
                           'as_of = "2026-11-20"\n',
    "gpu_unknown.toml": '[[gpu]]\nprovider = "acme"\ngpu = "H9000"\nusd_per_gpu_hour = 1.0\nsource = "q"\n'
                        'as_of = "2026-11-20"\n',
    "gpu_not_list.toml": 'gpu = "H100"\n',
    "gpu_row_not_table.toml": 'gpu = [1, 2]\n',
    "provider_missing.toml": '[[gpu]]\ngpu = "H100"\nusd_per_gpu_hour = 1.0\nsource = "q"\nas_of = "2026-11-20"\n',
    "counts_strings.toml": '[[gpu]]\nprovider = "acme"\ngpu = "H100"\nusd_per_gpu_hour = 1.0\ncounts = ["one"]\n'
                           'source = "q"\nas_of = "2026-11-20"\n',
    "max_nodes_negative.toml": '[[gpu]]\nprovider = "acme"\ngpu = "H100"\nusd_per_gpu_hour = 1.0\nmax_nodes = -1\n'
                               'source = "q"\nas_of = "2026-11-20"\n',
    "as_of_bad.toml": '[[gpu]]\nprovider = "acme"\ngpu = "H100"\nusd_per_gpu_hour = 1.0\nsource = "q"\n'
                      'as_of = "last week"\n',
    "local_string.toml": '[local]\nelectricity_usd_per_kwh = "cheap"\n',
    "local_unknown.toml": '[local]\nusd_per_kwh = 0.3\n',
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    for name, content in DATA_FILES.items():
        (root / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    for name, content in PRICE_FILES.items():
        (root / name).write_text(content)
    for name, cfg in CONFIGS.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(cfg))
    (root / "not_json_config").mkdir()
    (root / "not_json_config" / "config.json").write_text("{not json")
    (root / "no_config").mkdir()
    (root / "a_folder.jsonl").mkdir()
    (root / "afile").write_text("x")
    (root / "noperm.jsonl").write_text(json.dumps(CHAT_LINE) + "\n")
    (root / "noperm.jsonl").chmod(0)
    (root / "golden_bad.jsonl").write_text('{"prompt": "q", "expected": "a"}\n{oops\n')
    (root / "eval_bad.jsonl").write_text(json.dumps(CHAT_LINE) + "\n{oops\n")
    (root / "plan_not_plan.json").write_text('{"hello": 1}')
    (root / "plan_not_json.json").write_text("{nope")
    (root / "existing.yaml").write_text("model: x\n")
    return root


# --- recipes: each written into the case's folder ------------------------------------------------------------------

BASE = {"model": "Qwen/Qwen2.5-0.5B", "data": {"path": CHAT}, "method": {"objective": "sft"}}


def _with(**changes) -> dict:
    out = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        node = out
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        if value is _DROP:
            node.pop(last, None)
        else:
            node[last] = value
    return out


_DROP = object()

RECIPES: dict[str, str | bytes | dict] = {
    "empty": "",
    "only_comments": "# nothing here\n# at all\n",
    "not_yaml": "model: [unclosed\n",
    "tabs": "model: x\n\tdata: y\n",
    "bad_utf8": b"model: x\ndata:\n  path: caf\xff\n",
    "duplicate_key": "model: a\nmodel: b\ndata: {path: d.jsonl}\n",
    "duplicate_nested": "model: a\ndata: {path: d.jsonl}\nhyperparameters:\n  epochs: 1\n  epochs: 2\n",
    "top_level_list": "- model: a\n",
    "top_level_string": "just a string\n",
    "unknown_field": _with(modle="x"),
    "unknown_section_field": _with(hyperparameters__learning_rat=0.1),
    "bad_objective": _with(method__objective="sfx"),
    "bad_adapter": _with(method__adapter="lora2"),
    "rank_zero": _with(method__lora={"rank": 0}),
    "lr_zero": _with(hyperparameters__learning_rate=0),
    "epochs_zero": _with(hyperparameters__epochs=0),
    "batch_zero": _with(hyperparameters__batch_size=0),
    "seq_tiny": _with(hyperparameters__max_seq_length=8),
    "precision_fp8": _with(hyperparameters__precision="fp8"),
    "eval_fraction_high": _with(data__eval_fraction=0.7),
    "keep_zero": _with(checkpoint__keep=0),
    "gpus_zero": _with(hardware__gpus=0),
    "grpo_no_rewards": _with(method__objective="grpo"),
    "merge_no_section": _with(method__objective="merge"),
    "rpo_with_sft": _with(method__rpo_alpha=0.5),
    "no_data": _with(data=_DROP),
    "no_model": _with(model=_DROP),
    "provider_unknown": _with(providers={"acme": {}}),
    "report_to_unknown": _with(output__report_to=["neptune"]),
    "data_missing": _with(data__path="nowhere/d.jsonl"),
    "data_format_wrong": _with(data__format="preference"),
    "objective_wrong_for_data": _with(method__objective="dpo"),
    "data_broken": _with(data__path="{bad}/broken.jsonl"),
    "hardware_gpu_unknown": _with(hardware__gpu="H9000"),
    "model_unknown": _with(model="no-such-model-anywhere"),
    "model_folder_missing": _with(model="./models/missing"),
}

# Recipes `run` must refuse before a job exists (each also plans, where planning can see the problem).
RUN_RECIPES: dict[str, dict] = {
    "eval_path_bad_lines": _with(data__eval_path="{bad}/eval_bad.jsonl"),
    "eval_path_missing": _with(data__eval_path="{bad}/nope.jsonl"),
    "golden_bad": _with(eval__golden="{bad}/golden_bad.jsonl"),
    "golden_missing": _with(eval__golden="{bad}/none.jsonl"),
    "model_folder_missing": _with(model="./models/missing"),
    "model_folder_without_config": _with(model="{bad}/no_config"),
    "output_under_a_file": _with(output__dir="{bad}/afile/out"),
    "output_is_a_file": _with(output__dir="{bad}/afile"),
    "data_broken": _with(data__path="{bad}/broken.jsonl"),
    "data_format_wrong": _with(data__format="preference"),
    "objective_wrong_for_data": _with(method__objective="kto"),
    "merge_adapter_missing": _with(method__objective="merge",
                                   method__merge={"adapters": ["./adapters/a", "./adapters/b"]}),
    "teacher_folder_missing": _with(method__objective="distillation", method__generate_with_teacher=True,
                                    method__teacher="./teachers/none"),
    "tracker_not_installed": _with(output__report_to=["wandb"]),
    "not_yaml": "model: [unclosed\n",
}

RECIPE_NEEDLES = {
    "empty": "the file is empty", "only_comments": "the file is empty", "not_yaml": "not valid YAML at line",
    "tabs": "not valid YAML at line 2", "bad_utf8": "line 3 is not valid UTF-8",
    "duplicate_key": "key 'model' appears twice (lines 1 and 2)", "duplicate_nested": "key 'epochs' appears twice",
    "top_level_list": "not a list", "top_level_string": "not a str", "unknown_field": "'modle' is not a recipe field",
    "unknown_section_field": "'hyperparameters.learning_rat' is not a recipe field",
    "bad_objective": "'method.objective'", "bad_adapter": "'method.adapter'", "rank_zero": "'method.lora.rank'",
    "lr_zero": "'hyperparameters.learning_rate'", "epochs_zero": "'hyperparameters.epochs'",
    "batch_zero": "'hyperparameters.batch_size'", "seq_tiny": "'hyperparameters.max_seq_length'",
    "precision_fp8": "'hyperparameters.precision'", "eval_fraction_high": "'data.eval_fraction'",
    "keep_zero": "'checkpoint.keep'", "gpus_zero": "'hardware.gpus'", "grpo_no_rewards": "rewards",
    "merge_no_section": "'merge' section", "rpo_with_sft": "rpo_alpha", "no_data": "'data' section",
    "no_model": "'model' is required", "provider_unknown": "acme", "report_to_unknown": "'output.report_to.0'",
    "data_missing": "d.jsonl: no such file", "data_format_wrong": "data.format says preference",
    "objective_wrong_for_data": "cannot train on conversations", "data_broken": "line 2",
    "hardware_gpu_unknown": "hardware.gpu 'H9000'", "model_unknown": "model (in the recipe) 'no-such-model-anywhere'",
    "model_folder_missing": "models/missing", "eval_path_bad_lines": "eval_bad.jsonl",
    "eval_path_missing": "nope.jsonl",
    "golden_bad": "golden_bad.jsonl", "golden_missing": "none.jsonl",
    "model_folder_without_config": "has no config.json", "output_under_a_file": "output.dir",
    "output_is_a_file": "output.dir", "merge_adapter_missing": "method.merge.adapters[0]",
    "teacher_folder_missing": "method.teacher", "tracker_not_installed": "output.report_to wandb",
}


def _write_recipe(folder: Path, name: str, content, bad: Path) -> Path:
    path = folder / f"{name}.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(yaml.safe_dump(json.loads(json.dumps(content).replace("{bad}", str(bad)))))
    return path


# --- the contract ----------------------------------------------------------------------------------------------------


def invoke(args: list, home: Path, env: dict | None = None):
    res = CliRunner().invoke(cli, [str(a) for a in args], env={"FTPLAN_HOME": str(home), "HF_HUB_OFFLINE": "1",
                                                                "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200",
                                                                **(env or {})})
    return res


def assert_refused(res, needle: str, home: Path) -> None:
    out = res.output
    if os.environ.get("FTPLAN_SHOW_MESSAGES"):
        with open(os.environ["FTPLAN_SHOW_MESSAGES"], "a") as fh:
            fh.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '').split(' ')[0]}\n    {out.strip()[-400:]}\n")
    assert res.exit_code == 2, f"exit {res.exit_code}: {out}"
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in out, out
    assert needle.lower() in out.lower(), f"{needle!r} not in: {out}"
    store = home / "jobs.sqlite3"
    if store.is_file():
        with sqlite3.connect(store) as db:
            open_jobs = [r for r in db.execute("SELECT id, status FROM jobs") if r[1] not in TERMINAL]
        assert open_jobs == [], open_jobs


DATA_CASES = [
    ("broken.jsonl", "line 2"), ("empty.jsonl", "holds no examples"), ("blank.jsonl", "holds no examples"),
    ("trailing_comma.jsonl", "line 1"), ("string_records.jsonl", "line 1"), ("array_records.jsonl", "line 1"),
    ("number_records.jsonl", "line 1"), ("messages_not_list.jsonl", "messages"), ("messages_empty.jsonl", "messages"),
    ("role_missing.jsonl", "role"), ("role_number.jsonl", "role"), ("role_human.jsonl", "human"),
    ("no_assistant.jsonl", "without an assistant turn"), ("content_missing.jsonl", "content"),
    ("surrogate.jsonl", "surrogate"), ("deep.jsonl", "nested deeper"), ("bad_utf8.jsonl", "UTF-8"),
    ("binary.jsonl", "binary.jsonl"), ("unknown_fields.jsonl", "foo"), ("mixed_formats.jsonl", "line 2"),
    ("prompt_null.jsonl", "prompt"), ("text_number.jsonl", "text"), ("kto_label.jsonl", "label"),
    ("json_scalar.json", "json_scalar.json"), ("json_object.json", "json_object.json"),
    ("json_list_numbers.json", "json_list_numbers.json"), ("json_broken.json", "json_broken.json"),
    ("csv_quote.csv", "never closed"), ("csv_empty.csv", "csv_empty.csv"), ("csv_header_only.csv", "no examples"),
    ("csv_unknown_columns.csv", "foo"), ("csv_bad_messages.csv", "line 2"), ("corrupt.parquet", "Parquet"),
    ("text.parquet", "Parquet"), ("sheet.xlsx", ".xlsx"), ("preference_no_rejected.jsonl", "rejected"),
    ("a_folder.jsonl", "a_folder.jsonl"), ("missing.jsonl", "no such file"), ("nodir/missing.jsonl", "no such file"),
]


@pytest.mark.parametrize("name,needle", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_file(bad, tmp_path, name, needle):
    assert_refused(invoke(["estimate", bad / name, *M], tmp_path), needle, tmp_path)


def test_unreadable_data_file(bad, tmp_path):
    if os.geteuid() == 0 or os.access(bad / "noperm.jsonl", os.R_OK):
        pytest.skip("root reads every file")
    assert_refused(invoke(["estimate", bad / "noperm.jsonl", *M], tmp_path), "permission", tmp_path)


@pytest.mark.parametrize("args,needle", [
    (["--method", "dpo"], "dpo"), (["--method", "kto"], "kto"), (["--method", "continued-pretraining"], "text"),
    (["--method", "sfx"], "--method"), (["--adapter", "lora2"], "--adapter"), (["--precompute-ref"], "DPO"),
    (["--teacher", "llama-3.1-70b"], "--method distillation"),
], ids=["dpo-on-chat", "kto-on-chat", "cpt-on-chat", "unknown-method", "unknown-adapter", "precompute-ref-sft",
        "teacher-without-distillation"])
def test_data_that_does_not_fit_the_method(tmp_path, args, needle):
    assert_refused(invoke(["estimate", CHAT, *M, *args], tmp_path), needle, tmp_path)


def test_hub_id_offline_fails_at_once(tmp_path):
    assert_refused(invoke(["estimate", "someone/some-dataset", *M], tmp_path), "HF_HUB_OFFLINE", tmp_path)


FLAG_CASES = [
    (["estimate", *M, "--gpus", "0"], "--gpus 0"), (["estimate", *M, "--gpus", "-2"], "--gpus"),
    (["estimate", CHAT, *M, "--gpus", "0"], "--gpus 0"), (["estimate", CHAT, *M, "--top", "0"], "--top"),
    (["estimate", CHAT, *M, "--top", "-1"], "--top -1"), (["estimate", *M, "--tokens", "0"], "--tokens"),
    (["estimate", CHAT, *M, "--card-hours", "0"], "--card-hours"),
    (["estimate", CHAT, *M, "--card-price", "-5", "--local", "RTX-4090"], "--card-price"),
    (["estimate", CHAT, *M, "--electricity", "-1", "--local", "RTX-4090"], "--electricity"),
    (["estimate", *M, "--seq-len", "0"], "seq"), (["estimate", *M, "--batch-size", "0"], "batch"),
    (["estimate", *M, "--grad-accum", "0"], "accum"), (["estimate", CHAT, *M, "--epochs", "0"], "--epochs"),
    (["estimate", CHAT, *M, "--epochs", "1000"], "--epochs"), (["estimate", *M, "--lora-rank", "0"], "rank"),
    (["estimate", *M, "--lora-dropout", "1.5"], "dropout"), (["estimate", *M, "--lora-targets", "nosuch"], "nosuch"),
    (["estimate", CHAT, *M, "--max-cost", "0"], "--max-cost"), (["estimate", CHAT, *M, "--max-hours", "-2"],
                                                                  "--max-hours"),
    (["estimate", *M, "--gpu", "H9000"], "H9000"), (["estimate", CHAT, *M, "--local", "nosuch"], "--local"),
    (["estimate", CHAT, *M, "--local", "RTX-4090:0"], "--local"),
    (["estimate", CHAT, *M, "--local", "RTX-4090:x"], "--local"),
    (["estimate", CHAT, *M, "--provider", "acme"], "--provider"), (["estimate", CHAT, *M, "--region", "mars"],
                                                                   "--region"),
    (["estimate", "--model", "no-such-model-x"], "no-such-model-x"),
    (["estimate", "--model", "./no/such/folder"], "./no/such/folder"), (["estimate", "--params", "abc"], "abc"),
    (["estimate", "--params", "-7B"], "-7B"), (["estimate", "--params", "0"], "--params"),
    (["estimate", *M, "--params", "7B"], "not both"), (["estimate"], "--model"),
    (["estimate", *M, "--trainer", "nosuch"], "--trainer"), (["estimate", *M, "--loss", "nosuch"], "--loss"),
    (["estimate", *M, "--distributed", "nosuch"], "--distributed"),
    (["estimate", *M, "--optimizer", "nosuch"], "--optimizer"),
    (["estimate", *M, "--precision", "fp4"], "--precision"),
    (["estimate", *M, "--plot", "{tmp}/p.gif"], ".html, .svg or .png"),
    (["estimate", *M, "--plot", "{tmp}/none/p.svg"], "does not exist"),
    (["estimate", "--matrix", "--plot", "{tmp}/p.svg"], "matrix"),
    (["estimate", CHAT, *M, "--prices", "{tmp}/none.toml"], "none.toml"),
    (["compare", CHAT, *M, "--local", "nosuch"], "--local"), (["compare", CHAT, "--model", "nosuch-x"], "nosuch-x"),
    (["init", "nosuch"], "nosuch"), (["init", "lora-sft", "-o", "{tmp}/missing/dir/r.yaml"], "does not exist"),
    (["init", "lora-sft", "-o", "{bad}/existing.yaml"], "exists"),
    (["init", "--from", "{tmp}/none.json"], "none.json"), (["init", "--from", "{bad}/plan_not_json.json"], "not JSON"),
    (["init", "--from", "{bad}/plan_not_plan.json"], "not a plan"),
    (["plan", "{tmp}/none.yaml"], "none.yaml"), (["plan", "{bad}"], "cannot be read"),
    (["run", "{tmp}/none.yaml", "--yes"], "none.yaml"), (["run", "{recipe}", "--provider", "acme", "--yes"], "acme"),
    (["run", "{recipe}", "--max-cost", "0", "--yes"], "--max-cost"),
    (["run", "{recipe}", "--max-cost", "-3", "--yes"], "--max-cost"),
    (["plan", "{recipe}", "--keep", "batch_size"], "--keep"), (["plan", "{recipe}", "--write", "--keep", "nosuch"],
                                                               "--keep nosuch"),
    (["prices", "--prices", "{tmp}/none.toml"], "none.toml"),
]


@pytest.mark.parametrize("args,needle", FLAG_CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in FLAG_CASES])
def test_bad_flag(bad, tmp_path, args, needle):
    recipe = _write_recipe(tmp_path, "ok", BASE, bad)
    args = [str(a).format(tmp=tmp_path, bad=bad, recipe=recipe) for a in args]
    assert_refused(invoke(args, tmp_path), needle, tmp_path)


@pytest.mark.parametrize("name", sorted(CONFIGS) + ["not_json_config", "no_config"])
def test_bad_model_config(bad, tmp_path, name):
    needle = {"no_config": "no_config"}.get(name, "config.json")
    assert_refused(invoke(["estimate", "--model", bad / name], tmp_path), needle, tmp_path)


@pytest.mark.parametrize("name", ["zero_heads", "string_sizes", "list_config"])
def test_bad_model_config_for_a_teacher_names_the_teacher_option(bad, tmp_path, name):
    res = invoke(["estimate", CHAT, *M, "--method", "distillation", "--teacher", bad / name], tmp_path)
    assert_refused(res, "config.json", tmp_path)


PRICE_NEEDLES = {"not_toml.toml": "TOML", "price_string.toml": "usd_per_gpu_hour", "price_negative.toml":
                 "usd_per_gpu_hour", "gpu_unknown.toml": "H9000", "gpu_not_list.toml": "gpu",
                 "gpu_row_not_table.toml": "gpu", "provider_missing.toml": "provider",
                 "counts_strings.toml": "counts", "max_nodes_negative.toml": "max_nodes", "as_of_bad.toml": "as_of",
                 "local_string.toml": "electricity_usd_per_kwh", "local_unknown.toml": "has no setting 'usd_per_kwh'"}


@pytest.mark.parametrize("name", sorted(PRICE_FILES))
@pytest.mark.parametrize("command", ["estimate", "prices"])
def test_bad_price_file_names_the_file_and_the_field(bad, tmp_path, name, command):
    args = ["estimate", CHAT, *M] if command == "estimate" else ["prices"]
    res = invoke([*args, "--prices", bad / name], tmp_path)
    assert_refused(res, PRICE_NEEDLES[name], tmp_path)
    assert name in res.output


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_bad_recipe_is_refused_by_plan(bad, tmp_path, name):
    path = _write_recipe(tmp_path, name, RECIPES[name], bad)
    res = invoke(["plan", path], tmp_path)
    assert_refused(res, RECIPE_NEEDLES[name], tmp_path)


@pytest.mark.parametrize("name", sorted(RUN_RECIPES))
def test_run_refuses_before_a_job_exists(bad, tmp_path, name):
    pytest.importorskip("torch")
    path = _write_recipe(tmp_path, name, RUN_RECIPES[name], bad)
    res = invoke(["run", path, "--provider", "local", "--yes"], tmp_path)
    assert_refused(res, RECIPE_NEEDLES[name], tmp_path)
    jobs = tmp_path / "jobs.sqlite3"
    if jobs.is_file():
        with sqlite3.connect(jobs) as db:
            assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


def test_a_recipe_that_cannot_be_read(bad, tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text(yaml.safe_dump(BASE))
    path.chmod(0)
    if os.geteuid() == 0 or os.access(path, os.R_OK):
        pytest.skip("root reads every file")
    assert_refused(invoke(["plan", path], tmp_path), "secret.yaml", tmp_path)
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)


JOB_COMMANDS = [["status"], ["logs"], ["cancel"], ["pull"], ["eval"], ["status", "--json"], ["logs", "--follow"]]


@pytest.mark.parametrize("job_id", ["nosuch", "20261202-000000-abcdef", "../etc/passwd", "x" * 300, "' OR 1=1 --"])
@pytest.mark.parametrize("command", JOB_COMMANDS, ids=lambda c: " ".join(c))
def test_unknown_job_id(tmp_path, command, job_id):
    res = invoke([command[0], job_id, *command[1:]], tmp_path)
    assert_refused(res, "job", tmp_path)


def test_resume_of_an_unknown_job(bad, tmp_path):
    recipe = _write_recipe(tmp_path, "ok", BASE, bad)
    assert_refused(invoke(["run", recipe, "--resume", "nosuch", "--yes"], tmp_path), "nosuch", tmp_path)


@pytest.mark.parametrize("command", [["jobs"], ["status", "x"], ["logs", "x"], ["cancel", "x"], ["run", "{recipe}",
                                                                                                 "--yes"]],
                         ids=lambda c: c[0])
def test_ftplan_home_that_is_a_file(bad, tmp_path, command):
    recipe = _write_recipe(tmp_path, "ok", BASE, bad)
    home = tmp_path / "homefile"
    home.write_text("not a folder")
    res = invoke([str(a).format(recipe=recipe) for a in command], home)
    assert_refused(res, "FTPLAN_HOME", tmp_path)


def test_a_bad_ftplan_today(tmp_path):
    res = invoke(["prices"], tmp_path, env={"FTPLAN_TODAY": "yesterday"})
    assert_refused(res, "FTPLAN_TODAY", tmp_path)


def test_the_suite_is_as_wide_as_the_campaign():
    """At least 150 cases across data, recipes, flags, model configs, price files and job ids."""
    counts = {"data": len(DATA_CASES) + 1 + 7 + 1, "recipes": len(RECIPES) + len(RUN_RECIPES) + 1,
              "flags": len(FLAG_CASES) + 1, "configs": len(CONFIGS) + 2 + 3, "prices": 2 * len(PRICE_FILES),
              "job ids": 5 * len(JOB_COMMANDS) + 1 + 5}
    assert sum(counts.values()) >= 150 and min(counts.values()) >= 10, counts
