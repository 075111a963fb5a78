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
import os
import platform
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ftplan.sizing.errors import FtplanError

from .checkpoints import checkpoints, last_complete, pick_resumable
from .events import EventWriter, NullWriter
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
class ProgramOptions:
    """What the launcher asks of this run beyond the recipe (the command line's flags)."""

    plan: dict | None = None
    usd_per_hour: float = 0.0  # what this machine costs, for the actuals and the cost events
    resume: bool = False  # continue from this job's own newest checkpoint (a retried attempt)
    resume_dirs: list[str] = field(default_factory=list)  # earlier jobs' checkpoints (`ftplan run --resume`)
    skip_eval: bool = False
    golden_sha256: str | None = None  # the golden set frozen when `ftplan run` started
    stop_file: str | None = None  # a cancel request: checkpoint and stop once this file exists
    max_seconds: float | None = None  # a segment's budget: checkpoint and hand over after this long


def is_main_process() -> bool:
    """Only global rank 0 writes events and the manifest (accelerate/torchrun set RANK on every process)."""
    return int(os.environ.get("RANK", "0")) == 0


def run(recipe_path: str, output: str | None, events_path: str | None, opts: ProgramOptions | None = None,
        writer: EventWriter | None = None) -> int:
    started = time.monotonic()
    opts = opts or ProgramOptions()
    recipe = load_recipe(recipe_path)
    out = Path(output or recipe.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = writer or (EventWriter(events_path or out / "events.jsonl") if is_main_process() else NullWriter())
    fmt = stats = None
    if recipe.method.objective != "merge":
        from . import preflight
        from .data import check_data, check_eval_data

        preflight.check(recipe)
        fmt, stats = check_data(recipe)  # every line, before any heavy import
    from .tracking import environment, missing_message, missing_packages

    missing = missing_packages(recipe)
    if missing:
        raise FtplanError(missing_message(recipe, missing))
    for key, value in environment(recipe, out).items():
        os.environ.setdefault(key, value)
        check_eval_data(recipe, fmt)
    if recipe.eval.golden and not opts.skip_eval:
        from .golden import file_sha256, load_golden

        load_golden(recipe.eval.golden, opts.golden_sha256)  # malformed or changed: refused before training
        opts.golden_sha256 = opts.golden_sha256 or file_sha256(recipe.eval.golden)

    from .callbacks import StopFlag

    stop = StopFlag()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.request(signal.Signals(signum).name))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _train(recipe, out, writer, fmt, stats, stop, started, opts)
    finally:
        for sig, handler in previous.items():  # a library call must not leave its handlers behind
            signal.signal(sig, handler)


def _train(recipe: Recipe, out: Path, writer: EventWriter, fmt, stats, stop, started: float,
           opts: ProgramOptions) -> int:
    import torch

    from .backend import load_model, load_tokenizer, select_backend, unsloth_installed
    from .callbacks import EventCallback, peak_memory

    main = is_main_process()
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
        write_manifest(out, recipe, opts.plan, actuals, {"name": "peft", "reason": "add_weighted_adapter"})
        writer.emit("finished", status="completed", output=str(target), **actuals)
        return 0

    backend = select_backend(recipe.method.adapter, recipe.method.objective, cuda=cuda,
                             unsloth_installed=unsloth_installed(), gpus=max(gpus, 1),
                             lora_dropout=recipe.method.lora.dropout)
    ckpt_root = out / "checkpoints"
    resume_from = None
    if opts.resume or opts.resume_dirs:
        resume_from = resume_point(ckpt_root, opts.resume_dirs, writer)
    writer.emit("started", recipe=recipe.name, objective=recipe.method.objective, adapter=recipe.method.adapter,
                backend=backend.name, backend_reason=backend.reason, device="cuda" if cuda else "cpu", gpus=gpus,
                examples=stats.examples, data_format=fmt.key, recipe_hash=recipe.digest(),
                resumed_from=str(resume_from) if resume_from else None)
    tokenizer, notes = load_tokenizer(recipe.model)
    for note in notes:
        writer.emit("log", level="info", message=note)
    from .data import load_training_data
    from .loss_mask import choose

    mask = choose(recipe, fmt.key, getattr(tokenizer, "chat_template", None))
    writer.emit("log", level="info", kind="loss_mask", mode=mask.mode, message=mask.reason)
    train_ds, eval_ds = load_training_data(recipe, fmt, prepare=_row_preparer(recipe, fmt.key, tokenizer, mask))
    if recipe.method.objective == "distillation" and recipe.method.generate_with_teacher:
        from .distill import generate_with_teacher

        train_ds = generate_with_teacher(recipe, train_ds, fmt.key, writer.emit)
    model, peft_cfg = load_model(recipe, backend, cuda)
    if getattr(model, "ftplan_patch_summary", None):
        writer.emit("log", level="info", kind="backend", message=model.ftplan_patch_summary)
    from .trainers import build_trainer

    callback = EventCallback(writer, stop, recipe.checkpoint.every_minutes, opts.usd_per_hour,
                             stop_file=opts.stop_file, max_seconds=opts.max_seconds)
    trainer = build_trainer(recipe, model, tokenizer, peft_cfg, train_ds, eval_ds, str(ckpt_root), cuda, [callback],
                            mask=mask)
    from .loss_mask import CountingCollator

    counter = trainer.data_collator = CountingCollator(trainer.data_collator)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = time.monotonic() - started
    mem, metric = peak_memory()
    tps = callback.tokens_per_second
    actuals = {
        "steps": trainer.state.global_step, "total_steps": trainer.state.max_steps,
        "train_loss": getattr(result, "training_loss", None), "final_loss": callback.last_loss,
        "peak_memory_bytes": mem, "memory_metric": metric,
        "tokens_per_second": round(sum(tps) / len(tps), 1) if tps else None,
        "tokens_seen": trainer.state.num_input_tokens_seen, "loss_tokens": counter.loss_tokens,
        "batch_tokens": counter.tokens, "loss_mask": mask.mode, "wall_seconds": round(wall, 2),
        "usd": round(opts.usd_per_hour * wall / 3600, 4),
    }
    if stop.requested and stop.reason == "segment":
        # Not the job's end: the caller (Modal's body) starts the next segment from this checkpoint.
        writer.emit("log", level="info", kind="segment_end", step=trainer.state.global_step,
                    checkpoint=str(last_complete(ckpt_root)), message=f"segment ended after {wall / 3600:,.2f} h at "
                    f"step {trainer.state.global_step}; the next one resumes from its checkpoint")
        return 0
    if stop.requested:
        writer.emit("finished", status="cancelled", reason=stop.reason, checkpoint=str(last_complete(ckpt_root)),
                    **actuals)
        if main:
            write_manifest(out, recipe, opts.plan, {**actuals, "status": "cancelled"}, backend.__dict__)
        return 0
    target = out / ("model" if recipe.method.adapter == "full" else "adapter")
    trainer.save_model(str(target))
    if main:
        tokenizer.save_pretrained(str(target))
    status = "completed"
    if recipe.eval.golden and opts.skip_eval:
        actuals["eval"] = {"skipped": True}
        writer.emit("log", level="warning", message="eval gate skipped (--skip-eval): recorded in the manifest")
    elif recipe.eval.golden and main:
        actuals["eval"] = run_gate(recipe, target, opts.golden_sha256, writer)
        if not actuals["eval"]["passed"]:
            status = "blocked"  # kept on disk, never merged, pushed or promoted
    if status == "completed" and recipe.output.merge and recipe.method.adapter != "full" and main:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        tokenizer.save_pretrained(str(out / "merged"))
    if status == "completed" and recipe.output.push_to_hub and main:
        actuals["pushed_to"] = push_to_hub(target, recipe.output.push_to_hub, writer)
    if main:
        write_manifest(out, recipe, opts.plan, {**actuals, "status": status}, backend.__dict__)
    writer.emit("finished", status=status, output=str(target), **actuals)
    return 0


def _row_preparer(recipe: Recipe, fmt_key: str, tokenizer, mask):
    """Conversations for SFT-like objectives are tokenized here with their loss mask; other rows go to TRL as read."""
    if fmt_key != "messages" or mask.mode not in ("all", "assistant_markers", "assistant_rendered"):
        return None
    from ftplan.sizing.errors import DataError

    from .loss_mask import NotPrefixPreserving, tokenize_conversation

    def prepare(rows: list[dict]) -> list[dict]:
        out = []
        for n, row in enumerate(rows, start=1):
            try:
                out.append(tokenize_conversation(tokenizer, row["messages"], mask,
                                                 recipe.hyperparameters.max_seq_length))
            except NotPrefixPreserving as exc:
                raise DataError(f"record {n}: the chat template of {recipe.model} cannot show where the assistant "
                                f"turns are ({exc}); set method.train_on_inputs: true, or give a template with "
                                "{% generation %} markers.") from None
        return out

    return prepare


def resume_point(own: Path, earlier: list[str], writer: EventWriter) -> Path | None:
    """The newest checkpoint that loads, here or in earlier jobs' folders this one continues; say what it skipped."""
    partial = [str(f) for root in (own, *earlier) for _, f, done in checkpoints(root) if not done]
    if partial:
        writer.emit("log", level="warning", message=f"skipping incomplete checkpoint(s): {', '.join(partial)}")
    chosen, skipped = pick_resumable([own, *earlier])
    for folder, why in skipped:
        writer.emit("log", level="warning", message=f"checkpoint {folder} cannot be loaded ({why}); skipped")
    if chosen is None and earlier:
        raise FtplanError(f"no checkpoint in {', '.join(earlier)} can be loaded" +
                          (f" ({skipped[0][1]})" if skipped else "") + "; run the recipe without --resume.")
    if chosen is not None:
        writer.emit("log", level="info" if not skipped else "warning",
                    message=f"resuming from {chosen}" + (" (the newest checkpoint that loads)" if skipped else ""))
    return chosen


def run_gate(recipe: Recipe, target: Path, golden_sha256: str | None, writer: EventWriter) -> dict:
    """The eval gate on the freshly saved adapter; its result goes into the events and the manifest."""
    from .evalgate import evaluate

    result = evaluate(recipe.model, target, recipe.eval.golden, thresholds=recipe.eval.thresholds,
                      expected_sha256=golden_sha256, judge_cfg=recipe.eval.judge).to_dict()
    writer.emit("eval", gate="passed" if result["passed"] else "blocked", reasons=result["reasons"],
                categories=result["categories"], golden=str(result["golden"]), golden_sha256=result["golden_sha256"])
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
    ap.add_argument("--resume-from", action="append", default=[], metavar="DIR",
                    help="also look for checkpoints in DIR (an earlier job's checkpoints folder); repeatable")
    ap.add_argument("--plan", help="JSON file with the plan to record in the manifest")
    ap.add_argument("--usd-per-hour", type=float, default=0.0, help="what this machine costs, for the actuals")
    ap.add_argument("--skip-eval", action="store_true", help="do not run the eval gate (recorded)")
    ap.add_argument("--golden-sha256", help="the golden set's hash when the run started (refuse it if changed)")
    ap.add_argument("--stop-file", help="checkpoint and stop once this file exists (a cancel request)")
    ap.add_argument("--max-seconds", type=float, help="checkpoint and end this segment after this many seconds")
    args = ap.parse_args(argv)
    opts = ProgramOptions(plan=json.loads(Path(args.plan).read_text()) if args.plan else None,
                          usd_per_hour=args.usd_per_hour, resume=args.resume, resume_dirs=args.resume_from,
                          skip_eval=args.skip_eval, golden_sha256=args.golden_sha256, stop_file=args.stop_file,
                          max_seconds=args.max_seconds)
    writer = None
    try:
        if not is_main_process():
            writer = NullWriter()
        elif args.events or args.output:
            writer = EventWriter(args.events or Path(args.output) / "events.jsonl")
        else:  # the recipe names the output folder; a recipe that does not load gets no events file
            writer = EventWriter(Path(load_recipe(args.recipe).output.dir) / "events.jsonl")
        return run(args.recipe, args.output, args.events, opts, writer)
    except FtplanError as exc:
        if writer:
            writer.emit("failed", error=str(exc), kind="input", stage="before training")
        print(f"ftplan: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a crash mid-training: record it, keep checkpoints, exit 1
        from .checkpoints import write_failure

        out = Path(args.output) if args.output else _output_dir(args.recipe)
        full = write_failure(exc, out / "checkpoints") if out else None
        try:
            if writer and full:
                writer.emit("failed", error=full, kind="disk_full")
            elif writer:
                writer.emit("failed", error=f"{type(exc).__name__}: {exc}", kind="crash",
                            traceback=traceback.format_exc()[-4000:])
        except OSError:  # the disk that filled may refuse the event too: stderr still says it
            pass
        if full:
            print(f"ftplan: error: {full}", file=sys.stderr)
        else:
            traceback.print_exc()
        return 1


def _output_dir(recipe_path: str) -> Path | None:
    try:
        return Path(load_recipe(recipe_path).output.dir)
    except FtplanError:
        return None


if __name__ == "__main__":
    sys.exit(main())
