"""The `ftplan` command line: a thin layer over `ftplan.sizing`.

User errors (`FtplanError`) become one paragraph on stderr and exit code 2, here and only here.
`rich` is imported only when a table is printed, so `--json` answers fast.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import click

from ftplan.sizing.errors import FtplanError


def _fail(message: str) -> None:
    click.echo(f"ftplan: error: {message}", err=True)
    sys.exit(2)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FtplanError as exc:
            _fail(str(exc))


def _bool_flag(name: str, default: bool, help_text: str):
    return click.option(f"--{name}/--no-{name}", default=default, show_default=True, help=help_text)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ftplan")
def cli() -> None:
    """Plan LLM fine-tuning before a cent is spent: which method, which GPU, how long, how much."""


def _setup_options(f):
    """Flags shared by `estimate` and `compare`: the training configuration."""
    opts = [
        click.option("--model", "-m", help="Catalog id or alias (llama-3.1-8b) or a folder with config.json."),
        click.option("--params", help="Parameter count alone, e.g. 7B (a Llama shape is assumed)."),
        click.option("--adapter", default=None, help="lora | qlora | dora | full  [default: lora; with DATA the "
                     "planner picks LoRA, or QLoRA where LoRA does not fit]"),
        click.option("--lora-rank", "lora_rank", default=None, type=int, help="[default: 16; 8 under 1k examples]"),
        click.option("--lora-alpha", "lora_alpha", default=None, type=int, help="[default: 2 x rank]"),
        click.option("--lora-dropout", "lora_dropout", default=0.0, show_default=True, type=float,
                     help="LoRA dropout (recipes default to 0); above 0 each adapted linear keeps its own dropout "
                     "output and mask."),
        click.option("--lora-targets", "lora_targets", default="all-linear", show_default=True,
                     help="all-linear | attention | mlp | q,k,v,o,gate,up,down | the model's module names"),
        click.option("--seq-len", "seq_len", default=2048, show_default=True, type=int),
        click.option("--batch-size", "batch_size", default=1, show_default=True, type=int, help="Micro-batch per GPU."),
        click.option("--grad-accum", "grad_accum", default=1, show_default=True, type=int),
        _bool_flag("gradient-checkpointing", True, "Recompute activations in backward."),
        click.option("--optimizer", default="adamw", show_default=True,
                     help="adamw | adamw_8bit | paged_adamw_8bit | paged_adamw_32bit | sgd"),
        click.option("--precision", default="bf16", show_default=True, help="bf16 | fp16 | fp32 | mixed"),
        click.option("--attention", default="flash", show_default=True, help="flash | sdpa | eager"),
        click.option("--trainer", default=None, help="The program that runs the step: trl (TRL + PEFT, eager) | "
                     "unsloth | compiled (torch.compile'd, torchtune-like) | eager (native, no compile)  [default: "
                     "what ftplan's own program uses there: Unsloth on one GPU for LoRA/QLoRA, TRL + PEFT otherwise]"),
        click.option("--loss", default="standard", show_default=True,
                     help="standard (fp32 logits) | chunked | fused (Unsloth / Cut Cross Entropy) | liger (Liger's "
                     "fused linear cross-entropy); --trainer sets it unless given"),
        click.option("--gpu", default=None, help="GPU name (H100, A100-80GB, L4, RTX-4090, ...). Default H100; with "
                     "DATA: only search this GPU."),
        click.option("--gpus", default=None, type=int, help="GPUs in the job [default: 1; with DATA: search 1-8 "
                     "and multi-node]."),
        click.option("--distributed", default="none", show_default=True, help="none | ddp | fsdp | zero2 | zero3"),
        click.option("--cpu-offload", "cpu_offload", is_flag=True,
                     help="Offload weights/optimizer to CPU (FSDP/ZeRO)."),
        click.option("--optimizer-in-backward", "optimizer_in_backward", is_flag=True,
                     help="Step each parameter as its gradient arrives (no full gradient buffer)."),
        click.option("--activation-offload", "activation_offload", is_flag=True,
                     help="Keep saved activations in CPU memory (Unsloth / torchtune offloading)."),
        # Planning from data (ignored without DATA).
        click.option("--method", default=None, help="sft | dpo | simpo | orpo | kto | grpo | continued-pretraining | "
                     "distillation  [default: from the data format]"),
        click.option("--epochs", type=int, default=None, help="[default: 1-3 by data size]"),
        click.option("--verifier", default=None, help="GRPO reward function or verifier (module:function)."),
        click.option("--teacher", default=None, help="Distillation teacher model (adds its forward pass)."),
        click.option("--precompute-ref", "precompute_ref", is_flag=True,
                     help="DPO/KTO: reference log-probs computed once up front (TRL precompute_ref_log_probs)."),
        click.option("--tokenizer", default=None, help="tokenizer.json (or its folder) for exact token counts."),
        click.option("--count-all", "count_all", is_flag=True,
                     help="Tokenize every sequence (default: the first 50k, then 1 in 20, the rest fitted)."),
        click.option("--packing/--no-packing", default=None,
                     help="Pack sequences (TRL's padding-free packing) or not  [default: the planner decides: packed "
                     "where the data is short]"),
        click.option("--split", default="train", show_default=True, help="Split of a Hub dataset id."),
        click.option("--group-size", "group_size", default=8, show_default=True, type=int,
                     help="GRPO completions per prompt."),
        click.option("--completion-len", "completion_len", default=256, show_default=True, type=int,
                     help="GRPO generated tokens per completion."),
        click.option("--provider", "providers", multiple=True,
                     help="Only these providers (repeatable): modal, lambda, runpod, runpod-community, aws, together; "
                     "openai adds OpenAI's own models as alternatives."),
        click.option("--local", "local", default=None, help="Your box, e.g. RTX-4090:2 [default: nvidia-smi]."),
        click.option("--electricity", type=float, default=None, help="USD per kWh for the local box."),
        click.option("--card-price", "card_price", type=float, default=None,
                     help="USD per local card, to amortise (and for break-even)."),
        click.option("--card-hours", "card_hours", type=float, default=None, help="Lifetime hours of a card."),
        click.option("--prices", "prices_file", default=None, help="TOML file of price rows (see `ftplan prices`)."),
        click.option("--region", default="none", show_default=True, help="Modal region pricing: none | broad | narrow"),
        click.option("--max-cost", "max_cost", type=float, default=None, help="Drop plans above this many USD."),
        click.option("--max-hours", "max_hours", type=float, default=None, help="Drop plans longer than this."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


# CLI option -> the setup field it pins when given on the command line (the planner searches the others).
PINNABLE = {"batch_size": "micro_batch_size", "grad_accum": "grad_accum", "gradient_checkpointing":
            "gradient_checkpointing", "distributed": "distributed", "trainer": "trainer", "loss": "loss",
            "optimizer": "optimizer", "activation_offload": "activation_offload", "packing": "packing"}


def _pinned() -> frozenset[str]:
    """Setup fields the user set on the command line (click knows a default from a typed value)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return frozenset(field for opt, field in PINNABLE.items()
                     if ctx.get_parameter_source(opt) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT))


def _training_setup(o: dict, *, single: bool = False):
    """The setup the flags describe. `single` (estimate without data): the trainer ftplan would run it with."""
    from ftplan.sizing.setup import TRAINERS, TrainingSetup
    from ftplan.sizing.trainers import apply_trainer, default_trainer

    trainer = (o.get("trainer") or "").lower() or None
    if trainer and trainer not in TRAINERS:
        raise FtplanError(f"--trainer {trainer!r} is not one of: {', '.join(TRAINERS)}.")
    rank = 16 if o["lora_rank"] is None else o["lora_rank"]
    setup = TrainingSetup(
        adapter=(o["adapter"] or "lora").lower(), lora_rank=rank,
        lora_alpha=2 * rank if o["lora_alpha"] is None else o["lora_alpha"],
        lora_targets=o["lora_targets"], lora_dropout=o["lora_dropout"], seq_len=o["seq_len"],
        micro_batch_size=o["batch_size"],
        grad_accum=o["grad_accum"], gradient_checkpointing=o["gradient_checkpointing"],
        optimizer=o["optimizer"].lower(), precision=o["precision"].lower(), attention=o["attention"].lower(),
        gpus=o["gpus"] or 1, distributed=o["distributed"].lower(), cpu_offload=o["cpu_offload"],
        loss=o["loss"].lower(), optimizer_in_backward=o["optimizer_in_backward"],
        activation_offload=o["activation_offload"],
    ).validate()
    if trainer or single:
        setup = apply_trainer(setup, trainer or default_trainer(setup), keep=_pinned() - {"trainer"})
    return setup


def _check_counts(o: dict, top: int | None = None) -> None:
    """Whole-number options that have no meaning at zero or below: an error, never a silent default."""
    if o.get("gpus") is not None and o["gpus"] < 1:
        raise FtplanError(f"--gpus {o['gpus']} is impossible: a job runs on 1 GPU or more (leave it out to let the "
                          "planner search 1-8 and multi-node).")
    if top is not None and top < 1:
        raise FtplanError(f"--top {top} is impossible: give how many plans to list, 1 or more.")
    if o.get("tokens") is not None and o["tokens"] < 1:
        raise FtplanError(f"--tokens {o['tokens']} is impossible: give the number of training tokens (> 0).")


def _speed_corrections() -> dict:
    """Measured/predicted speed per GPU from the user's finished runs (never opens the job store)."""
    from ftplan.launcher.speedlog import corrections

    found, problem = corrections()
    if problem:
        click.echo(f"ftplan: note: {problem}", err=True)
    return found


def _plan(data: str, o: dict):
    """Run the data -> plan pipeline with the CLI's options."""
    from ftplan.launcher.localgpu import local_box
    from ftplan.sizing.gpus import get_gpu
    from ftplan.sizing.planner import plan_for_data
    from ftplan.sizing.prices import load_prices

    _check_counts(o)
    if not o["model"]:
        raise FtplanError("give --model with a data file (e.g. --model llama-3.1-8b, or a folder with config.json).")
    for name in ("group_size", "completion_len"):
        if o[name] < 1:
            raise FtplanError(f"--{name.replace('_', '-')} {o[name]} is impossible: give a positive number.")
    if o["region"] not in ("none", "broad", "narrow"):
        raise FtplanError(f"--region {o['region']!r}: choose none, broad or narrow (Modal's region pricing).")
    book = load_prices(o["prices_file"])
    known = set(book.providers) | {"together", "openai"}
    providers = {p.lower() for p in o["providers"]} or None
    for p in providers or ():
        if p not in known:
            raise FtplanError(f"--provider {p!r} is not known; choose from {', '.join(sorted(known))}.")
    local = local_box(o["local"], book, o["electricity"], o["card_price"], o["card_hours"])
    setup = _training_setup(o)
    pinned = _pinned()
    return plan_for_data(
        data, o["model"], setup=setup, method=o["method"], adapter=o["adapter"], lora_rank=o["lora_rank"],
        lora_alpha=o["lora_alpha"], epochs=o["epochs"], verifier=o["verifier"], tokenizer=o["tokenizer"],
        packing=o["packing"], pinned=pinned - {"packing"}, gpus={get_gpu(o["gpu"]).name} if o["gpu"] else None,
        counts={o["gpus"]} if o["gpus"] else None, providers=providers, local=local, prices=book,
        region=o["region"], max_cost=o["max_cost"], max_hours=o["max_hours"], group_size=o["group_size"],
        completion_len=o["completion_len"], split=o["split"], count_all=o["count_all"],
        speed_corrections=_speed_corrections(),
        teacher=o["teacher"], precompute_ref=o["precompute_ref"],
    )


@cli.command()
@click.argument("data", required=False)
@_setup_options
@click.option("--tokens", type=int, default=None, help="Training tokens (x epochs) for a time estimate (no DATA).")
@click.option("--matrix", is_flag=True, help="The playbook's sizing grid: 1k-1M examples x 1B-405B models.")
@click.option("--plot", "plot_file", default=None,
              help="With DATA: cost vs time of all plans; with --model alone: memory by component against the "
              "card. FILE ends .html, .svg or .png (PNG: ftplan[plot]).")
@click.option("--top", default=10, show_default=True, type=int, help="Rows in the plan table.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (schema in the README).")
def estimate(data, tokens, matrix, plot_file, top, as_json, **o) -> None:
    """Without DATA: memory by component, fit and speed of one setup. With DATA: a ranked, priced plan.

    DATA is a .jsonl, .json, .csv or .parquet file (or a Hub dataset id when online). Exit 1 when
    --max-cost/--max-hours leave no plan; exit 2 on bad input.
    """
    _check_counts(o, top=top)
    if matrix and plot_file:
        raise FtplanError("--plot draws the plans of one job (with DATA) or one setup's memory (with --model); the "
                          "matrix is a table: drop --plot, or plan one cell with DATA.")
    if plot_file:
        from ftplan.launcher.plot import check_target

        check_target(plot_file)  # a wrong suffix or a missing folder fails before any work
    if matrix:
        from ftplan.sizing.matrix import MAX_HOURS, TOKENS_PER_EXAMPLE, sizing_matrix
        from ftplan.sizing.prices import load_prices

        cells = sizing_matrix(load_prices(o["prices_file"]), seq_len=o["seq_len"])
        out = {"max_hours": MAX_HOURS, "tokens_per_example": TOKENS_PER_EXAMPLE, "cells": [c.to_dict() for c in cells]}
        if as_json:
            click.echo(json.dumps(out, indent=2))
        else:
            from ftplan.launcher.plan_render import print_matrix

            print_matrix(out)
        return
    if data:
        result = _plan(data, o).to_dict()
        if plot_file:
            from ftplan.launcher.plot import write_plot

            path = write_plot(plot_file, result["plans"], result["pareto"], f"{result['model']['id']}: cost vs time")
            if not as_json:
                click.echo(f"plot written to {path}", err=True)
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            from ftplan.launcher.plan_render import print_plan

            print_plan(result, top=top)
        if result["suggestion"]:
            sys.exit(1)
        return
    from ftplan.sizing.estimate import estimate as run_estimate

    if not o["model"] and not o["params"]:
        raise FtplanError("give --model (e.g. --model llama-3.1-8b, or a folder with config.json) or --params 7B, "
                          "and a data file to plan from it.")
    result = run_estimate(o["model"], params=o["params"], setup=_training_setup(o, single=True), gpu=o["gpu"],
                          tokens=tokens,
                          speed_corrections=_speed_corrections())
    out = result.to_dict()
    if plot_file:
        from ftplan.launcher.plot import write_memory_plot

        path = write_memory_plot(plot_file, out)
        if not as_json:
            click.echo(f"plot written to {path}", err=True)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    from ftplan.launcher.render import print_estimate

    print_estimate(out)


@cli.command()
@click.option("--prices", "prices_file", default=None, help="TOML file of price rows to merge in.")
@click.option("--json", "as_json", is_flag=True)
def prices(prices_file, as_json) -> None:
    """The price rows the planner uses, with sources and dates (rows over 90 days old are flagged)."""
    from dataclasses import asdict

    from ftplan.sizing.plan import openai_status
    from ftplan.sizing.prices import STALE_DAYS, load_prices
    from ftplan.sizing.prices import today as clock

    book = load_prices(prices_file)
    today = clock()
    rows = [dict(asdict(r), stale=r.age_days(today) > STALE_DAYS, age_days=r.age_days(today)) for r in book.gpu_rows]
    out = {"gpu_rows": rows, "providers": book.providers, "apis": book.apis, "local": book.local,
           "user_file": book.user_file, "stale_count": sum(r["stale"] for r in rows),
           "openai_status": openai_status(book, today)[1]}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    from ftplan.launcher.plan_render import print_prices

    print_prices(out)


@cli.command()
@click.argument("data")
@_setup_options
@click.option("--json", "as_json", is_flag=True)
def compare(data, as_json, **o) -> None:
    """Local box vs each cloud vs each API: time, dollars and break-even for one job (DATA or a RECIPE.yaml)."""
    if data.endswith((".yaml", ".yml")):
        from ftplan.launcher.localgpu import local_box
        from ftplan.launcher.recipeplan import recipe_plan
        from ftplan.recipes.schema import load_recipe
        from ftplan.sizing.prices import load_prices

        book = load_prices(o["prices_file"])
        box = local_box(o["local"], book, o["electricity"], o["card_price"], o["card_hours"])
        _print_compare(recipe_plan(load_recipe(data), box, book), o, as_json)
        return
    _print_compare(_plan(data, {**o, "max_cost": None, "max_hours": None}), o, as_json)


def _print_compare(result, o: dict, as_json: bool) -> None:
    local = result.local
    rows, notes = [], list(result.notes)
    if local is None:
        notes.append("No local GPU found (nvidia-smi) or given: pass --local RTX-4090 (and --card-price) to compare.")
    for p in [local] * bool(local) + [p for p in result.best_per_provider() if p.kind != "local"]:
        saving = None if local is None or p is local else p.usd - local.usd
        card = o["card_price"]
        break_even = None
        if local is not None and p is not local and card and saving and saving > 0:
            break_even = card * local.count / saving
        hw = "managed" if p.gpu is None else f"{p.count} x {p.gpu} ({p.adapter})"
        rows.append({"label": p.label, "provider": p.provider, "hardware": hw, "hours": p.hours, "usd": round(p.usd, 2),
                     "saving_vs_local": None if saving is None else round(saving, 4),
                     "break_even_runs": None if break_even is None else round(break_even, 1)})
    if local is not None and not o["card_price"]:
        notes.append("Give --card-price (USD per card) to see after how many such runs the local card pays for itself.")
    out = {"model": result.model_id, "total_tokens": result.workload.total_tokens, "rows": rows, "notes": notes,
           "warnings": result.warnings}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    from ftplan.launcher.plan_render import print_compare

    print_compare(out)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def models(as_json: bool) -> None:
    """List the bundled model catalog (ids, aliases, sizes, sources)."""
    from ftplan.sizing.architecture import from_config
    from ftplan.sizing.catalog import catalog_entries
    from ftplan.sizing.errors import ConfigError

    rows = []
    for entry in catalog_entries():
        try:
            params = from_config(entry["config"], entry["id"]).total_params
        except ConfigError:
            params = None
        rows.append({"id": entry["id"], "aliases": entry["aliases"], "params": params, "source": entry["source"]})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ftplan model catalog")
    for col in ("id", "aliases", "params"):
        table.add_column(col)
    for r in rows:
        size = f"{r['params'] / 1e9:.2f}B" if r["params"] else "not a decoder"
        table.add_row(r["id"], ", ".join(r["aliases"]), size)
    Console().print(table)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def gpus(as_json: bool) -> None:
    """List GPU specs with their sources and dates."""
    from dataclasses import asdict

    from ftplan.sizing.gpus import all_gpus

    rows = [dict(asdict(g), memory_gib=round(g.memory_gib, 2), memory_bytes=g.memory_bytes) for g in all_gpus()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="GPU specs")
    for col in ("name", "memory MiB (nvidia-smi)", "BF16 TFLOP/s", "GB/s", "W", "link", "as of", "source"):
        table.add_column(col)
    for g in rows:
        table.add_row(g["name"], f"{g['memory_mib']:,}", f"{g['bf16_tflops']:g}", f"{g['bandwidth_gbs']:g}",
                      f"{g['power_w']:g}", f"{g['interconnect']} {g['interconnect_gbs']:g}", g["as_of"],
                      g["source"][:60])
    Console().print(table)


# --- recipes and runs -------------------------------------------------------------------------------


def _presets() -> dict[str, str]:
    from importlib import resources

    folder = resources.files("ftplan.recipes").joinpath("presets")
    return {f.name[:-5]: f.read_text(encoding="utf-8") for f in folder.iterdir() if f.name.endswith(".yaml")}


PRESET_FOR = {("sft", "lora"): "lora-sft", ("sft", "qlora"): "qlora-sft", ("sft", "dora"): "dora-sft",
              ("sft", "full"): "full-sft"}


@cli.command()
@click.argument("method", required=False)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@click.option("--from", "from_plan", type=click.Path(dir_okay=False),
              help="A plan (`ftplan estimate DATA --json > plan.json`): the recipe takes its model, data, method and "
              "the cheapest GPU plan's setup, so the run is the plan.")
def init(method, output, from_plan) -> None:
    """Write a commented recipe preset for METHOD (lora-sft, dpo, grpo, merge, ...), or one made from a plan."""
    presets = _presets()
    plan = _read_plan(from_plan) if from_plan else None
    if plan and not method:
        m = plan["method"]
        adapter = (plan["chosen"] or {}).get("adapter") or m["adapters"][0]
        method = PRESET_FOR.get((m["objective"], adapter), m["objective"])
    if not method:
        click.echo("Recipe presets (ftplan init METHOD [-o FILE]):")
        for name in sorted(presets):
            first = next((ln for ln in presets[name].splitlines() if ln.startswith("# ftplan recipe:")), "")
            click.echo(f"  {name:22s} {first.removeprefix('# ftplan recipe:').strip()}")
        click.echo("Or from a plan: ftplan estimate DATA --model M --json > plan.json; ftplan init --from plan.json")
        return
    if method not in presets:
        raise FtplanError(f"no preset {method!r}; choose one of {', '.join(sorted(presets))}.")
    text = presets[method]
    if plan:
        text = _recipe_from_plan(text, plan, from_plan, Path(output).parent if output else None)
    elif output:
        text = _anchor_examples(text, Path(output).expanduser().parent)
    if output:
        path = Path(output).expanduser()
        if path.exists():
            raise FtplanError(f"{path} exists; pick another name or delete it first.")
        if not path.parent.is_dir():
            raise FtplanError(f"-o {path}: the folder {path.parent} does not exist; create it (mkdir -p "
                              f"{path.parent}) or write the recipe elsewhere.")
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise FtplanError(f"-o {path}: cannot write it ({exc.strerror or exc}).") from None
        click.echo(f"wrote {path}: edit model and data, then `ftplan plan {path}`" if not plan else
                   f"wrote {path} from {from_plan}: `ftplan plan {path}` shows the same plan; "
                   f"`ftplan run {path} --provider ...` runs it", err=True)
    else:
        click.echo(text, nl=False)


def _anchor_examples(text: str, folder: Path) -> str:
    """The presets' `examples/...` paths, rewritten so they still name those files from the recipe's folder.

    A recipe's relative paths are relative to the recipe file; a preset written into another folder
    would otherwise point at an `examples/` beside it that does not exist. Only files that exist
    here (a checkout of ftplan) are rewritten, relative when below the recipe's folder, else absolute;
    others are left for the user to edit.
    """
    def anchored(m: re.Match) -> str:
        here = Path(m.group(2))
        if not here.is_file() or not folder.is_dir():
            return m.group(0)
        rel = os.path.relpath(here.resolve(), folder.resolve())
        return m.group(1) + (str(here.resolve()) if rel.startswith("..") else rel)

    return re.sub(r"(?m)^(\s*(?:path|eval_path|golden):[ \t]*)(examples/[\w./-]+)", anchored, text)


def _read_plan(path: str) -> dict:
    """The plan JSON `ftplan estimate DATA --json` writes, with the GPU plan a recipe can carry."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise FtplanError(f"--from {path}: cannot read it ({exc.strerror or exc}).") from None
    except ValueError as exc:
        raise FtplanError(f"--from {path}: not JSON ({exc}). Write one with `ftplan estimate DATA --model M --json "
                          f"> {path}`.") from None
    if not isinstance(data, dict) or not {"model", "dataset", "method", "plans"} <= set(data):
        raise FtplanError(f"--from {path}: not a plan from `ftplan estimate DATA --json` (it needs model, dataset, "
                          "method and plans).")
    gpu_plans = [p for p in data["plans"] if p.get("setup")]
    cheapest = data.get("cheapest") if (data.get("cheapest") or {}).get("setup") else None
    data["chosen"] = cheapest or (gpu_plans[0] if gpu_plans else None)
    return data


def _recipe_from_plan(text: str, plan: dict, source: str, folder: Path | None) -> str:
    """The preset filled from the plan; a data file is written relative to the recipe's folder (or absolute)."""
    from types import SimpleNamespace

    import yaml

    from ftplan.launcher.recipeplan import plan_fields
    from ftplan.recipes.rewrite import set_fields
    from ftplan.recipes.schema import parse_recipe

    m = plan["method"]
    fields = {("hyperparameters", "epochs"): m["epochs"], ("hyperparameters", "learning_rate"): m["learning_rate"],
              ("hyperparameters", "max_seq_length"): plan["dataset"]["seq_len"]}
    chosen = plan["chosen"]
    if chosen is None:
        raise FtplanError(f"--from {source}: the plan has no GPU plan that fits with margin, so there is no setup to "
                          "write; plan again with --adapter qlora, a shorter --seq-len or more --gpus.")
    fields.update(plan_fields(SimpleNamespace(setup=chosen["setup"], gpu=chosen["gpu"], count=chosen["count"])))
    text = set_fields(text, fields)
    # top-level scalars, the data path and the LoRA rank/alpha (one level down under method.lora)
    data = plan["dataset"]["source"]
    if Path(data).is_file():
        data = os.path.relpath(Path(data).resolve(), folder.resolve()) if folder else str(Path(data).resolve())
    for key, value in (("model", plan["model"]["id"]), ("path", data),
                       ("rank", m["lora_rank"]), ("alpha", m["lora_alpha"])):
        text = re.sub(rf"(?m)^(\s*{key}:)[ \t]*[^#\n]*?([ \t]*(#.*)?)$",
                      lambda mm, v=value: f"{mm.group(1)} {v}{mm.group(2)}", text, count=1)
    header = (f"# from {source}: {chosen['label']} {chosen['count']} x {chosen['gpu']}, ${chosen['usd']:,.2f}, "
              f"{chosen['hours']:,.2f} h as planned\n")
    text = header + text
    parse_recipe(yaml.safe_load(text), source)
    return text


@cli.command()
@click.argument("recipe")
@click.option("--local", "local", default=None, help="Your box, e.g. RTX-4090:2 [default: nvidia-smi].")
@click.option("--electricity", type=float, default=None, help="USD per kWh for the local box.")
@click.option("--prices", "prices_file", default=None, help="TOML file of price rows.")
@click.option("--provider", "providers", multiple=True, help="Only these providers (repeatable).")
@click.option("--write", is_flag=True, help="Let the planner choose micro-batch, accumulation, packing, checkpointing, "
              "optimizer and hardware, and write the cheapest plan's setup into RECIPE (comments kept).")
@click.option("--keep", multiple=True, help="With --write: a hyperparameter the planner must not change (repeatable): "
              "batch_size, gradient_accumulation, packing, gradient_checkpointing, optimizer.")
@click.option("--top", default=10, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
def plan(recipe, local, electricity, prices_file, providers, write, keep, top, as_json) -> None:
    """The estimate for a recipe as written (its setup pinned); --write lets the planner choose it and saves it."""
    from ftplan.launcher.localgpu import local_box
    from ftplan.launcher.recipeplan import recipe_plan, write_plan
    from ftplan.recipes.schema import load_recipe
    from ftplan.sizing.prices import load_prices

    r = load_recipe(recipe)
    if r.method.objective == "merge":
        raise FtplanError(f"{recipe}: a merge recipe trains nothing; it runs in minutes on a CPU (ftplan run "
                          f"{recipe} --provider local).")
    if keep and not write:
        raise FtplanError("--keep only means something with --write (the plan of a recipe as written pins all of it).")
    book = load_prices(prices_file)
    result = recipe_plan(r, local_box(local, book, electricity, None, None), book, search=write,
                         keep=frozenset(keep), providers={p.lower() for p in providers} or None)
    summary = None
    if write:
        summary = write_plan(recipe, next((p for p in result.plans if p.setup), None))
    out = result.to_dict()
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        from ftplan.launcher.plan_render import print_plan

        print_plan(out, top=top)
    if summary:
        click.echo(summary, err=True)


from . import cli_runs  # noqa: E402,F401  (registers run, jobs, status, logs, cancel, pull, eval)


def main() -> None:
    cli(prog_name="ftplan")


if __name__ == "__main__":  # `python -m ftplan.launcher.cli`: the commands are registered on the imported module
    from ftplan.launcher.cli import main as _main

    _main()
