"""The `ftplan` command line: a thin layer over `ftplan.sizing`.

User errors (`FtplanError`) become one paragraph on stderr and exit code 2, here and only here.
`rich` is imported only when a table is printed, so `--json` answers fast.
"""

from __future__ import annotations

import json
import sys

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


@cli.command()
@click.option("--model", "-m", help="Catalog id or alias (llama-3.1-8b) or a folder with config.json.")
@click.option("--params", help="Parameter count alone, e.g. 7B (a Llama shape is assumed).")
@click.option("--adapter", default="lora", show_default=True, help="lora | qlora | dora | full")
@click.option("--lora-rank", "lora_rank", default=16, show_default=True, type=int)
@click.option("--lora-alpha", "lora_alpha", default=32, show_default=True, type=int)
@click.option("--lora-targets", "lora_targets", default="all-linear", show_default=True,
              help="all-linear | attention | mlp | q,k,v,o,gate,up,down | the model's module names")
@click.option("--seq-len", "seq_len", default=2048, show_default=True, type=int)
@click.option("--batch-size", "batch_size", default=1, show_default=True, type=int, help="Micro-batch per GPU.")
@click.option("--grad-accum", "grad_accum", default=1, show_default=True, type=int)
@_bool_flag("gradient-checkpointing", True, "Recompute activations in backward.")
@click.option("--optimizer", default="adamw", show_default=True,
              help="adamw | adamw_8bit | paged_adamw_8bit | paged_adamw_32bit | sgd")
@click.option("--precision", default="bf16", show_default=True, help="bf16 | fp16 | fp32 | mixed")
@click.option("--attention", default="flash", show_default=True, help="flash | sdpa | eager")
@click.option("--loss", default="standard", show_default=True,
              help="standard (fp32 logits) | chunked | fused (Unsloth/Liger)")
@click.option("--gpu", default=None, help="GPU name (H100, A100-80GB, L4, RTX-4090, ...). Default H100.")
@click.option("--gpus", default=1, show_default=True, type=int, help="GPUs in the job.")
@click.option("--distributed", default="none", show_default=True, help="none | ddp | fsdp | zero2 | zero3")
@click.option("--cpu-offload", "cpu_offload", is_flag=True, help="Offload weights/optimizer to CPU (FSDP/ZeRO).")
@click.option("--optimizer-in-backward", "optimizer_in_backward", is_flag=True,
              help="Step each parameter as its gradient arrives (no full gradient buffer).")
@click.option("--activation-offload", "activation_offload", is_flag=True,
              help="Keep saved activations in CPU memory (Unsloth / torchtune offloading).")
@click.option("--tokens", type=int, default=None, help="Training tokens (x epochs) for a time estimate.")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON (schema in the README).")
def estimate(model, params, adapter, lora_rank, lora_alpha, lora_targets, seq_len, batch_size, grad_accum,
             gradient_checkpointing, optimizer, precision, attention, loss, gpu, gpus, distributed,
             cpu_offload, optimizer_in_backward, activation_offload, tokens, as_json) -> None:
    """Peak GPU memory by component, fit, tokens/s and time for one training setup."""
    from ftplan.sizing.estimate import estimate as run_estimate
    from ftplan.sizing.setup import TrainingSetup

    if not model and not params:
        raise FtplanError("give --model (e.g. --model llama-3.1-8b, or a folder with config.json) or --params 7B.")
    setup = TrainingSetup(
        adapter=adapter.lower(), lora_rank=lora_rank, lora_alpha=lora_alpha, lora_targets=lora_targets,
        seq_len=seq_len, micro_batch_size=batch_size, grad_accum=grad_accum,
        gradient_checkpointing=gradient_checkpointing, optimizer=optimizer.lower(),
        precision=precision.lower(), attention=attention.lower(), gpus=gpus,
        distributed=distributed.lower(), cpu_offload=cpu_offload, loss=loss.lower(),
        optimizer_in_backward=optimizer_in_backward, activation_offload=activation_offload,
    )
    result = run_estimate(model, params=params, setup=setup, gpu=gpu, tokens=tokens)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    from ftplan.launcher.render import print_estimate

    print_estimate(result.to_dict())


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

    rows = [asdict(g) for g in all_gpus()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="GPU specs")
    for col in ("name", "memory GiB", "BF16 TFLOP/s", "GB/s", "W", "link", "as of", "source"):
        table.add_column(col)
    for g in rows:
        table.add_row(g["name"], f"{g['memory_gib']:g}", f"{g['bf16_tflops']:g}", f"{g['bandwidth_gbs']:g}",
                      f"{g['power_w']:g}", f"{g['interconnect']} {g['interconnect_gbs']:g}", g["as_of"],
                      g["source"][:60])
    Console().print(table)


def main() -> None:
    cli(prog_name="ftplan")


if __name__ == "__main__":
    main()
