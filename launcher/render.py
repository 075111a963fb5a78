"""Human output for `ftplan estimate`: a rich table by component, the fit, speed and time."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

GIB = 2**30
LABELS = {
    "weights": "weights",
    "adapter": "adapter weights",
    "gradients": "gradients",
    "optimizer": "optimizer states",
    "activations": "activations",
    "logits": "logits + loss",
    "buffers": "transient buffers",
    "optimizer_step": "optimizer step temporaries",
    "allocator_overhead": "allocator overhead",
    "cuda_context": "CUDA context",
}


def _gib(n: float) -> str:
    return f"{n / GIB:,.2f} GiB"


def print_estimate(est: dict, console: Console | None = None) -> None:
    console = console or Console()
    model, hw, mem, tp = est["model"], est["hardware"], est["memory"], est["throughput"]
    setup = est["setup"]
    method = setup["adapter"] if setup["adapter"] == "full" else (
        f"{setup['adapter']} r={setup['lora_rank']} alpha={setup['lora_alpha']} {setup['lora_targets']}")
    console.print(
        f"[bold]{model['id']}[/] ({model['params']['total'] / 1e9:.2f}B params, "
        f"{model['trainable_params'] / 1e6:,.1f}M trainable) - {method}, seq {setup['seq_len']} x "
        f"batch {setup['micro_batch_size']}, {setup['precision']}, {setup['attention']} attention, "
        f"checkpointing {'on' if setup['gradient_checkpointing'] else 'off'}"
    )
    table = Table(title=f"Peak memory per GPU on {hw['count']} x {hw['gpu']}")
    table.add_column("component")
    table.add_column("memory", justify="right")
    for key, value in mem["components"].items():
        if value:
            table.add_row(LABELS.get(key, key), _gib(value))
    table.add_row("[bold]total per GPU[/]", f"[bold]{_gib(mem['per_gpu_bytes'])}[/]")
    for key, value in mem["offloaded_bytes"].items():
        table.add_row(f"[dim]{key} (CPU / paged)[/]", f"[dim]{_gib(value)}[/]")
    console.print(table)
    cap = hw["memory_bytes"]
    if est["verdict"] == "fits":
        console.print(f"[green]Fits[/] on {hw['gpu']} ({_gib(cap)} as nvidia-smi reports it): "
                      f"{_gib(est['headroom_bytes'])} headroom (estimate +/-{mem['uncertainty_pct']} %).")
    elif est["verdict"] == "tight":
        side = f"{_gib(est['headroom_bytes'])} headroom" if est["headroom_bytes"] >= 0 else \
            f"{_gib(-est['headroom_bytes'])} over"
        console.print(f"[yellow]Tight[/] on {hw['gpu']} ({_gib(cap)} as nvidia-smi reports it): {side}, inside the "
                      f"estimate's own +/-{mem['uncertainty_pct']} %. It may run out of memory: leave margin with a "
                      "smaller --batch-size or --seq-len, --adapter qlora, or a bigger --gpu.")
    else:
        console.print(f"[red]Does not fit[/] on {hw['gpu']} ({_gib(cap)}): {_gib(-est['headroom_bytes'])} over. "
                      "Try --adapter qlora, a smaller --batch-size or --seq-len, more --gpus with "
                      "--distributed fsdp, or a bigger --gpu.")
    console.print(f"Throughput: {tp['tokens_per_second']:,.0f} tokens/s on {hw['count']} GPU(s) with "
                  f"{setup['trainer']} (+/-{tp['uncertainty_pct']} %); achieved MFU {tp['mfu']:.0%}, "
                  f"{tp['bound']}-bound.")
    if est["time"]:
        t = est["time"]
        console.print(f"Time for {t['tokens']:,} tokens: {t['hours']:,.2f} h ({t['seconds']:,.0f} s).")
    for note in mem["notes"]:
        console.print(f"[dim]note: {note}[/]")
    for warning in est["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"[dim]model: {model['citation']}[/]", soft_wrap=True)
    console.print(f"[dim]GPU spec: {hw['source']} (as of {hw['as_of']})[/]", soft_wrap=True)
