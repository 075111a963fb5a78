"""The command line that starts the training program: plain python on one device, accelerate beyond.

For more than one GPU ftplan writes an accelerate config from the plan: FSDP (full shard,
transformer-layer wrapping, sharded state dict) or DeepSpeed ZeRO-3, and runs
`accelerate launch --config_file ... -m ftplan.recipes.train ...`.
"""

from __future__ import annotations

import sys
from pathlib import Path


def accelerate_config(gpus: int, distributed: str, precision: str = "bf16", machines: int = 1, rank: int = 0,
                      main_ip: str | None = None) -> dict:
    """`gpus` is the total over all machines (accelerate's num_processes)."""
    mixed = {"bf16": "bf16", "fp16": "fp16"}.get(precision, "no")
    base = {"compute_environment": "LOCAL_MACHINE", "machine_rank": rank, "num_machines": machines,
            "num_processes": gpus,
            "main_training_function": "main", "mixed_precision": mixed, "rdzv_backend": "static",
            "same_network": True, "use_cpu": False}
    if machines > 1:
        base.update(main_process_ip=main_ip, main_process_port=29500)
    if distributed == "zero3":
        return {**base, "distributed_type": "DEEPSPEED",
                "deepspeed_config": {"zero_stage": 3, "offload_optimizer_device": "none",
                                     "offload_param_device": "none",
                                     "zero3_init_flag": True, "zero3_save_16bit_model": True}}
    if distributed == "ddp":
        return {**base, "distributed_type": "MULTI_GPU"}
    return {**base, "distributed_type": "FSDP",
            "fsdp_config": {"fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                            "fsdp_cpu_ram_efficient_loading": True, "fsdp_offload_params": False,
                            "fsdp_state_dict_type": "SHARDED_STATE_DICT", "fsdp_activation_checkpointing": False,
                            "fsdp_reshard_after_forward": True}}


def training_command(recipe_path: str, out_dir: Path, events_path: Path, *, plan_path: Path | None = None,
                     usd_per_hour: float = 0.0, resume: bool = False, gpus: int = 1, distributed: str = "auto",
                     precision: str = "bf16", config_dir: Path | None = None, machines: int = 1, rank: int = 0,
                     main_ip: str | None = None, extra: list[str] | None = None) -> list[str]:
    args = [str(recipe_path), "--output", str(out_dir), "--events", str(events_path),
            "--usd-per-hour", str(usd_per_hour), *(extra or [])]
    if plan_path:
        args += ["--plan", str(plan_path)]
    if resume:
        args.append("--resume")
    if gpus <= 1:
        return [sys.executable, "-m", "ftplan.recipes.train", *args]
    import yaml

    dist = "fsdp" if distributed == "auto" else distributed
    cfg_path = (config_dir or out_dir) / "accelerate.yaml"
    cfg_path.write_text(yaml.safe_dump(accelerate_config(gpus, dist, precision, machines, rank, main_ip),
                                       sort_keys=False))
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg_path), "-m",
            "ftplan.recipes.train", *args]
