"""The planner models the program that will run: the same backend rule as the trainer, accelerate's upcast."""

import inspect

import pytest

from ftplan.recipes.backend import select_backend
from ftplan.sizing.setup import TrainingSetup
from ftplan.sizing.trainers import UNSLOTH_OBJECTIVES, accelerate_fsdp_upcast, apply_trainer, default_trainer


@pytest.mark.parametrize("adapter", ["lora", "qlora", "dora", "full"])
@pytest.mark.parametrize("gpus", [1, 2])
@pytest.mark.parametrize("dropout", [0.0, 0.05])
@pytest.mark.parametrize("objective", ["sft", "dpo", "simpo", "grpo"])
def test_planner_picks_the_backend_the_training_program_selects(adapter, gpus, dropout, objective):
    """On a CUDA box with the gpu extra, recipes.backend.select_backend and the planner agree."""
    run = select_backend(adapter, objective, cuda=True, unsloth_installed=True, gpus=gpus, lora_dropout=dropout)
    setup = TrainingSetup(adapter=adapter, gpus=gpus, lora_dropout=dropout)
    planned = default_trainer(setup, objective)
    assert (planned == "unsloth") == (run.name == "unsloth")
    assert default_trainer(setup, objective, unsloth_available=False) == "trl"


def test_unsloth_objectives_are_one_list():
    from ftplan.recipes import backend

    assert backend.UNSLOTH_OBJECTIVES is UNSLOTH_OBJECTIVES


def test_a_user_set_knob_survives_the_trainer_preset():
    s = apply_trainer(TrainingSetup(loss="chunked"), "unsloth", keep=frozenset({"loss"}))
    assert s.loss == "chunked" and s.fused_kernels and s.adapter_dtype == "bf16"
    assert apply_trainer(TrainingSetup(), "unsloth").loss == "fused"


def test_accelerate_upcasts_trainable_weights_under_fsdp_mixed_precision():
    """Pinned to accelerate's own code: fsdp2_prepare_model upcasts trainable low-precision params to fp32."""
    from accelerate.utils import fsdp_utils

    source = inspect.getsource(fsdp_utils.fsdp2_prepare_model)
    assert "param.requires_grad and param.dtype != torch.float32" in source
    assert "param.data = param.data.to(torch.float32)" in source
    full = TrainingSetup(adapter="full", gpus=8, distributed="fsdp")
    assert accelerate_fsdp_upcast(full).precision == "mixed"
    assert accelerate_fsdp_upcast(TrainingSetup(gpus=8, distributed="fsdp")).precision == "bf16"  # LoRA
    assert apply_trainer(full, "trl").precision == "mixed"
