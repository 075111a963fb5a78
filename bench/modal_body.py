"""Run the Modal function body on this machine's GPU and record peak memory and tokens/s beside the plan.

    python bench/modal_body.py --model llama-3.1-8b [--adapter lora|qlora|full] [--seq-len 2048]
                               [--batch-size 1] [--steps 30] [--out bench/results]

The model is a real architecture from the planner's catalog with random weights (memory and speed
do not depend on the values); the tokenizer is trained on the spot; the data are synthetic chats
that fill --seq-len. The body is `providers.modal_app.run_training`, exactly what a Modal container
runs, with this machine's folders in place of the Volumes. It prints, and writes as JSON with the
command that produced it: measured peak memory (torch.cuda.max_memory_allocated) and median tokens/s
after warm-up, next to `ftplan estimate` for the same setup on this GPU. Needs a CUDA GPU
(`--allow-cpu` runs the same path on the CPU with a 2-layer model, as a smoke test).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml


def build_model(model_id: str, folder: Path, tiny: bool) -> Path:
    """The catalog architecture with random weights (bf16) and a small tokenizer, saved as an HF folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ftplan.recipes.tiny import build_tiny_model
    from ftplan.sizing.catalog import catalog_entries, resolve_model

    if tiny:
        return build_tiny_model(folder)
    import shutil

    small = build_tiny_model(folder.parent / "tokenizer-source")  # only its tokenizer files are used
    folder.mkdir(parents=True, exist_ok=True)
    for f in small.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy2(f, folder / f.name)
    wanted = resolve_model(model_id).model_id
    cfg = dict(next(e["config"] for e in catalog_entries() if e["id"] == wanted))
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    return folder


def synthetic_chats(path: Path, seq_len: int, n: int) -> Path:
    words = "the quick brown fox jumps over the lazy dog answer question two plus four".split()
    per_turn = max(8, seq_len // 2)  # about one token a word with the on-the-spot tokenizer
    with path.open("w") as fh:
        for i in range(n):
            text = " ".join(words[(i + k) % len(words)] for k in range(per_turn))
            fh.write(json.dumps({"messages": [{"role": "user", "content": text},
                                              {"role": "assistant", "content": text}]}) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--adapter", default="lora", choices=("lora", "qlora", "full"))
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--gpu", default=None, help="ftplan's name of this GPU [default: from nvidia-smi]")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--allow-cpu", action="store_true", help="smoke-test the path on the CPU with a 2-layer model")
    args = ap.parse_args(argv)
    import torch

    from ftplan.providers import modal_app
    from ftplan.sizing.estimate import estimate

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("no CUDA GPU here: this bench measures a GPU (use --allow-cpu for a smoke test)", file=sys.stderr)
        return 2
    gpu = args.gpu
    if gpu is None and cuda:
        from ftplan.launcher.localgpu import gpu_from_smi_name

        gpu = gpu_from_smi_name(torch.cuda.get_device_name(0)).name
    root = Path(tempfile.mkdtemp(prefix="ftplan-modal-body-"))
    model = build_model(args.model, root / "data" / "model", tiny=not cuda)
    data = synthetic_chats(root / "data" / "chats.jsonl", args.seq_len, max(64, args.steps * args.batch_size * 2))
    recipe = {"name": "modal-body-bench", "model": "/data/model", "data": {"path": "/data/chats.jsonl"},
              "method": {"objective": "sft", "adapter": args.adapter, "lora": {"rank": 16, "dropout": 0.05}},
              "hyperparameters": {"max_steps": args.steps, "batch_size": args.batch_size, "gradient_accumulation": 1,
                                  "max_seq_length": args.seq_len, "packing": True, "logging_steps": 1,
                                  "precision": "bf16" if cuda else "fp32"},
              "checkpoint": {"every_steps": None, "every_minutes": None}}
    job = {"id": "bench", "recipe_yaml": yaml.safe_dump(recipe), "usd_per_hour": 0.0, "segment_seconds": 10**6,
           "resume_dirs": [], "skip_eval": True, "golden_sha256": None, "hub_model": None}
    began = time.time()
    modal_app.run_training(job, None, 1, str(root))
    events = [json.loads(x) for x in (root / "outputs" / "bench" / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["type"] == "step"]
    warm = steps[len(steps) // 3:] or steps
    measured = {"tokens_per_second": statistics.median(e["tokens_per_second"] for e in warm if e["tokens_per_second"]),
                "peak_memory_gib": max(e["peak_memory_bytes"] for e in steps) / 2**30,
                "memory_metric": steps[-1]["memory_metric"], "steps": len(steps),
                "wall_seconds": round(time.time() - began, 1)}
    result = {"command": "python bench/modal_body.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
              "model": args.model, "adapter": args.adapter, "seq_len": args.seq_len, "batch_size": args.batch_size,
              "gpu": gpu, "device": torch.cuda.get_device_name(0) if cuda else "cpu", "measured": measured,
              "data": str(data), "model_folder": str(model)}
    if cuda:
        from ftplan.sizing.setup import TrainingSetup

        est = estimate(args.model, setup=TrainingSetup(adapter=args.adapter, seq_len=args.seq_len,
                                                        micro_batch_size=args.batch_size), gpu=gpu).to_dict()
        result["planned"] = {"tokens_per_second": est["throughput"]["tokens_per_second"],
                             "allocated_gib": est["memory"]["allocated_bytes"] / 2**30,
                             "per_gpu_gib": est["memory"]["per_gpu_bytes"] / 2**30}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"modal_body-{args.model.replace('/', '_')}-{args.adapter}-{args.seq_len}-{gpu or 'cpu'}.json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
