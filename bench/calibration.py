"""Accuracy of the planner against published measurements.

    python bench/calibration.py [--rows] [--data PATH]

Runs the estimator on every row of ../shared/calibration/published-measurements.json it can
express and prints n, median and p90 absolute % error for peak memory and for throughput, and
how many OOM rows it flags as not fitting. Rows it cannot express are counted with the reason.

How rows are read (what each source measured, per its notes):
- memory metric: `max_memory_allocated` / "Peak Memory Active" / torchtune peak memory ->
  compared with the estimate's `allocated`; "reserved" -> allocated + allocator slack;
  nvidia-smi, "memory MB" of notebooks, unspecified -> `per_gpu` (adds the CUDA context).
  Values are compared in bytes using the row's GiB figure (the data set converted GB/GiB).
- "max context that fits in V GB" rows: the estimate at that context should be about V.
- OOM rows: flagged when the estimate's `per_gpu` exceeds the card (or the stated budget).
- framework conventions: LitGPT, torchtune and Unsloth keep adapters in bf16 and never upcast
  the whole logits tensor to fp32 (chunked loss); HF Trainer + PEFT keeps adapters in fp32 and
  upcasts logits. Unsloth offloads checkpointed activations to CPU. Settings rows do not record
  (LoRA dropout, bitsandbytes generation, torch.compile, prepare_model_for_kbit_training,
  LitGPT's untied lm_head) are read from the framework and date; each helper below cites why.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from ftplan.sizing.catalog import resolve_model
from ftplan.sizing.errors import FtplanError
from ftplan.sizing.gpus import get_gpu
from ftplan.sizing.memory import estimate_memory
from ftplan.sizing.setup import TrainingSetup
from ftplan.sizing.throughput import estimate_throughput

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "published-measurements.json"
GIB = 2**30


@dataclass
class Case:
    row: dict
    model: str
    setup: TrainingSetup
    gpu: str | None
    capacity_gib: float | None
    metric: str  # allocated | reserved | device


def _model_id(name: str) -> str:
    """Instruct/chat variants share their base model's architecture."""
    name = re.sub(r"-Instruct$", "", name)
    return re.sub(r"-chat-hf$", "-hf", name)


def _gpu(text: str | None) -> tuple[str | None, float | None]:
    """Card name and the memory to compare against (a stated budget wins)."""
    if not text:
        return None, None
    budget = re.search(r"(\d+) GB (?:VRAM )?budget", text)
    t = text.lower()
    name = None
    for key, gpu in (("a10g", "A10G"), ("a100-sxm4-40gb", "A100-40GB"), ("a100 40gb", "A100-40GB"),
                     ("a100 80gb", "A100-80GB"), ("a100 (80", "A100-80GB"), ("rtx 4090", "RTX-4090"),
                     ("rtx a6000", "RTX-A6000"), ("h100", "H100"), ("3090/4090", "RTX-4090")):
        if key in t:
            name = gpu
            break
    if budget:
        return name, float(budget.group(1))
    if name is None:
        m = re.search(r"(\d+) ?GB GPU", text)
        return None, float(m.group(1)) if m else None
    return name, get_gpu(name).memory_gib


def _targets(text: str | None) -> str:
    t = (text or "").lower()
    if t.startswith("q,v,o"):
        return "q,v,o,gate,up,down"
    if t.startswith("q,v") or t.startswith("q_proj,v_proj"):
        return "q,v"
    if t.strip() == "q,k,v":
        return "q,k,v"
    return "all-linear"


def _lora_dropout(fw: str, source_note: str) -> float:
    """The LoRA dropout each framework's configs used (rows do not record it).

    LitGPT / lit-gpt configs: 0.05. torchtune: 0.05 until PR #1492 (2024-09-04) set 0.0.
    Unsloth (and the HF columns of Unsloth's own benchmarks): 0, Unsloth's recommended setting.
    PEFT's FSDP/DeepSpeed QLoRA docs (examples/sft scripts): 0.1. qlora.py guanaco scripts: 0.1 up to
    13B, 0.05 above. llama-recipes: 0.05. Otherwise PEFT's default, 0.
    """
    if "litgpt" in fw or "lit-gpt" in fw:
        return 0.05
    if "torchtune" in fw:
        return 0.0 if any(k in fw for k in ("sep 2024", "nov 2024")) else 0.05
    if "unsloth" in source_note:
        return 0.0
    if "examples/sft" in fw:
        return 0.1
    if "qlora.py" in fw or "llama-recipes" in fw:
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
    ran 0.41.1; the HF/PEFT rows from 2023 to spring 2024 predate 0.43.2. torchtune quantises with
    torchao's NF4 (saves no input); Unsloth runs its own LoRA kernels; Unsloth's 2025 HF columns ran
    a later bitsandbytes.
    """
    if "torchtune" in fw or fw.startswith("unsloth"):
        return False
    if "2025" in source_note:
        return False
    return True


def to_case(row: dict) -> tuple[Case | None, str]:
    """Map one published row onto estimator inputs, or say why it cannot be expressed."""
    if row["kind"] != "measured":
        return None, f"kind={row['kind']}"
    method = row["method"]
    if method not in ("lora", "qlora", "full"):
        return None, f"method {method}"
    if not row["seq_len"]:
        return None, "sequence length not stated"
    if "far below" in (row["seq_len_note"] or ""):
        return None, "sequence length is only an upper bound (padded to an unstated longest sample)"
    if not row["micro_batch_size"]:
        return None, "micro-batch not stated"
    try:
        src = resolve_model(row["model"])
    except FtplanError:
        try:
            src = resolve_model(_model_id(row["model"]))
        except FtplanError:
            return None, f"model {row['model']} not a catalog decoder"
    fw = (row["framework"] or "").lower()
    source_note = json.dumps(row["source"]).lower()
    row_notes = (row["notes"] or "").lower()
    if fw.startswith("lit-gpt") and (row["num_gpus"] or 1) > 1:
        return None, "lit-gpt 2023 multi-GPU: peak ~ single-GPU peak (model materialised unsharded per rank)"
    if method == "full" and "num_gpus taken from the yaml" in row_notes:
        return None, "LitGPT full fine-tune: GPU count is the data set's assumption"
    notes = " ".join(str(row[k] or "") for k in ("notes", "seq_len_note", "optimizer", "framework")).lower()
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
    gpus = row["num_gpus"] or 1
    distributed = "zero3" if "zero-3" in dist_text else "fsdp" if ("fsdp" in dist_text or gpus > 1) else "none"  # noqa: E501
    native_bf16 = any(k in fw for k in ("litgpt", "lit-gpt", "torchtune", "unsloth"))
    # torchtune's Llama 3.1 configs (Sep 2024) use CEWithChunkedOutputLoss; Unsloth uses Cut Cross Entropy.
    chunked = any(k in fw for k in ("litgpt", "lit-gpt", "sep 2024"))
    chunked = chunked or "chunked ce" in notes or "cewithchunked" in notes
    loss = "fused" if "unsloth" in fw else "chunked" if chunked else "standard"
    in_bwd = "optimizer_in_bwd=true" in notes.replace(" ", "") or "into backward" in notes or "fused optimizer" in notes
    quant = str(row["quantization"]).lower()
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
        distributed=distributed if gpus > 1 else "none",
        # the data set's cpu_offload flag also marks torchtune's *activation* offloading rows
        cpu_offload=(bool(row["cpu_offload"]) and "activation offload" not in notes)
        or ("offload" in dist_text and "no offload" not in dist_text),
        loss=loss,
        adapter_dtype="bf16" if native_bf16 else "fp32",
        optimizer_in_backward=in_bwd,
        activation_offload="activation offloading" in notes or "unsloth" in fw,
        double_quant="double quant" in quant or "nf4-dq" in quant or "unsloth" in fw,
        lora_dropout=_lora_dropout(fw, source_note),
        # LitGPT's GPT class never ties lm_head to wte, and Fabric's BitsandbytesPrecision converts every
        # nn.Linear (litgpt/model.py, scripts/convert_hf_checkpoint.py copies wte into lm_head).
        fused_kernels="compile" in notes + str(row["flash_attention"]).lower() or "unsloth" in fw,
        kbit_upcast=method == "qlora" and _kbit_prepared(fw, gpus),
        untie_embeddings="litgpt" in fw or "lit-gpt" in fw,
        quantize_lm_head="litgpt" in fw or "lit-gpt" in fw,
        quant_saves_inputs=method == "qlora" and _bnb_saves_inputs(fw, source_note),
    )
    gpu, capacity = _gpu(row["gpu"])
    metric_text = (row["memory_metric"] or "").lower()
    if "allocated" in metric_text or "active" in metric_text or "torchtune peak memory" in metric_text:
        metric = "allocated"
    elif "reserved" in metric_text or "torchtune memory" in metric_text:
        metric = "reserved"
    else:
        metric = "device"
    return Case(row, src.model_id, setup, gpu, capacity, metric), ""


def predicted_memory(case: Case, est) -> float:
    """The figure comparable with what the row's source measured."""
    if case.metric == "allocated":
        return est.allocated
    if case.metric == "reserved":
        return est.allocated + est.components["allocator_overhead"]
    return est.per_gpu


def run(data_path: Path, show_rows: bool = False) -> dict:
    rows = json.loads(data_path.read_text())
    mem_err, thr_err, skipped = [], [], {}
    oom_total, oom_flagged, lines = 0, 0, []
    for row in rows:
        case, why = to_case(row)
        if case is None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        src = resolve_model(case.model)
        est = estimate_memory(src.arch, case.setup)
        if row["outcome"] == "OOM":
            if case.capacity_gib is None:
                skipped["OOM row without a card size"] = skipped.get("OOM row without a card size", 0) + 1
                continue
            oom_total += 1
            flagged = est.per_gpu > case.capacity_gib * GIB
            oom_flagged += flagged
            lines.append(f"{row['id']} OOM    {case.model:40s} predicted {est.per_gpu / GIB:6.1f} GiB "
                         f"vs card {case.capacity_gib:5.1f}: {'flagged' if flagged else 'MISSED'}")
            continue
        truth = row["peak_memory_gib"]
        unit = (row["memory_unit_reported"] or "")
        if truth is None and row["peak_memory_gb"] and "approx" not in unit:
            # "GB (as printed; probably GiB)" is taken as GiB; notebook "MB" figures are MB/1000 = GB
            truth = row["peak_memory_gb"] if "probably GiB" in unit else row["peak_memory_gb"] * 1e9 / GIB
        if row["outcome"] == "max_context_fits":
            truth, case.metric = case.capacity_gib, "device"
        if truth:
            pred = predicted_memory(case, est) / GIB
            err = (pred - truth) / truth
            mem_err.append(abs(err))
            lines.append(f"{row['id']} memory {case.model:40s} {case.setup.adapter:5s} pred {pred:6.2f} "
                         f"true {truth:6.2f} GiB ({case.metric:9s}) err {err:+6.1%}")
        tput = row["throughput_tokens_per_s"]
        if tput and case.gpu:
            t = estimate_throughput(src.arch, case.setup, get_gpu(case.gpu))
            err = (t.tokens_per_second - tput) / tput
            thr_err.append(abs(err))
            lines.append(f"{row['id']} speed  {case.model:40s} {case.setup.adapter:5s} pred "
                         f"{t.tokens_per_second:7.0f} true {tput:7.0f} tok/s on {case.setup.gpus}x{case.gpu} "
                         f"err {err:+6.1%}")

    def stats(errs: list[float]) -> dict:
        if not errs:
            return {"n": 0}
        errs = sorted(errs)
        p90 = errs[min(len(errs) - 1, int(round(0.9 * (len(errs) - 1))))]
        return {"n": len(errs), "median_pct": round(100 * statistics.median(errs), 1), "p90_pct": round(100 * p90, 1)}

    result = {
        "memory": stats(mem_err),
        "throughput": stats(thr_err),
        "oom": {"rows": oom_total, "flagged": oom_flagged},
        "skipped": skipped,
    }
    if show_rows:
        print("\n".join(lines))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--rows", action="store_true", help="print every compared row")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = run(args.data, args.rows)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    m, t, o = res["memory"], res["throughput"], res["oom"]
    print(f"peak memory : n={m['n']}  median |err| {m.get('median_pct')} %  p90 {m.get('p90_pct')} %"
          "   (target <= 10 / 25)")
    print(f"throughput  : n={t['n']}  median |err| {t.get('median_pct')} %  p90 {t.get('p90_pct')} %"
          "   (target median <= 25)")
    print(f"OOM rows    : {o['flagged']} of {o['rows']} flagged as not fitting   (target: all)")
    print("not expressible: " + ", ".join(f"{k} ({v})" for k, v in sorted(res["skipped"].items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
