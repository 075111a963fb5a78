"""Every recipe field means the same on every provider, or the provider refuses it before anything is paid.

For each field: the argument ftplan's training program gives TRL/PEFT (local, and the Modal body,
which runs the same program on the same recipe), the key of Together's POST /fine-tunes body (as
its SDK's create_finetune_request builds it), the key of OpenAI's POST /fine_tuning/jobs body, or
the refusal message, which names the field and the nearest setting the provider has. README's
table "Recipe fields on each provider" states the same.
"""

import pytest

from ftplan.providers import modal_provider, openai_ft, together
from ftplan.recipes.schema import parse_recipe

pytestmark = [pytest.mark.train]
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
OA_MODEL = "gpt-4.1-mini-2025-04-14"


def recipe(model=MODEL, **top):
    data = {"model": model, "data": {"path": "d.jsonl"}, **top}
    return parse_recipe(data)


def local(r) -> dict:
    """What ftplan's program hands the trainer: TrainingArguments, the LoRA config, the loss mask."""
    from ftplan.recipes.backend import model_architecture, peft_config
    from ftplan.recipes.loss_mask import choose
    from ftplan.recipes.trainers import common_args

    out = dict(common_args(r, "out", cuda=False, has_eval=bool(r.data.eval_path or r.data.eval_fraction)))
    if r.method.adapter != "full":
        cfg = peft_config(r, model_architecture(r.model))
        out.update(lora_r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                   target_modules=cfg.target_modules, use_dora=cfg.use_dora)
    out["loss_mask"] = choose(r, "messages", None).mode
    return out


def modal_body(r) -> dict:
    """Modal runs the same program on the recipe it is handed: the field must arrive unchanged."""
    sent, _ = modal_provider.local_inputs(r)
    return sent


def together_outcome(r) -> dict | str:
    refused = together.unsupported(r)
    return "refused: " + "; ".join(refused) if refused else together.job_body(r, "file-1", "ftplan-x")


def openai_outcome(r) -> dict | str:
    refused = openai_ft.unsupported(r)
    return "refused: " + "; ".join(refused) if refused else openai_ft.job_body(r, "file-1", "j")


def test_train_on_inputs_means_the_same_or_is_refused():
    for value, mask in ((False, "assistant_rendered"), (True, "all")):
        r = recipe(method={"train_on_inputs": value})
        assert local(r)["loss_mask"] == mask and modal_body(r)["method"]["train_on_inputs"] is value
        assert together_outcome(r)["training_method"]["train_on_inputs"] is value
    assert openai_outcome(recipe(model=OA_MODEL))["method"]["type"] == "supervised"
    assert "train_on_inputs: OpenAI trains on assistant messages only" in \
        openai_outcome(recipe(model=OA_MODEL, method={"train_on_inputs": True}))


@pytest.mark.parametrize("adapter", ["qlora", "dora"])
def test_adapters_together_lacks_are_refused_with_the_nearest(adapter):
    r = recipe(method={"adapter": adapter})
    assert local(r)["use_dora"] is (adapter == "dora")
    assert f"method.adapter {adapter}: Together trains LoRA or full models; the nearest is lora" in \
        together_outcome(r)
    assert "OpenAI chooses how it trains" in openai_outcome(recipe(model=OA_MODEL, method={"adapter": adapter}))


def test_lora_settings_and_targets():
    r = recipe(method={"lora": {"rank": 8, "alpha": 32, "dropout": 0.1, "targets": "attention"}})
    lo = local(r)
    assert (lo["lora_r"], lo["lora_alpha"], lo["lora_dropout"]) == (8, 32, 0.1)
    assert sorted(lo["target_modules"]) == ["self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj",
                                            "self_attn.v_proj"]
    tt = together_outcome(r)["training_type"]
    assert (tt["lora_r"], tt["lora_alpha"], tt["lora_dropout"]) == (8, 32, 0.1)
    assert tt["lora_trainable_modules"] == "k_proj,o_proj,q_proj,v_proj"  # the model's names, not "attention"
    assert "method.lora.alpha, method.lora.dropout, method.lora.rank, method.lora.targets: OpenAI has no LoRA" in \
        openai_outcome(recipe(model=OA_MODEL, method={"lora": {"rank": 8, "alpha": 32, "dropout": 0.1,
                                                               "targets": "attention"}}))


@pytest.mark.parametrize("scheduler,together_kind,min_ratio", [("cosine", "cosine", 0.0), ("linear", "linear", 0.0),
                                                               ("constant", "linear", 1.0),
                                                               ("constant_with_warmup", "linear", 1.0)])
def test_schedulers_are_mapped_to_togethers_two(scheduler, together_kind, min_ratio):
    r = recipe(hyperparameters={"lr_scheduler": scheduler, "warmup_ratio": 0.1})
    assert local(r)["lr_scheduler_type"] == scheduler
    sched = together_outcome(r)["lr_scheduler"]
    assert sched["lr_scheduler_type"] == together_kind and sched["lr_scheduler_args"]["min_lr_ratio"] == min_ratio
    assert together_outcome(r)["warmup_ratio"] == (0.0 if scheduler == "constant" else 0.1)


def test_batch_and_accumulation_are_one_effective_batch_on_the_apis():
    r = recipe(hyperparameters={"batch_size": 2, "gradient_accumulation": 8})
    lo = local(r)
    assert (lo["per_device_train_batch_size"], lo["gradient_accumulation_steps"]) == (2, 8)
    assert together_outcome(r)["batch_size"] == 16
    oa = openai_outcome(recipe(model=OA_MODEL, hyperparameters={"batch_size": 2, "gradient_accumulation": 8}))
    assert oa["method"]["supervised"]["hyperparameters"]["batch_size"] == 16


def test_steps_and_fractional_epochs_are_refused_by_the_apis():
    r = recipe(hyperparameters={"epochs": 1.5, "max_steps": 100})
    lo = local(r)
    assert lo["num_train_epochs"] == 1.5 and lo["max_steps"] == 100
    out = together_outcome(r)
    assert "hyperparameters.epochs 1.5: Together takes whole epochs; the nearest are 1 and 2" in out
    assert "hyperparameters.max_steps 100: Together counts epochs" in out
    assert "OpenAI takes whole epochs" in openai_outcome(recipe(model=OA_MODEL, hyperparameters={"epochs": 1.5}))
    fixed = openai_outcome(recipe(model=OA_MODEL, hyperparameters={"lr_scheduler": "constant", "packing": True}))
    assert "hyperparameters.lr_scheduler, hyperparameters.packing: OpenAI sets these itself" in fixed


def test_optimizer_precision_and_hardware_pins():
    r = recipe(hyperparameters={"optimizer": "adamw_8bit", "precision": "fp16"}, hardware={"gpu": "H100"})
    lo = local(r)
    assert lo["optim"] == "adamw_bnb_8bit" and lo["fp16"] is True
    out = together_outcome(r)
    assert "optimizer adamw_8bit: Together chooses its own optimizer" in out and "precision fp16" in out
    assert "hardware.gpu/gpus: Together chooses the hardware" in out


def test_learning_rate_and_the_rest_of_the_optimisation():
    r = recipe(hyperparameters={"learning_rate": 1e-4, "weight_decay": 0.01, "max_grad_norm": 0.5, "seed": 7,
                                "max_seq_length": 1024, "packing": True})
    lo = local(r)
    assert (lo["learning_rate"], lo["weight_decay"], lo["max_grad_norm"], lo["seed"]) == (1e-4, 0.01, 0.5, 7)
    body = together_outcome(r)
    assert (body["learning_rate"], body["weight_decay"], body["max_grad_norm"], body["random_seed"]) == \
        (1e-4, 0.01, 0.5, 7)
    assert (body["max_seq_length"], body["packing"]) == (1024, True)
    assert "learning_rate_multiplier" in openai_outcome(recipe(model=OA_MODEL,
                                                               hyperparameters={"learning_rate": 1e-4}))
    assert openai_outcome(recipe(model=OA_MODEL, hyperparameters={"seed": 7}))["seed"] == 7


def test_preference_settings():
    r = recipe(method={"objective": "dpo", "beta": 0.2, "rpo_alpha": 0.5})
    body = together_outcome(r)["training_method"]
    assert body == {"method": "dpo", "dpo_beta": 0.2, "rpo_alpha": 0.5}
    simpo = together_outcome(recipe(method={"objective": "simpo", "simpo_gamma": 0.7}))["training_method"]
    assert simpo["simpo_gamma"] == 0.7 and simpo["dpo_reference_free"] is True
    oa = openai_outcome(recipe(model=OA_MODEL, method={"objective": "dpo", "beta": 0.2}))
    assert oa["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    assert "rpo_alpha: OpenAI's DPO has no NLL term" in \
        openai_outcome(recipe(model=OA_MODEL, method={"objective": "dpo", "rpo_alpha": 0.5}))


def test_checkpoints_eval_data_and_outputs():
    r = recipe(checkpoint={"keep": 5}, data={"path": "d.jsonl", "eval_fraction": 0.1})
    assert local(r)["save_total_limit"] == 5 and local(r)["eval_strategy"] == "epoch"
    body = together.job_body(r, "file-1", "ftplan-x", validation_file="file-2")
    assert body["n_checkpoints"] == 5 and body["validation_file"] == "file-2" and body["n_evals"] == body["n_epochs"]
    assert openai_ft.job_body(recipe(model=OA_MODEL), "file-1", "j", "file-2")["validation_file"] == "file-2"
    assert "output.merge/push_to_hub: the model stays at OpenAI" in \
        openai_outcome(recipe(model=OA_MODEL, output={"merge": True}))


def test_the_modal_body_trains_the_recipe_it_was_given():
    r = recipe(method={"train_on_inputs": True, "lora": {"rank": 8}},
               hyperparameters={"lr_scheduler": "constant", "epochs": 1.5, "max_steps": 30})
    sent = modal_body(r)
    assert sent["method"] == r.model_dump(mode="json")["method"]
    assert sent["hyperparameters"] == r.model_dump(mode="json")["hyperparameters"]


def test_report_to_reaches_each_providers_tracker_or_is_refused(monkeypatch):
    """Local and Modal: transformers' TrainingArguments.report_to (its own callbacks log); Together: the wandb_*
    fields of POST /fine-tunes (together-openapi.yaml); OpenAI: `integrations` [{type: wandb}] (openai-openapi.yaml)."""
    from trl import SFTConfig

    r = recipe(name="run-7", output={"report_to": ["wandb", "tensorboard"], "project": "acme"})
    from ftplan.recipes.trainers import common_args

    args = SFTConfig(**common_args(r, "out", cuda=False, has_eval=False))  # TRL's own config validates them
    assert args.report_to == ["wandb", "tensorboard"] and args.run_name == "run-7" and args.project == "acme"
    assert modal_body(r)["output"]["report_to"] == ["wandb", "tensorboard"]
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert "output.report_to tensorboard: Together reports to Weights & Biases only" in together_outcome(r)
    wandb_only = recipe(name="run-7", output={"report_to": "wandb", "project": "acme"})
    assert "export WANDB_API_KEY" in together_outcome(wandb_only)
    monkeypatch.setenv("WANDB_API_KEY", "k-123")
    body = together_outcome(wandb_only)
    assert (body["wandb_api_key"], body["wandb_project_name"], body["wandb_name"]) == ("k-123", "acme", "run-7")
    oa = openai_outcome(recipe(model=OA_MODEL, name="run-7", output={"report_to": ["wandb"], "project": "acme"}))
    assert oa["integrations"] == [{"type": "wandb", "wandb": {"project": "acme", "name": "run-7"}}]
    assert "OpenAI's only integration is Weights & Biases" in openai_outcome(
        recipe(model=OA_MODEL, output={"report_to": ["mlflow"]}))
    assert together_outcome(recipe()).get("wandb_api_key") is None and "integrations" not in openai_outcome(
        recipe(model=OA_MODEL))
