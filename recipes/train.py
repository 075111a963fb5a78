"""The one training program every provider runs: `python -m ftplan.recipes.train RECIPE --output DIR`.

Recipe and data are checked before torch is imported, so a broken recipe or data file costs a
second and exits 2 with its message. Then: backend (Unsloth or PEFT), model and data, the TRL
trainer, events all along, checkpoints that are marked complete, the adapter or full weights,
optional merged model, tokenizer and `manifest.json` (recipe, versions, data hash, plan,
actuals). `--resume` continues from the last complete checkpoint. A failure keeps every
checkpoint and writes a `failed` event with the error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ftplan.sizing.errors import FtplanError

from .checkpoints import checkpoints, last_complete
from .events import EventWriter
from .schema import Recipe, load_recipe

PACKAGES = ("ftplan", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "tokenizers",
            "unsloth")


def versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def file_hash(path: str | Path) -> str | None:
    path = Path(path)
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(out: Path, recipe: Recipe, plan: dict | None, actuals: dict, backend: dict) -> Path:
    manifest = {
        "recipe": recipe.model_dump(mode="json"),
        "recipe_hash": recipe.digest(),
        "versions": versions(),
        "data_sha256": file_hash(recipe.data.path) if recipe.data else None,
        "backend": backend,
        "plan": plan,
        "actuals": actuals,
        "written_at": time.time(),
    }
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, default=str))
    return path


@dataclass
class GateOptions:
    skip: bool = False
    golden_sha256: str | None = None  # frozen when `ftplan run` started


def run(recipe_path: str, output: str | None, events_path: str | None, resume: bool, plan: dict | None,
        usd_per_hour: float, writer: EventWriter | None = None, gate: GateOptions | None = None) -> int:
    started = time.monotonic()
    gate = gate or GateOptions()
    recipe = load_recipe(recipe_path)
    out = Path(output or recipe.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = writer or EventWriter(events_path or out / "events.jsonl")
    fmt = stats = None
    if recipe.method.objective != "merge":
        from .data import check_data

        fmt, stats = check_data(recipe)  # every line, before any heavy import
    if recipe.eval.golden and not gate.skip:
        from .golden import file_sha256, load_golden

        load_golden(recipe.eval.golden, gate.golden_sha256)  # malformed or changed: refused before training
        gate.golden_sha256 = gate.golden_sha256 or file_sha256(recipe.eval.golden)

    from .callbacks import StopFlag

    stop = StopFlag()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.request(signal.Signals(signum).name))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _train(recipe, out, writer, fmt, stats, stop, plan, usd_per_hour, resume, started, gate)
    finally:
        for sig, handler in previous.items():  # a library call must not leave its handlers behind
            signal.signal(sig, handler)


def _train(recipe: Recipe, out: Path, writer: EventWriter, fmt, stats, stop, plan: dict | None,
           usd_per_hour: float, resume: bool, started: float, gate: GateOptions) -> int:
    import torch

    from .backend import load_model, load_tokenizer, select_backend, unsloth_installed
    from .callbacks import EventCallback, peak_memory

    cuda = torch.cuda.is_available()
    gpus = torch.cuda.device_count() if cuda else 0
    if recipe.method.objective == "merge":
        from .merge import merge_adapters

        writer.emit("started", recipe=recipe.name, objective="merge", backend="peft", device="cpu",
                    recipe_hash=recipe.digest())
        target = merge_adapters(recipe, out)
        tok, _ = load_tokenizer(recipe.model)
        tok.save_pretrained(str(target))
        actuals = {"wall_seconds": round(time.monotonic() - started, 2), "usd": 0.0}
        write_manifest(out, recipe, plan, actuals, {"name": "peft", "reason": "add_weighted_adapter"})
        writer.emit("finished", status="completed", output=str(target), **actuals)
        return 0

    backend = select_backend(recipe.method.adapter, recipe.method.objective, cuda=cuda,
                             unsloth_installed=unsloth_installed(), gpus=max(gpus, 1))
    ckpt_root = out / "checkpoints"
    resume_from = None
    if resume:
        resume_from = last_complete(ckpt_root)
        partial = [str(f) for step, f, done in checkpoints(ckpt_root) if not done]
        if partial:
            writer.emit("log", level="warning", message=f"skipping incomplete checkpoint(s): {', '.join(partial)}")
    writer.emit("started", recipe=recipe.name, objective=recipe.method.objective, adapter=recipe.method.adapter,
                backend=backend.name, backend_reason=backend.reason, device="cuda" if cuda else "cpu", gpus=gpus,
                examples=stats.examples, data_format=fmt.key, recipe_hash=recipe.digest(),
                resumed_from=str(resume_from) if resume_from else None)
    tokenizer, notes = load_tokenizer(recipe.model)
    for note in notes:
        writer.emit("log", level="info", message=note)
    from .data import load_training_data

    train_ds, eval_ds = load_training_data(recipe, fmt)
    if recipe.method.objective == "distillation" and recipe.method.generate_with_teacher:
        from .distill import generate_with_teacher

        train_ds = generate_with_teacher(recipe, train_ds, fmt.key, writer.emit)
    model, peft_cfg = load_model(recipe, backend, cuda)
    from .trainers import build_trainer

    callback = EventCallback(writer, stop, recipe.checkpoint.every_minutes, usd_per_hour)
    trainer = build_trainer(recipe, model, tokenizer, peft_cfg, train_ds, eval_ds, str(ckpt_root), cuda, [callback])
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = time.monotonic() - started
    mem, metric = peak_memory()
    tps = callback.tokens_per_second
    actuals = {
        "steps": trainer.state.global_step, "total_steps": trainer.state.max_steps,
        "train_loss": getattr(result, "training_loss", None), "final_loss": callback.last_loss,
        "peak_memory_bytes": mem, "memory_metric": metric,
        "tokens_per_second": round(sum(tps) / len(tps), 1) if tps else None,
        "tokens_seen": trainer.state.num_input_tokens_seen, "wall_seconds": round(wall, 2),
        "usd": round(usd_per_hour * wall / 3600, 4),
    }
    if stop.requested:
        writer.emit("finished", status="cancelled", reason=stop.reason, checkpoint=str(last_complete(ckpt_root)),
                    **actuals)
        write_manifest(out, recipe, plan, {**actuals, "status": "cancelled"}, backend.__dict__)
        return 0
    target = out / ("model" if recipe.method.adapter == "full" else "adapter")
    trainer.save_model(str(target))
    tokenizer.save_pretrained(str(target))
    status = "completed"
    if recipe.eval.golden and gate.skip:
        actuals["eval"] = {"skipped": True}
        writer.emit("log", level="warning", message="eval gate skipped (--skip-eval): recorded in the manifest")
    elif recipe.eval.golden:
        actuals["eval"] = run_gate(recipe, target, gate.golden_sha256, writer)
        if not actuals["eval"]["passed"]:
            status = "blocked"  # kept on disk, never merged, pushed or promoted
    if status == "completed" and recipe.output.merge and recipe.method.adapter != "full":
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        tokenizer.save_pretrained(str(out / "merged"))
    if status == "completed" and recipe.output.push_to_hub:
        actuals["pushed_to"] = push_to_hub(target, recipe.output.push_to_hub, writer)
    write_manifest(out, recipe, plan, {**actuals, "status": status}, backend.__dict__)
    writer.emit("finished", status=status, output=str(target), **actuals)
    return 0


def run_gate(recipe: Recipe, target: Path, golden_sha256: str | None, writer: EventWriter) -> dict:
    """The eval gate on the freshly saved adapter; its result goes into the events and the manifest."""
    from .evalgate import evaluate

    result = evaluate(recipe.model, target, recipe.eval.golden, thresholds=recipe.eval.thresholds,
                      expected_sha256=golden_sha256, judge_cfg=recipe.eval.judge).to_dict()
    writer.emit("eval", gate="passed" if result["passed"] else "blocked", reasons=result["reasons"],
                categories=result["categories"], golden_sha256=result["golden_sha256"])
    return {k: v for k, v in result.items() if k != "items"} | {"failed_items": [
        i for i in result["items"] if i["base"] and not i["adapter"]][:20]}


def push_to_hub(folder: Path, repo_id: str, writer: EventWriter) -> str | None:
    """Upload the output folder; a failed upload is reported, never fatal: the files are safe locally."""
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, exist_ok=True, private=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    except Exception as exc:  # network, auth, permissions: all the same to the user
        writer.emit("log", level="error", message=f"push to {repo_id} failed ({type(exc).__name__}: {exc}); the "
                    f"output is in {folder}. Set HF_TOKEN and upload it with `huggingface-cli upload {repo_id} "
                    f"{folder}`.")
        return None
    writer.emit("log", level="info", message=f"pushed {folder} to https://huggingface.co/{repo_id}")
    return repo_id


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ftplan.recipes.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("--output", help="output folder (default: the recipe's output.dir)")
    ap.add_argument("--events", help="events file (default: OUTPUT/events.jsonl)")
    ap.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    ap.add_argument("--plan", help="JSON file with the plan to record in the manifest")
    ap.add_argument("--usd-per-hour", type=float, default=0.0, help="what this machine costs, for the actuals")
    ap.add_argument("--skip-eval", action="store_true", help="do not run the eval gate (recorded)")
    ap.add_argument("--golden-sha256", help="the golden set's hash when the run started (refuse it if changed)")
    args = ap.parse_args(argv)
    plan = json.loads(Path(args.plan).read_text()) if args.plan else None
    writer = None
    try:
        if args.events or args.output:
            writer = EventWriter(args.events or Path(args.output) / "events.jsonl")
        else:  # the recipe names the output folder; a recipe that does not load gets no events file
            writer = EventWriter(Path(load_recipe(args.recipe).output.dir) / "events.jsonl")
        return run(args.recipe, args.output, args.events, args.resume, plan, args.usd_per_hour, writer,
                   GateOptions(args.skip_eval, args.golden_sha256))
    except FtplanError as exc:
        if writer:
            writer.emit("failed", error=str(exc), kind="input", stage="before training")
        print(f"ftplan: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a crash mid-training: record it, keep checkpoints, exit 1
        if writer:
            writer.emit("failed", error=f"{type(exc).__name__}: {exc}", kind="crash",
                        traceback=traceback.format_exc()[-4000:])
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
