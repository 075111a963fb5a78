"""CPU training of a tiny random Llama for every objective: the same program users run on real models."""

import json
import math
from pathlib import Path

import pytest
from training_helpers import train

pytestmark = [pytest.mark.slow, pytest.mark.train]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def events_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def check_events(events: list[dict]) -> None:
    from ftplan.recipes.events import validate_event

    assert events[0]["type"] == "started" and events[-1]["type"] == "finished"
    for e in events:
        assert validate_event(e) == [], e
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert all(math.isfinite(e["loss"]) for e in events if e["type"] == "step")


CASES = {
    "sft-lora": ("chat.jsonl", {}),
    "sft-dora": ("chat.jsonl", {"adapter": "dora"}),
    "sft-full": ("prompt_completion.jsonl", {"adapter": "full"}),
    "continued-pretraining": ("text.jsonl", {"objective": "continued-pretraining"}),
    "dpo": ("preference.jsonl", {"objective": "dpo"}),
    "simpo": ("preference.jsonl", {"objective": "simpo", "beta": 2.0}),
    "orpo": ("preference.jsonl", {"objective": "orpo"}),
    "kto": ("kto.jsonl", {"objective": "kto"}),
    "grpo": ("prompts.jsonl", {"objective": "grpo", "rewards": ["ftplan.recipes.rewards:exact_answer",
                                                                 "ftplan.recipes.rewards:brevity"],
                               "num_generations": 2, "max_completion_length": 8}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_objective_trains_and_its_output_loads_back(case, write_recipe, tiny_model):
    data, method = CASES[case]
    path = write_recipe(case, data=EXAMPLES / data, method=method)
    out = Path(json.loads(json.dumps(__import__("yaml").safe_load(path.read_text())))["output"]["dir"])
    assert train(path) == 0
    events = events_of(out)
    check_events(events)
    assert events[-1]["status"] == "completed" and events[-1]["steps"] == 4
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [2, 4]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["versions"]["trl"] and manifest["data_sha256"] and manifest["actuals"]["tokens_seen"] >= 0
    assert manifest["recipe"]["method"]["objective"] == method.get("objective", "sft")
    from transformers import AutoModelForCausalLM

    if method.get("adapter") == "full":
        assert (out / "model" / "config.json").is_file()
        AutoModelForCausalLM.from_pretrained(out / "model")
    else:
        from peft import PeftModel

        cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
        assert cfg["use_dora"] == (method.get("adapter") == "dora")
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "adapter")
        assert any("lora_A" in n for n, _ in model.named_parameters())


def test_qlora_trains_4bit_layers_on_cpu(write_recipe, tiny_model):
    import bitsandbytes as bnb

    from ftplan.recipes.backend import load_model, select_backend
    from ftplan.recipes.schema import load_recipe

    path = write_recipe("qlora", data=EXAMPLES / "chat.jsonl", method={"adapter": "qlora"},
                        hyper={"optimizer": "paged_adamw_8bit"})
    recipe = load_recipe(path)
    model, peft_cfg = load_model(recipe, select_backend("qlora", "sft", cuda=False, unsloth_installed=False), False)
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit) and peft_cfg is not None
    assert train(path) == 0
    check_events(events_of(Path(recipe.output.dir)))


def test_resume_skips_a_half_written_checkpoint_and_continues(write_recipe):
    from ftplan.recipes.checkpoints import MARKER

    path = write_recipe("resume", data=EXAMPLES / "chat.jsonl")
    out = path.parent / "out-resume"
    assert train(path) == 0
    (out / "checkpoints" / "checkpoint-4" / MARKER).unlink()  # as if the process died while saving step 4
    longer = write_recipe("resume", data=EXAMPLES / "chat.jsonl", hyper={"max_steps": 6})
    assert train(longer, "--resume") == 0
    events = events_of(out)
    second = events[next(i for i, e in enumerate(events) if e["type"] == "started" and e.get("resumed_from")):]
    assert second[0]["resumed_from"].endswith("checkpoint-2")
    assert any("checkpoint-4" in (e.get("message") or "") for e in events if e["type"] == "log")
    assert [e["step"] for e in second if e["type"] == "step"][0] == 3
    assert second[-1]["status"] == "completed" and second[-1]["steps"] == 6


def test_merge_matches_the_weighted_sum_of_adapter_updates(write_recipe, tiny_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    a1 = write_recipe("a1", data=EXAMPLES / "chat.jsonl", hyper={"seed": 1})
    a2 = write_recipe("a2", data=EXAMPLES / "prompt_completion.jsonl", method={"lora": {"rank": 2}},
                      hyper={"seed": 2})
    assert train(a1) == 0 and train(a2) == 0
    ads = [str(tmp_path / "out-a1" / "adapter"), str(tmp_path / "out-a2" / "adapter")]
    m = write_recipe("m", method={"objective": "merge", "merge": {"adapters": ads, "weights": [0.7, 0.3],
                                                                   "combination": "cat"}})
    assert train(m) == 0
    check_events(events_of(tmp_path / "out-m"))

    def merged(adapter):
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        return PeftModel.from_pretrained(base, adapter).merge_and_unload().state_dict()

    w = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    w1, w2, wm = merged(ads[0]), merged(ads[1]), merged(str(tmp_path / "out-m" / "adapter"))
    for key in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        expected = w[key] + 0.7 * (w1[key] - w[key]) + 0.3 * (w2[key] - w[key])
        assert torch.allclose(wm[key], expected, atol=1e-6)
        assert not torch.allclose(w1[key], w[key])


def test_broken_recipe_and_data_fail_before_training(write_recipe, tmp_path, capsys):
    bad_data = tmp_path / "bad.jsonl"
    bad_data.write_text('{"messages": [{"role": "user", "content": "q"}]}\n{oops\n')
    path = write_recipe("baddata", data=bad_data)
    assert train(path) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "Traceback" not in err
    events = events_of(tmp_path / "out-baddata")
    assert [e["type"] for e in events] == ["failed"] and events[0]["stage"] == "before training"
    assert not (tmp_path / "out-baddata" / "checkpoints").exists()
    wrong = write_recipe("wrongfmt", data=EXAMPLES / "chat.jsonl", method={"objective": "dpo"})
    assert train(wrong) == 2 and "cannot train on conversations" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: x\ndata: {path: d.jsonl}\nmethod: {objective: sfx}\n")
    assert train(broken, "--output", str(tmp_path / "out-broken")) == 2
    assert "'method.objective'" in capsys.readouterr().err


def test_distillation_trains_on_what_the_teacher_wrote(write_recipe, tiny_model, tmp_path):
    from datasets import Dataset

    from ftplan.recipes.distill import generate_with_teacher
    from ftplan.recipes.schema import load_recipe

    method = {"objective": "distillation", "teacher": str(tiny_model), "generate_with_teacher": True,
              "max_completion_length": 6}
    path = write_recipe("distill", data=EXAMPLES / "prompt_completion.jsonl", method=method)
    ds = Dataset.from_list([{"prompt": "what is two plus two?", "completion": "ORIGINAL"}])
    rewritten = generate_with_teacher(load_recipe(path), ds, "prompt_completion")
    assert rewritten[0]["completion"] != "ORIGINAL" and rewritten[0]["prompt"] == "what is two plus two?"
    assert train(path) == 0
    events = events_of(tmp_path / "out-distill")
    check_events(events)
    assert any("teacher" in (e.get("message") or "") for e in events if e["type"] == "log")


FULL_DISK = """
import resource, signal, sys
from ftplan.recipes import callbacks, train
mark = callbacks.mark_complete

def fill_after_first(folder, step):  # the disk fills once the first checkpoint is whole
    mark(folder, step)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))

callbacks.mark_complete = fill_after_first
sys.exit(train.main(sys.argv[1:]))
"""


def test_a_full_disk_while_checkpointing_says_so_and_keeps_the_complete_checkpoint(write_recipe, tmp_path):
    """A write past the limit fails as on a full disk: torch's zip writer reports "unexpected pos N vs M"
    (the real message, from caffe2/serialize/inline_container.cc), Python's writes an OSError."""
    import subprocess
    import sys

    from ftplan.recipes.checkpoints import checkpoints, problem

    path = write_recipe("full", data=EXAMPLES / "chat.jsonl", hyper={"max_steps": 6})
    out = tmp_path / "out-full"
    script = tmp_path / "fill.py"
    script.write_text(FULL_DISK.format(limit=64 * 1024))  # events.jsonl stays below; optimizer.pt does not
    res = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and "unexpected pos 19520" not in res.stderr
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("ftplan: error: writing to") and "file-size limit" in err and "checkpoint-2" in err
    assert "--resume" in err
    assert [(step, done) for step, _, done in checkpoints(out / "checkpoints")] == [(2, True)]
    assert problem(out / "checkpoints" / "checkpoint-2") is None
    failed = events_of(out)[-1]
    assert failed["type"] == "failed" and failed["kind"] == "disk_full"


def test_report_to_tensorboard_logs_through_transformers_own_callback(write_recipe, tmp_path):
    """output.report_to reaches TrainingArguments: TensorBoard's event files hold the loss the events file holds."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = write_recipe("tb", data=EXAMPLES / "chat.jsonl", output={"dir": str(tmp_path / "out-tb"),
                                                                    "report_to": ["tensorboard"], "project": "p"})
    assert train(path) == 0
    runs = [p.parent for p in (tmp_path / "out-tb" / "tensorboard").rglob("events.out.tfevents.*")]
    assert runs, "no TensorBoard event file"
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    logged = [round(e.value, 4) for e in acc.Scalars("train/loss")]
    ours = [round(e["loss"], 4) for e in events_of(tmp_path / "out-tb") if e["type"] == "step"]
    assert logged == ours and len(ours) == 4


def test_a_tracker_that_is_not_installed_stops_before_training(write_recipe, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    path = write_recipe("wb", data=EXAMPLES / "chat.jsonl", output={"dir": str(tmp_path / "out-wb"),
                                                                    "report_to": "wandb"})
    assert train(path) == 2
    err = capsys.readouterr().err
    assert "output.report_to wandb" in err and "pip install wandb" in err and "Traceback" not in err
    assert not (tmp_path / "out-wb" / "checkpoints").exists()
