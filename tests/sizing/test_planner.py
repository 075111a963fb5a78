import json
import shutil
from pathlib import Path

import pytest
from tokenizer_fixture import build_tokenizer

from ftplan.sizing.errors import InvalidValueError
from ftplan.sizing.planner import plan_for_data

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name,fmt,objective", [
    ("chat.jsonl", "messages", "sft"), ("prompt_completion.jsonl", "prompt_completion", "sft"),
    ("prompt_completion.parquet", "prompt_completion", "sft"), ("chat.csv", "prompt_completion", "sft"),
    ("preference.jsonl", "preference", "dpo"), ("preference.json", "preference", "dpo"),
    ("kto.jsonl", "unpaired_preference", "kto"), ("prompts.jsonl", "prompt_only", "grpo"),
    ("text.jsonl", "text", "continued-pretraining"),
])
def test_bundled_examples_plan_end_to_end(name, fmt, objective):
    r = plan_for_data(EXAMPLES / name, "Qwen/Qwen2.5-7B-Instruct")
    d = r.to_dict()
    assert d["dataset"]["format"] == fmt and d["method"]["objective"] == objective
    assert d["cheapest"] and d["fastest"] and d["pareto"] and d["plans"]
    json.dumps(d)


def test_preference_pairs_count_two_sequences():
    r = plan_for_data(EXAMPLES / "preference.jsonl", "llama-3.1-8b")
    assert r.dataset.sequences == 2 * r.dataset.examples


def test_model_folder_tokenizer_gives_exact_counts(tmp_path):
    model = tmp_path / "model"
    build_tokenizer(model)
    cfg = {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 2,
           "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 400, "max_position_embeddings": 64}
    (model / "config.json").write_text(json.dumps(cfg))
    data = tmp_path / "d.jsonl"
    shutil.copy(EXAMPLES / "chat.jsonl", data)
    r = plan_for_data(data, str(model))
    assert r.dataset.exact and r.dataset.counter.startswith("tokenizer")
    assert r.dataset.warnings["over_context"].count > 0  # 64-token context: the tokenizer's counts say so


def test_limits_leave_no_plan_and_a_suggestion():
    r = plan_for_data(EXAMPLES / "chat.jsonl", "llama-3.1-70b", max_cost=0.001)
    assert r.plans == [] and r.all_plans and "--max-cost" in r.suggestion


@pytest.mark.parametrize("kw,needle", [({"epochs": 0}, "--epochs"), ({"max_cost": -1}, "--max-cost"),
                                       ({"method": "kto"}, "cannot train")])
def test_impossible_options(kw, needle):
    with pytest.raises(InvalidValueError, match=needle):
        plan_for_data(EXAMPLES / "chat.jsonl", "llama-3.1-8b", **kw)


def test_memory_is_sized_for_the_longest_sequence_not_the_cap():
    """Padding stops at each micro-batch's longest sequence: short data needs less than --seq-len."""
    from ftplan.sizing.catalog import resolve_model
    from ftplan.sizing.memory import estimate_memory

    padded = plan_for_data(EXAMPLES / "chat.jsonl", "llama-3.1-8b", gpus={"H100"}, counts={1}, adapter="lora",
                           packing=False)
    packed = plan_for_data(EXAMPLES / "chat.jsonl", "llama-3.1-8b", gpus={"H100"}, counts={1}, adapter="lora",
                           packing=True)
    longest = padded.dataset.lengths["max"]
    assert longest < 100  # the bundled chat examples are short
    arch = resolve_model("llama-3.1-8b").arch
    gpu_plan = next(p for p in padded.plans if p.training_setup)
    pad = gpu_plan.training_setup
    pack = next(p for p in packed.plans if p.training_setup).training_setup
    assert longest <= pad.seq_len < 100 and pack.seq_len == 2048  # packed rows fill --seq-len
    assert gpu_plan.per_gpu_bytes == estimate_memory(arch, pad).per_gpu
    assert gpu_plan.per_gpu_bytes < estimate_memory(arch, pad.with_(seq_len=2048)).per_gpu
