"""The speed model's structure: what bounds a step, and how the program that runs it changes the time.

The constants are fitted on published runs (bench/); these tests hold the shape the published runs
show, whatever the constants: Qwen-1's profiling table (README "Profiling of Memory and Speed",
QwenLM/Qwen @712d922) takes 1.0 s/it for Qwen-1.8B LoRA at both 256 and 512 tokens, so small steps
cost a fixed time; two nodes are slower per GPU than one; reading the weights bounds a tiny step.
"""

import pytest

from ftplan.sizing import constants as C
from ftplan.sizing.catalog import resolve_model
from ftplan.sizing.gpus import get_gpu
from ftplan.sizing.setup import TrainingSetup
from ftplan.sizing.throughput import estimate_throughput, flops_per_token
from ftplan.sizing.trainers import apply_trainer

LLAMA8 = resolve_model("llama-3.1-8b").arch
H100 = get_gpu("H100")


def speed(arch=LLAMA8, gpu=H100, **kw):
    return estimate_throughput(arch, TrainingSetup(**kw), gpu)


def test_small_steps_cost_a_fixed_time():
    """A 256- and a 512-token micro-step of Qwen-1.8B LoRA take about the same time (launch-bound)."""
    qwen = resolve_model("Qwen/Qwen-1_8B").arch
    a100 = get_gpu("A100-80GB")
    small = estimate_throughput(qwen, TrainingSetup(seq_len=256, lora_rank=64, grad_accum=8), a100)
    double = estimate_throughput(qwen, TrainingSetup(seq_len=512, lora_rank=64, grad_accum=8), a100)
    assert small.bound == "launch" and double.step_seconds == pytest.approx(small.step_seconds, rel=0.15)
    big = estimate_throughput(qwen, TrainingSetup(seq_len=8192, lora_rank=64, grad_accum=8), a100)
    assert big.bound in ("compute", "bandwidth") and big.tokens_per_second > 3 * small.tokens_per_second


def test_reading_the_weights_bounds_a_tiny_step():
    """8B LoRA on a 4090 at 64 tokens: reading the bf16 weights three times takes ~48 ms at 1008 GB/s."""
    t = speed(gpu=get_gpu("RTX-4090"), seq_len=64)
    floor = 3 * LLAMA8.total_params * 2 / (1008e9)
    assert t.breakdown["matmul"] >= floor * 0.99
    assert t.step_seconds >= floor


def test_achieved_mfu_is_flops_over_time_over_peak():
    t = speed(seq_len=4096)
    per_gpu = t.tokens_per_second / 1
    assert t.mfu == pytest.approx(per_gpu * t.flops_per_token / (H100.bf16_tflops * 1e12))
    assert t.flops_per_token == sum(flops_per_token(LLAMA8, TrainingSetup(seq_len=4096)).values())


def test_two_nodes_are_slower_per_gpu_than_one():
    one = speed(adapter="full", gpus=8, distributed="fsdp")
    two = speed(adapter="full", gpus=16, distributed="fsdp")
    assert two.tokens_per_second / 16 < one.tokens_per_second / 8
    assert two.breakdown["communication"] > one.breakdown["communication"]


def test_fused_programs_are_faster_than_eager_ones():
    base = TrainingSetup(seq_len=1024)
    trl = estimate_throughput(LLAMA8, apply_trainer(base, "trl"), H100)
    unsloth = estimate_throughput(LLAMA8, apply_trainer(base, "unsloth"), H100)
    assert unsloth.tokens_per_second > trl.tokens_per_second
    per_layer = (unsloth.breakdown["launch"] - C.STEP_SECONDS, trl.breakdown["launch"] - C.STEP_SECONDS)
    assert per_layer[0] == pytest.approx(per_layer[1] * C.FUSED_LAUNCH_FRACTION)


def test_compile_speeds_up_a_step_that_launches_do_not_bound():
    """torchtune's README: Llama-3.2-3B full fine-tuning, 8192 tokens on an A100, 7,075 tok/s eager and
    8,998 with torch.compile. At that size launches are hidden behind the GPU's work; what compile
    saves is elementwise traffic (one fused kernel instead of several passes over a tensor)."""
    llama3b, a100 = resolve_model("meta-llama/Llama-3.2-3B").arch, get_gpu("A100-80GB")
    base = TrainingSetup(adapter="full", seq_len=8192, gradient_checkpointing=False, loss="chunked")
    eager = estimate_throughput(llama3b, apply_trainer(base, "eager"), a100)
    compiled = estimate_throughput(llama3b, apply_trainer(base, "compiled"), a100)
    assert eager.bound == compiled.bound == "compute"
    assert compiled.breakdown["elementwise"] < eager.breakdown["elementwise"]
    assert 1.1 < compiled.tokens_per_second / eager.tokens_per_second < 1.6


def test_cards_without_peer_to_peer_share_one_host_path():
    """GeForce 4090s cannot talk peer to peer (NVIDIA/nccl#1127): NCCL stages every transfer through host
    memory, so four cards gather FSDP shards more slowly per GPU than two. An RTX A6000 (P2P over PCIe)
    keeps its link per GPU."""
    geforce, workstation = get_gpu("RTX-4090"), get_gpu("RTX-A6000")
    assert not geforce.peer_to_peer and geforce.peer_to_peer_source and workstation.peer_to_peer

    def per_gpu(gpu, n):
        setup = TrainingSetup(adapter="full", gpus=n, distributed="fsdp", seq_len=4096)
        return estimate_throughput(LLAMA8, setup, gpu).tokens_per_second / n

    assert per_gpu(geforce, 4) < 0.5 * per_gpu(geforce, 2)
    assert per_gpu(workstation, 4) > 0.75 * per_gpu(workstation, 2)


def test_moe_runs_slower_than_its_active_parameters_suggest():
    """Qwen3-30B-A3B activates ~3B parameters a token but an eager MoE block calls every expert."""
    moe = resolve_model("Qwen/Qwen3-30B-A3B").arch
    dense = resolve_model("Qwen/Qwen2.5-3B").arch
    m = estimate_throughput(moe, TrainingSetup(seq_len=512), H100)
    d = estimate_throughput(dense, TrainingSetup(seq_len=512), H100)
    assert moe.active_matmul_params < 1.5 * dense.active_matmul_params
    assert m.tokens_per_second < 0.5 * d.tokens_per_second
    assert m.breakdown["launch"] > 5 * d.breakdown["launch"]


def test_gradient_accumulation_spreads_the_optimizer_step():
    one = speed(seq_len=512, grad_accum=1)
    eight = speed(seq_len=512, grad_accum=8)
    assert eight.breakdown["optimizer"] == pytest.approx(one.breakdown["optimizer"] / 8)
    assert eight.tokens_per_second > one.tokens_per_second


def test_paged_optimizer_states_cross_pcie_every_step():
    full = dict(adapter="full", seq_len=2048, gpu=get_gpu("RTX-4090"))
    paged = speed(optimizer="paged_adamw_32bit", **full)
    plain = speed(optimizer="adamw", **full)
    assert paged.breakdown["optimizer"] > 10 * plain.breakdown["optimizer"]
