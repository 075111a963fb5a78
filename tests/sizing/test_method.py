import pytest

from ftplan.sizing.dataformat import BY_KEY
from ftplan.sizing.errors import InvalidValueError
from ftplan.sizing.method import recommend


def rec(fmt="messages", examples=5000, tokens=2_000_000, model="meta-llama/Llama-3.1-8B-Instruct", params=8e9, **kw):
    return recommend(BY_KEY[fmt], examples=examples, tokens=tokens, model_id=model, params=params, **kw)


@pytest.mark.parametrize("fmt,objective", [
    ("messages", "sft"), ("prompt_completion", "sft"), ("preference", "dpo"), ("preference_implicit", "dpo"),
    ("openai_preference", "dpo"), ("unpaired_preference", "kto"), ("prompt_only", "grpo"),
    ("text", "continued-pretraining"),
])
def test_objective_follows_the_data_format(fmt, objective):
    choice = rec(fmt)
    assert choice.objective == objective and choice.reasons[0]


def test_playbook_defaults():
    c = rec()
    assert (c.lora_rank, c.lora_alpha, c.lora_targets, c.scheduler, c.warmup_ratio) == (16, 32, "all-linear",
                                                                                          "cosine", 0.03)
    assert c.adapters == ("lora", "qlora") and 1e-4 <= c.learning_rate <= 2e-4 and 1 <= c.epochs <= 3


def test_small_data_gets_rank_8_and_a_nudge_towards_prompting():
    c = rec(examples=300)
    assert c.lora_rank == 8 and any("RAG" in r for r in c.reasons)


def test_epochs_shrink_as_data_grows():
    assert rec(examples=500).epochs >= rec(examples=50_000).epochs >= rec(examples=500_000).epochs == 1


def test_full_finetune_only_when_asked_and_warned_on_small_data():
    assert "full" not in rec().adapters
    c = rec(adapter="full", examples=2000)
    assert c.adapters == ("full",) and any("10k" in w for w in c.warnings) and c.learning_rate <= 1e-5


def test_method_override_must_match_the_data():
    assert rec("preference", method="simpo").objective == "simpo"
    with pytest.raises(InvalidValueError, match="--method dpo cannot train on prompt-completion"):
        rec("prompt_completion", method="dpo")
    with pytest.raises(InvalidValueError, match="not known"):
        rec(method="ppo")


def test_grpo_without_verifier_warns_and_with_one_does_not():
    assert any("--verifier" in w for w in rec("prompt_only").warnings)
    assert not any("--verifier" in w for w in rec("prompt_only", verifier="m:f").warnings)


def test_small_continued_pretraining_warns():
    assert any("1B tokens" in w for w in rec("text", tokens=5_000_000, model="meta-llama/Llama-3.1-8B").warnings)


def test_base_vs_instruct_mismatch_is_flagged_from_the_id():
    assert any("base model" in w for w in rec("preference", model="meta-llama/Llama-3.1-8B").warnings)
    assert not any("base model" in w for w in rec("preference").warnings)
    assert any("instruct model" in w for w in rec("text", tokens=2e9).warnings)
