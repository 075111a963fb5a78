"""GPU specs: memory as the driver reports it, every figure with its source and date."""

import json
from importlib import resources

import pytest

from ftplan.sizing.gpus import all_gpus, get_gpu


@pytest.mark.parametrize("name,mib", [
    # modal-labs/modal-client PR #2797 (2025-01-23): nvidia-smi totals across Modal's GPU types
    ("H100", 81559), ("A100-80GB", 81920), ("A100-40GB", 40960), ("A10", 23028), ("L40S", 46068), ("L4", 23034),
    ("T4", 15360),
    ("RTX-4090", 24564),  # RLinf/RLinf issue #255: nvidia-smi on an RTX 4090
    ("B200", 183359),  # NVIDIA/nccl-tests issue #333: nvidia-smi on 8x B200
])
def test_capacity_is_what_nvidia_smi_reports(name, mib):
    gpu = get_gpu(name)
    assert gpu.memory_mib == mib and gpu.memory_bytes == mib * 2**20


def test_an_8b_lora_that_fits_marketed_gb_is_tight_on_the_l4_the_driver_reports():
    from ftplan.sizing.estimate import estimate

    e = estimate("llama-3.1-8b", gpu="L4")
    assert e.gpu.memory_gib == pytest.approx(22.49, abs=0.01)
    assert e.verdict != "fits" or e.memory.per_gpu * 1.15 <= e.gpu.memory_bytes


def test_every_gpu_cites_a_public_source_and_a_date():
    data = json.loads(resources.files("ftplan.sizing").joinpath("data/gpus.json").read_text())
    for row in data["gpus"]:
        for key in ("source", "memory_source"):
            assert row[key] and "../shared" not in row[key], (row["name"], key)
        assert row["as_of"]
    assert len(all_gpus()) == len(data["gpus"])
