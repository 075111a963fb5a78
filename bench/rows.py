"""Published measurement rows -> estimator inputs (`Case`), or the reason a row cannot be expressed.

How rows are read (what each source measured, per its notes):
- memory metric: `max_memory_allocated` / "Peak Memory Active" / torchtune peak memory ->
  compared with the estimate's `allocated`; "reserved" (incl. Answer.AI's train.py log and PEFT's
  99th percentile of memory_reserved) -> allocated + allocator slack; nvidia-smi, "memory MB" of
  notebooks, unspecified (Qwen's table) -> `per_gpu` (adds the CUDA context). Values are compared in
  GiB: the data set's GiB figure, else its GB figure converted; Qwen-1's table prints "G", read as
  GiB (the unit torch and nvidia-smi report).
- "max context that fits in V GB" rows: the estimate at that context should be about V.
- OOM rows: flagged when the estimate's `per_gpu` exceeds the card (or the stated budget).
- throughput: tokens per second over all GPUs as the row derived it. Where the row gives the data's
  real token count and the steps taken (PEFT's MetaMathQA runs: length-bucketed batches of ~210-token
  samples under a 768 cap), speed is predicted at the mean tokens per micro-batch; memory at the cap.
- programs: HF Trainer / TRL / PEFT / Answer.AI's train.py / LitGPT / torchtune without compile run
  eager kernels; torchtune with compile runs fused ones; Unsloth rows run Unsloth. Framework
  conventions (adapter dtype, loss, bitsandbytes generation, LoRA dropout, kbit upcast, LitGPT's
  untied lm_head) are read from the framework and date; each helper below cites why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from ftplan.sizing.catalog import resolve_model
from ftplan.sizing.errors import FtplanError
from ftplan.sizing.gpus import get_gpu
from ftplan.sizing.setup import TrainingSetup
from ftplan.sizing.trainers import accelerate_fsdp_upcast

DATA_DIR = Path(__file__).resolve().parent / "data"
DATA_FILES = {"set 1": DATA_DIR / "published-measurements.json", "set 2": DATA_DIR / "published-measurements-2.json",
              "set 3": DATA_DIR / "published-measurements-3.json"}
GIB = 2**30


@dataclass
class Case:
    row: dict
    dataset: str  # which published set the row came from
    source: str  # who published it: the unit left out in leave-one-source-out
    model: str
    setup: TrainingSetup  # as the run was configured (memory)
    speed_setup: TrainingSetup  # tokens per micro-batch as the GPU saw them on average (speed)
    gpu: str | None
    capacity_gib: float | None
    metric: str  # allocated | reserved | device
    memory_gib: float | None  # measured peak, comparable to `metric`
    tokens_per_second: float | None  # measured, all GPUs


def source_of(row: dict) -> str:
    """The publisher of a row: its repository, or the web site for rows read from a page."""
    src = row["source"]
    if src.get("repo"):
        return src["repo"]
    return urlparse(src.get("url") or "").netloc or "unknown"


def _model_id(name: str) -> str:
    """Chat, instruct and re-uploaded variants share their base model's architecture."""
    name = re.sub(r"\s*\(.*\)$", "", name.strip())
    name = re.sub(r"-Instruct$|-Chat$", "", name)
    name = re.sub(r"-chat-hf$", "-hf", name)
    name = name.replace("NousResearch/", "meta-llama/").replace("Meta-Llama-3.1", "Llama-3.1")
    return "mistralai/Mistral-7B-v0.1" if "mistral-7b" in name.lower() and "dolphin" in name.lower() else name


GPU_PATTERNS = (
    ("a100-sxm4-40gb", "A100-40GB"), ("a100 40gb", "A100-40GB"), ("a100-sxm4-80gb", "A100-80GB"),
    ("a100 80gb", "A100-80GB"), ("a100 (80", "A100-80GB"), ("h100", "H100"), ("l40s", "L40S"),
    ("rtx 4090", "RTX-4090"), ("rtx 3090", "RTX-3090"), ("3090/4090", "RTX-4090"), ("a6000 ada", "RTX-6000-ADA"),
    ("rtx a6000", "RTX-A6000"), ("a5000", "RTX-A5000"), ("a10g", "A10G"), ("l4 ", "L4"), ("v100", "V100-16GB"),
)


def _gpu(text: str | None) -> tuple[str | None, float | None]:
    """Card name and the memory to compare against (a stated budget wins)."""
    if not text:
        return None, None
    budget = re.search(r"(\d+) GB (?:VRAM )?budget", text)
    t = text.lower() + " "
    name = next((gpu for key, gpu in GPU_PATTERNS if key in t), None)
    if budget:
        return name, float(budget.group(1))
    if name is None:
        m = re.search(r"(\d+) ?GB GPU", text)
        return None, float(m.group(1)) if m else None
    return name, get_gpu(name).memory_gib


TARGET_NAMES = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate", "up_proj": "up",
                "down_proj": "down", "query": "q", "key": "k", "value": "v"}


def _targets(text: str | None) -> str:
    """A row's LoRA targets as ftplan's --lora-targets: all-linear, or a list of generic/own module names."""
    t = (text or "").lower()
    if not t or "all-linear" in t or t.startswith("all") or "all linear" in t:
        return "all-linear"
    inside = re.search(r"\(([a-z_,]+)\)", t)  # "PEFT default for Llama (q_proj,v_proj)"
    listed = inside.group(1) if "default" in t and inside else re.split(r"[\s(;]", t.strip())[0]
    if listed.startswith("q,v,o"):
        return "q,v,o,gate,up,down"
    if "mlp" in t:  # torchtune's "q,k,v,o + MLP (+ output)": every decoder linear
        return "all-linear"
    names = [TARGET_NAMES.get(n, n) for n in re.split(r"[,+]", listed) if n]
    return ",".join(names) if names else "all-linear"


def _lora_dropout(fw: str, source_note: str) -> float:
    """The LoRA dropout each framework's configs used (rows do not record it).

    LitGPT / lit-gpt configs: 0.05. torchtune: 0.05 until PR #1492 (2024-09-04) set 0.0.
    Unsloth (and the HF columns of Unsloth's own benchmarks): 0, Unsloth's recommended setting.
    PEFT's FSDP/DeepSpeed QLoRA docs (examples/sft scripts): 0.1. qlora.py guanaco scripts: 0.1 up to
    13B, 0.05 above. llama-recipes: 0.05. Qwen-1's finetune.py: lora_dropout 0.05. Answer.AI's
    train.py: lora_dropout 0.1. Otherwise PEFT's default, 0.
    """
    if "litgpt" in fw or "lit-gpt" in fw:
        return 0.05
    if "torchtune" in fw:
        return 0.0 if any(k in fw for k in ("sep 2024", "nov 2024")) else 0.05
    if "unsloth" in source_note:
        return 0.0
    if "examples/sft" in fw or "fsdp_qlora train.py" in fw:
        return 0.1
    if "qlora.py" in fw or "llama-recipes" in fw or "qwen finetune.py" in fw:
        return 0.05
    return 0.0


def _kbit_prepared(fw: str, gpus: int) -> bool:
    """HF QLoRA through TRL's SFTTrainer (< 1.0) or qlora.py runs prepare_model_for_kbit_training.

    TRL skips it for sharded QLoRA (FSDP / ZeRO-3 with 4-bit weights on cpu/meta), so multi-GPU
    rows are not upcast.
    """
    hf = fw.startswith("hugging face") or fw.startswith("hf ") or "qlora.py" in fw
    return hf and gpus == 1


def _bnb_saves_inputs(fw: str, source_note: str) -> bool:
    """bitsandbytes < 0.43.2 (fixed by PR #1270, July 2024) kept every 4-bit linear's input.

    LitGPT pinned bitsandbytes 0.42.0 ("LitGPT only supports bitsandbytes v0.42.0"); lit-gpt 2023
    ran 0.41.1; the HF/PEFT rows from 2023 to spring 2024 (Answer.AI's benchmarks of Feb-Mar 2024
    included) predate 0.43.2. torchtune quantises with torchao's NF4 (saves no input); Unsloth runs
    its own LoRA kernels; Unsloth's 2025 HF columns ran a later bitsandbytes.
    """
    if "torchtune" in fw or fw.startswith("unsloth"):
        return False
    if "2025" in source_note:
        return False
    return True


def _trl_casts_to_bf16(fw: str, method: str) -> bool:
    """TRL's SFTTrainer (0.7.5 to 0.11, Dec 2023 - Oct 2024) and PEFT's examples/sft scripts run
    `peft_module_casting_to_bf16` on 4-bit models under bf16: LoRA layers, embeddings and lm_head go to
    bf16 (norms stay fp32), undoing prepare_model_for_kbit_training's upcast for all but the norms."""
    return method == "qlora" and ("sfttrainer" in fw or "examples/sft" in fw)


def _trainer(fw: str, notes: str) -> str:
    if "unsloth" in fw:
        return "unsloth"
    if "compile" in notes:
        return "compiled"
    if "trl" in fw or "hf " in fw or "hugging face" in fw or "peft" in fw or "trainer" in fw:
        return "trl"
    return "eager"


def _distributed(text: str, gpus: int) -> str:
    t = text.lower()
    if "zero-3" in t or "zero3" in t:
        return "zero3"
    # Qwen's finetune_lora_ds.sh passes --deepspeed finetune/ds_config_zero2.json ("stage": 2; QwenLM/Qwen
    # finetune/, read 2026-12-02), so rows run "per finetune_lora_ds.sh" ran ZeRO-2 whatever else they say.
    if "zero-2" in t or "zero2" in t or "finetune_lora_ds.sh" in t:
        return "zero2"
    if "ddp" in t:
        return "ddp"
    if "fsdp" in t or gpus > 1:
        return "fsdp"
    return "none"


def _memory_truth(row: dict) -> float | None:
    if row["peak_memory_gib"] is not None:
        return row["peak_memory_gib"]
    unit = row["memory_unit_reported"] or ""
    gb = row["peak_memory_gb"]
    if not gb or "approx" in unit:
        return None
    if unit.startswith("G (as printed)") or "probably GiB" in unit:
        return gb
    return gb * 1e9 / GIB  # "GB" and notebook "MB" figures (MB / 1000 = GB)


def to_case(row: dict, dataset: str = "") -> tuple[Case | None, str]:
    """Map one published row onto estimator inputs, or say why it cannot be expressed."""
    if row["kind"] != "measured":
        return None, f"kind={row['kind']}"
    method = {"rslora": "lora"}.get(row["method"], row["method"])
    if method not in ("lora", "qlora", "full", "dora"):
        return None, f"method {method} (not one ftplan plans)"
    if not row["seq_len"]:
        return None, "sequence length not stated"
    if "far below" in (row["seq_len_note"] or ""):
        return None, "sequence length is only an upper bound (padded to an unstated longest sample)"
    if not row["micro_batch_size"]:
        return None, "micro-batch not stated"
    if "may have used different flags" in (row["notes"] or ""):
        return None, "the source's configuration contradicts its table (flags unknown)"
    quant = str(row["quantization"]).lower()
    notes_all = " ".join(str(row[k] or "") for k in ("notes", "seq_len_note", "optimizer", "framework")).lower()
    if "gptq" in quant or row["model"].endswith("-Int4"):
        return None, "GPTQ int4 LoRA (auto-gptq kernels): ftplan plans bitsandbytes NF4 QLoRA only"
    try:
        src = resolve_model(_model_id(row["model"]))
    except FtplanError:
        return None, f"model {row['model']} not a catalog decoder"
    if src.arch.family in ("t5",):
        return None, "encoder-decoder model"
    fw = (row["framework"] or "").lower()
    source_note = json.dumps(row["source"]).lower()
    row_notes = (row["notes"] or "").lower()
    gpus = row["num_gpus"] or 1
    if fw.startswith("lit-gpt") and gpus > 1:
        return None, "lit-gpt 2023 multi-GPU: peak ~ single-GPU peak (model materialised unsharded per rank)"
    if method == "full" and "num_gpus taken from the yaml" in row_notes:
        return None, "LitGPT full fine-tune: GPU count is the data set's assumption"
    opt_text = (row["optimizer"] or "").lower()
    if "8bit" in opt_text:
        optimizer = "paged_adamw_8bit" if "paged" in opt_text else "adamw_8bit"
    elif "paged" in opt_text and (method == "qlora" or "when quantized" not in opt_text):
        optimizer = "paged_adamw_32bit"
    elif method == "qlora" and "unsloth" in fw:
        optimizer = "adamw_8bit"
    else:
        optimizer = "adamw"
    precision = str(row["precision"] or "bf16").lower()
    if precision.startswith("fp32"):
        precision = "fp32"
    else:
        precision = "mixed" if "mixed" in precision or "bits 32" in precision else "bf16"
    fa = row["flash_attention"]
    attention = "flash" if fa is True or "unsloth" in str(fa).lower() else "eager" if fa is False else "sdpa"
    dist_text = (row["distributed"] or "").lower()
    distributed = _distributed(dist_text, gpus)
    nodes = 2 if "2 nodes" in dist_text else 0
    # LitGPT, torchtune and Unsloth keep adapters in the model's bf16. So does Answer.AI's train.py: FSDP's
    # flat parameters take one dtype per wrapped unit, and its "bf16" precision casts the model to bf16.
    native_bf16 = any(k in fw for k in ("litgpt", "lit-gpt", "torchtune", "unsloth", "fsdp_qlora train.py"))
    native_bf16 = native_bf16 or _trl_casts_to_bf16(fw, method)
    # torchtune's Llama 3.1 configs (Sep 2024) use CEWithChunkedOutputLoss; Unsloth uses Cut Cross Entropy.
    chunked = any(k in fw for k in ("litgpt", "lit-gpt", "sep 2024"))
    chunked = chunked or "chunked ce" in notes_all or "cewithchunked" in notes_all
    loss = "fused" if "unsloth" in fw else "liger" if "liger" in fw else "chunked" if chunked else "standard"
    in_bwd = ("optimizer_in_bwd=true" in notes_all.replace(" ", "") or "into backward" in notes_all
              or "fused optimizer" in notes_all)
    trainer = _trainer(fw, notes_all + str(fa).lower())
    offload = "offload" in dist_text and "no offload" not in dist_text and "removed" not in dist_text
    setup = TrainingSetup(
        adapter=method,
        lora_rank=row["lora_rank"] or 8,
        lora_alpha=row["lora_alpha"] or 16,
        lora_targets=_targets(row["lora_targets"]),
        seq_len=int(row["seq_len"]),
        micro_batch_size=int(row["micro_batch_size"]),
        grad_accum=int(row["grad_accum"] or 1),
        gradient_checkpointing=bool(row["gradient_checkpointing"]),
        optimizer=optimizer,
        precision=precision,
        attention=attention,
        gpus=gpus,
        nodes=nodes,
        distributed=distributed if gpus > 1 or distributed in ("zero2", "zero3") else "none",
        # the data set's cpu_offload flag also marks torchtune's *activation* offloading rows
        cpu_offload=(bool(row["cpu_offload"]) and "activation offload" not in notes_all) or offload,
        loss=loss,
        trainer=trainer,
        adapter_dtype="bf16" if native_bf16 else "fp32",
        optimizer_in_backward=in_bwd,
        activation_offload="activation offloading" in notes_all or "activation cpu offload" in dist_text
        or "unsloth" in fw,
        double_quant="double quant" in quant or "nf4-dq" in quant or "unsloth" in fw,
        lora_dropout=_lora_dropout(fw, source_note),
        fused_kernels=trainer in ("compiled", "unsloth") or "liger" in fw,  # Liger's RMSNorm/SwiGLU/RoPE kernels
        kbit_upcast=method == "qlora" and _kbit_prepared(fw, gpus) and not _trl_casts_to_bf16(fw, method),
        # LitGPT's GPT class never ties lm_head to wte, and Fabric's BitsandbytesPrecision converts every
        # nn.Linear (litgpt/model.py, scripts/convert_hf_checkpoint.py copies wte into lm_head).
        untie_embeddings="litgpt" in fw or "lit-gpt" in fw,
        quantize_lm_head="litgpt" in fw or "lit-gpt" in fw,
        quant_saves_inputs=method == "qlora" and _bnb_saves_inputs(fw, source_note),
        train_embeddings="lora (emb)" in row_notes or "modules_to_save" in (row["lora_targets"] or ""),
    )
    if trainer == "trl":  # HF Trainer / accelerate: FSDP full fine-tuning keeps fp32 master weights
        setup = accelerate_fsdp_upcast(setup)
    speed_setup = setup
    if row["dataset_tokens"] and row["steps"] and not row["packing"]:
        per_micro = row["dataset_tokens"] * (row["epochs"] or 1) / (row["steps"] * setup.grad_accum * gpus)
        if per_micro < setup.tokens_per_micro_batch:
            speed_setup = replace(setup, seq_len=max(1, round(per_micro / setup.micro_batch_size)))
    gpu, capacity = _gpu(row["gpu"])
    metric_text = (row["memory_metric"] or "").lower()
    if "allocated" in metric_text or "active" in metric_text or "torchtune peak memory" in metric_text:
        metric = "allocated"
    elif "reserved" in metric_text or "torchtune memory" in metric_text:
        metric = "reserved"
    else:
        metric = "device"
    truth = _memory_truth(row)
    if row["outcome"] == "max_context_fits":
        truth, metric = capacity, "device"
    return Case(row, dataset, source_of(row), src.model_id, setup, speed_setup, gpu, capacity, metric, truth,
                _training_tokens_per_second(row)), ""


def _training_tokens_per_second(row: dict) -> float | None:
    """Tokens per second while training steps ran.

    PEFT's MetaMathQA rows derive "train total tokens / train_time", but run.py's train_time is
    `toc_train - tic_train - eval_time` with only the periodic validation subtracted: it still spans the
    wiki-loss passes before and after training and the whole test-set generation
    (huggingface/peft method_comparison/MetaMathQA/run.py, read 2026-12-02). The logged per-interval
    "tokens / sec" is `token_sum / dur_train` over the timed training steps alone; where the row
    records its mean, that is the speed a planner predicts.
    """
    match = re.search(r"per-interval 'tokens / sec' = (\d+(?:\.\d+)?)", row.get("throughput_note") or "")
    return float(match.group(1)) if match else row["throughput_tokens_per_s"]


def load_cases(files: dict[str, Path] | None = None) -> tuple[list[Case], dict[str, int]]:
    """Every expressible row of the published sets, and how many rows were left out for each reason."""
    cases, skipped = [], {}
    for dataset, path in (files or DATA_FILES).items():
        for row in json.loads(path.read_text()):
            case, why = to_case(row, dataset)
            if case is None:
                skipped[why] = skipped.get(why, 0) + 1
            else:
                cases.append(case)
    return cases, skipped
