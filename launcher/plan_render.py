"""Human output for plans, prices, the comparison and the sizing matrix (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .plot import money, terminal_plot

GIB = 2**30


def _hours(h: float | None) -> str:
    if h is None:
        return "queue-dependent"
    return f"{h * 60:,.0f} min" if h < 1 else f"{h:,.1f} h"


def _hw(p: dict) -> str:
    if p["gpu"] is None:
        return "managed"
    nodes = f" ({p['nodes']} nodes)" if p["nodes"] and p["nodes"] > 1 else ""
    return f"{p['count']} x {p['gpu']}{nodes}"


def print_dataset(ds: dict, console: Console) -> None:
    lens = ds["lengths"]
    unc = "" if ds["exact_tokens"] else f" (+/-{ds['token_uncertainty_pct']:g} %)"
    console.print(f"[bold]{ds['source']}[/]: {ds['examples']:,} examples, {ds['format_description']} "
                  f"({ds['file_format']})")
    console.print(f"  tokens {ds['tokens']:,}{unc} by {ds['token_counter']}; per sequence p50 {lens['p50']:,}, "
                  f"p95 {lens['p95']:,}, max {lens['max']:,}; after truncation at {ds['seq_len']:,}: "
                  f"{ds['tokens_after_truncation']:,}; padded: {ds['padded_tokens']:,} "
                  f"({ds['padding_efficiency']:.0%} efficient)")
    if ds["labels"]:
        console.print("  labels: " + ", ".join(f"{k} {v:,}" for k, v in ds["labels"].items()))


def print_plan(result: dict, console: Console | None = None, top: int = 10) -> None:
    console = console or Console()
    print_dataset(result["dataset"], console)
    m, w = result["method"], result["workload"]
    adapter = m["adapters"][0] if len(m["adapters"]) == 1 else "/".join(m["adapters"])
    console.print(f"[bold]Method[/]: {m['objective']} with {adapter} (r={m['lora_rank']}, alpha={m['lora_alpha']}, "
                  f"{m['lora_targets']}), {m['epochs']} epochs, LR {m['learning_rate']:g} {m['scheduler']}, warmup "
                  f"{m['warmup_ratio']:.0%} -> {w['total_tokens']:,} tokens to compute")
    for reason in m["reasons"]:
        console.print(f"  [dim]- {reason}[/]")
    plans = result["plans"]
    if plans:
        marks = {}
        for key, label in (("cheapest", "cheapest"), ("fastest", "fastest"), ("local", "local")):
            if result[key]:
                p = result[key]
                marks.setdefault((p["provider"], p["gpu"], p["count"]), []).append(label)
        shown = list(result["per_provider"])
        for key in ("fastest", "local"):
            p = result[key]
            if p and all((q["provider"], q["gpu"], q["count"]) != (p["provider"], p["gpu"], p["count"]) for q in shown):
                shown.append(p)
        shown = sorted(shown, key=lambda p: p["usd"])[: max(top, 3)]
        table = Table(title=f"Plans for {result['model']['id']} ({len(plans)} fit of {result['plans_considered']} "
                            "searched; best per provider)")
        for col, just in (("plan", "left"), ("hardware", "left"), ("memory/GPU", "right"), ("tok/s", "right"),
                          ("time", "right"), ("USD", "right")):
            table.add_column(col, justify=just)
        for p in shown:
            mem = ""
            if p["per_gpu_bytes"]:
                mem = f"{p['per_gpu_bytes'] / GIB:,.1f}/{p['gpu_memory_bytes'] / GIB:,.0f} GiB"
            tps = f"{p['tokens_per_second']:,.0f}" if p["tokens_per_second"] else ""
            tag = ", ".join(marks.get((p["provider"], p["gpu"], p["count"]), []))
            label = p["label"] + (f" [bold green]({tag})[/]" if tag else "")
            kind = p["adapter"] if p["adapter"] != "managed" else ""  # OpenAI: "managed" says it all
            table.add_row(label, f"{_hw(p)} {kind}".strip(), mem, tps, _hours(p["hours"]), f"${p['usd']:,.2f}")
        console.print(table)
        lines = terminal_plot(plans, result["pareto"])
        if lines:
            console.print("Cost vs time of every plan that fits ('*' Pareto front, 'L' local box):", highlight=False)
            for line in lines:
                console.print(line, highlight=False, markup=False)
    if result["suggestion"]:
        console.print(f"[red]{result['suggestion']}[/]")
    for warning in result["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
    for note in result["dataset"]["notes"] + result["notes"]:
        console.print(f"[dim]note: {note}[/]")
    if result["stale_prices"]:
        console.print(f"[yellow]warning:[/] {len(result['stale_prices'])} price rows are older than 90 days "
                      "(`ftplan prices` lists them; override in ~/.config/ftplan/prices.toml).")


def print_prices(data: dict, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="GPU prices (on-demand, USD per GPU-hour)")
    for col in ("provider", "GPU", "counts", "$/GPU-h", "as of", "source"):
        table.add_column(col)
    for r in data["gpu_rows"]:
        stale = " [yellow](stale)[/]" if r["stale"] else ""
        table.add_row(r["provider"], r["gpu"], ",".join(map(str, r["counts"])) + (f" (x{r['max_nodes']} nodes)"
                      if r["max_nodes"] > 1 else ""), f"{r['usd_per_gpu_hour']:.4g}", r["as_of"] + stale,
                      r["source"][:70])
    console.print(table)
    tg = data["apis"]["together"]
    api = Table(title=f"Managed APIs: {tg['label']} ({tg['unit']})")
    for col in ("size band", "SFT LoRA", "SFT full", "DPO LoRA", "DPO full"):
        api.add_column(col)
    for b in tg["bands"]:
        api.add_row(f"<= {b['max_params_b']}B", *(f"${b[k]}" for k in ("sft_lora", "sft_full", "dpo_lora", "dpo_full")))
    console.print(api)
    console.print(f"[dim]{tg['source']} (as of {tg['as_of']})[/]")
    oa = data["apis"]["openai"]
    console.print(f"{oa['label']}: " + ", ".join(f"{k} ${v}/M" for k, v in oa["models"].items())
                  + f"; RFT ${list(oa['rft_usd_per_hour'].values())[0]}/h. {data['openai_status']}")
    loc = data["local"]
    console.print(f"Local: ${loc['electricity_usd_per_kwh']}/kWh ({loc['electricity_source']}); "
                  f"{loc['power_fraction']} x board power ({loc['power_source']}).")
    if data["user_file"]:
        console.print(f"[dim]user prices from {data['user_file']}[/]")
    if data["stale_count"]:
        console.print(f"[yellow]warning:[/] {data['stale_count']} rows are older than 90 days; check the providers' "
                      "pages and override them in ~/.config/ftplan/prices.toml or --prices FILE.")


def _vs_local(extra: float | None) -> str:
    """What a plan costs beyond the local box's run: "+$3.20", "-$0.01" (cheaper), "same" under a cent."""
    if extra is None:
        return ""
    if abs(extra) < 0.005:
        return "same"
    return f"{'+' if extra > 0 else '-'}${abs(extra):,.2f}"


def print_compare(data: dict, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"{data['model']}: local vs cloud vs API for {data['total_tokens']:,} tokens")
    for col in ("where", "hardware", "time", "USD", "cost vs local", "break-even runs"):
        table.add_column(col)
    for r in data["rows"]:
        be = r["break_even_runs"]
        table.add_row(r["label"], r["hardware"], _hours(r["hours"]), f"${r['usd']:,.2f}",
                      _vs_local(r["saving_vs_local"]), "" if be is None else f"{be:,.0f}")
    console.print(table)
    for note in data["notes"]:
        console.print(f"[dim]note: {note}[/]")


def print_matrix(data: dict, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"Sizing matrix: cheapest plan within {data['max_hours']:g} h ({data['tokens_per_example']} "
                        "tokens per example, packed)")
    table.add_column("examples")
    models = list(dict.fromkeys(c["model"] for c in data["cells"]))
    for m in models:
        table.add_column(m)
    for n in dict.fromkeys(c["examples"] for c in data["cells"]):
        row = [f"{n:,}"]
        for m in models:
            c = next(c for c in data["cells"] if c["examples"] == n and c["model"] == m)
            if c["gpu"] is None:
                row.append("no plan")
                continue
            late = "" if c["within_limit"] else " (over limit)"
            row.append(f"{c['method']}\n{c['count']} x {c['gpu']} ({c['provider']})\n{_hours(c['hours'])}, "
                       f"{money(c['usd'])}{late}")
        table.add_row(*row)
    console.print(table)
