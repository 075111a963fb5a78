"""The commands that run and follow jobs: run, jobs, status, logs, cancel, pull, eval.

Each parses, calls `ftplan.launcher.flow` / `ftplan.launcher.jobs`, and prints. None of them has a
provider branch: what differs between providers is behind `ftplan.providers.base.Provider`.
Heavy modules are imported inside the commands, so `ftplan estimate` never pays for them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from ftplan.providers import registry
from ftplan.sizing.errors import FtplanError

from .cli import cli


def _store():
    from .jobstore import JobStore

    return JobStore()


@cli.command()
@click.argument("recipe")
@click.option("--provider", default="local", show_default=True, type=click.Choice(registry.names()),
              help=f"Where to run it: {registry.help_text()}.")
@click.option("--detach", is_flag=True, help="Start and return; follow with `ftplan logs ID --follow`.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before starting.")
@click.option("--max-cost", "max_cost", type=float, default=None, help="Refuse or stop the run above this many USD.")
@click.option("--resume", "resume_job", default=None,
              help="Continue job ID from its last checkpoint (a new job that points at the old one).")
@click.option("--local", "local", default=None, help="Your box, e.g. RTX-4090:2 [default: nvidia-smi].")
@click.option("--electricity", type=float, default=None, help="USD per kWh for the local box.")
@click.option("--skip-eval", "skip_eval", is_flag=True, help="Do not run the eval gate after training (recorded).")
def run(recipe, provider, detach, yes, max_cost, resume_job, local, electricity, skip_eval) -> None:
    """Run RECIPE: plan, price, ask, start it on the provider, and show it live.

    \b
    Exit codes: 0 completed (or started with --detach); 1 failed, or blocked by the eval gate;
    2 bad input (nothing started); 3 cancelled (ftplan cancel, SIGTERM/SIGHUP, --max-cost);
    4 you stopped watching with Ctrl-C (the job goes on).
    """
    import os

    from .flow import RunRequest, console_ui
    from .flow import run as run_flow

    default_poll = 0.5 if provider == "local" else 10.0
    req = RunRequest(recipe, provider, detach=detach, yes=yes, max_cost=max_cost, resume=resume_job,
                     skip_eval=skip_eval, local=local, electricity=electricity,
                     poll_seconds=float(os.environ.get("FTPLAN_POLL_SECONDS", default_poll)))
    sys.exit(run_flow(req, console_ui(yes)))


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--import", "import_dir", default=None, type=click.Path(file_okay=False),
              help="Put back the jobs recorded in job folders under DIR (after a lost or damaged store).")
def jobs(as_json, limit, import_dir) -> None:
    """Jobs in the store, newest first."""
    from .jobs import import_folders, sync
    from .jobstore import TERMINAL

    store = _store()
    if import_dir:
        added = import_folders(store, Path(import_dir))
        click.echo(f"imported {len(added)} job(s) from {import_dir}" + (f": {', '.join(added)}" if added else ""),
                   err=True)
    rows, warnings = [], []
    for job in store.list(limit):
        if job["status"] not in TERMINAL:
            job, _, warning = sync(store, job["id"])
            if warning:
                warnings.append(f"{job['id']}: {warning}")
        rows.append(job)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ftplan jobs ({store.path})", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    # The id is what people copy back into other commands: never wrapped or cut, other columns give way.
    table.add_column("id", no_wrap=True, min_width=22)
    for col in ("name", "provider"):
        table.add_column(col, overflow="ellipsis", no_wrap=True)
    for col in ("status", "gate", "created", "USD"):
        table.add_column(col, no_wrap=True)
    from .progress import gate_verdict

    for j in rows:
        usd = (j.get("actuals") or {}).get("usd")
        table.add_row(j["id"], j["name"] or "", j["provider"], j["status"], gate_verdict(j.get("eval")) or "",
                      time.strftime("%m-%d %H:%M", time.localtime(j["created_at"])),
                      "" if usd is None else f"${usd:,.2f}")
    Console().print(table)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


def _container_log(job: dict, entries: int) -> tuple[list[str], str | None]:
    """The remote container's log tail and dashboard link, for providers that have them (Modal)."""
    from .jobs import view

    provider = registry.get(job["provider"])
    if not hasattr(provider, "log_tail") or not job["provider_ids"]:
        return [], None
    try:
        return provider.log_tail(view(job), entries)
    except FtplanError as exc:
        return [f"(container log unavailable: {exc})"], job["provider_ids"].get("dashboard")


def _checkpoints(job: dict, events: list[dict]) -> list[dict]:
    """Complete checkpoints on disk for local runs; the provider's list (kept at the end) or its events otherwise."""
    if job["provider"] == "local" and job.get("output_dir"):
        from ftplan.recipes.checkpoints import checkpoints

        return [{"step": step, "path": str(folder)} for step, folder, done in
                checkpoints(Path(job["output_dir"]) / "checkpoints") if done]
    kept = job["provider_ids"].get("checkpoints")
    if kept is not None:
        return kept
    return [{"step": e.get("step"), "path": e.get("path")} for e in events if e.get("type") == "checkpoint"]


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def status(job_id, as_json) -> None:
    """One job: status, progress, actuals, eval gate and where its outputs are (a finished job needs no network)."""
    from .jobs import outputs_path, sync

    store = _store()
    job, _, warning = sync(store, job_id)
    events = store.events(job["id"])
    last_step = next((e for e in reversed(events) if e.get("type") == "step"), None)
    checkpoints = _checkpoints(job, events)
    outputs = outputs_path(job)
    if as_json:
        click.echo(json.dumps({**job, "last_step": last_step, "checkpoints": checkpoints, "warning": warning,
                               "outputs_path": str(outputs) if outputs else None}, indent=2, default=str))
        return
    click.echo(f"job {job['id']} ({job['name']}) on {job['provider']}: {job['status']}"
               + (f" (resumes {job['resumed_from']})" if job.get("resumed_from") else ""))
    if warning:
        click.echo(f"  warning: {warning}")
    if last_step:
        loss = last_step.get("loss")
        click.echo(f"  step {last_step.get('step')}/{last_step.get('total')}" +
                   (f", loss {loss:.4f}" if isinstance(loss, (int, float)) else ""))
    if job.get("actuals"):
        a = job["actuals"]
        parts = [f"{a['wall_seconds']:,.0f} s" if a.get("wall_seconds") else None,
                 f"{a['tokens_per_second']:,.0f} tokens/s" if a.get("tokens_per_second") else None,
                 f"peak {a['peak_memory_bytes'] / 2**30:.2f} GiB" if a.get("peak_memory_bytes") else None,
                 f"${a['usd']:,.4f}" if a.get("usd") is not None else None]
        click.echo("  actuals: " + ", ".join(p for p in parts if p))
    from .progress import gate_lines

    for line in gate_lines(job.get("eval")):
        click.echo(f"  {line}")
    if job.get("error"):
        click.echo(f"  error: {job['error']}")
    for c in checkpoints:
        click.echo(f"  checkpoint step {c.get('step')}: {c.get('path')}")
    click.echo(f"  folder: {job['output_dir']}")
    tail, link = _container_log(job, 5)
    if link:
        click.echo(f"  dashboard: {link}")
    for line in tail:
        click.echo(f"  | {line}")
    if outputs:
        click.echo(f"  outputs: {outputs}")
    elif job["status"] == "completed" and registry.get(job["provider"]).has_outputs:
        click.echo(f"  outputs: not downloaded yet (ftplan pull {job['id']})")


@cli.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until the job ends, then fetch its "
              "outputs (works for detached runs).")
@click.option("--json", "as_json", is_flag=True, help="Raw events, one JSON object a line.")
@click.option("--container", "container", default=0, type=click.IntRange(min=0), metavar="N",
              help="Also print the last N lines of the remote container's log (Modal).")
def logs(job_id, follow, as_json, container) -> None:
    """A job's events; --follow keeps going until it ends."""
    from .jobs import outputs_path, pull, sync
    from .jobstore import TERMINAL
    from .progress import format_event

    store = _store()
    job, _, warning = sync(store, job_id)
    last = -1
    shown = None
    while True:
        if warning and warning != shown:
            click.echo(f"warning: {warning}", err=True)
            shown = warning
        for e in store.events(job["id"], last):
            last = e.pop("_seq")
            click.echo(json.dumps(e, default=str) if as_json else format_event(e))
        if not follow or job["status"] in TERMINAL:
            break
        time.sleep(0.5)
        job, _, warning = sync(store, job["id"])
    if follow and job["status"] == "completed" and outputs_path(job) is None and \
            registry.get(job["provider"]).has_outputs:
        click.echo(f"outputs: {pull(store, job['id'])}", err=True)
    if container:
        tail, link = _container_log(store.get(job["id"]), container)
        for line in ([f"container log ({link}):"] if link else []) + tail:
            click.echo(line)


@cli.command()
@click.argument("job_id")
@click.option("--wait", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds to wait for the checkpoint.")
def cancel(job_id, wait) -> None:
    """Stop a job gracefully: it writes a checkpoint, then stops (where the provider allows)."""
    from .jobs import cancel as cancel_job

    job = cancel_job(_store(), job_id, wait)
    click.echo(f"job {job['id']}: {job['status']}" + (f" (folder {job['output_dir']})" if job.get("output_dir")
                                                       else ""))


@cli.command()
@click.argument("job_id")
@click.option("--checkpoints", is_flag=True, help="Also fetch the checkpoints (Modal keeps them on its Volume).")
def pull(job_id, checkpoints) -> None:
    """Put a finished job's outputs (adapter or model, unpacked) in its folder; downloads retry, and so can you."""
    from .jobs import pull as pull_outputs

    store = _store()
    dest = pull_outputs(store, job_id, checkpoints=checkpoints)
    job = store.get(job_id)
    if dest is None:
        click.echo(f"job {job['id']} ran on {job['provider']}, which keeps the model: "
                   f"{(job.get('actuals') or {}).get('output')}")
        return
    click.echo(f"outputs of {job['id']}: {dest}")


@cli.command(name="eval")
@click.argument("target")
@click.option("--golden", default=None, help="Golden set JSONL [default: the recipe's eval.golden].")
@click.option("--model", "base_model", default=None, help="Base model [default: the job's recipe or the adapter's].")
@click.option("--max-new-tokens", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(target, golden, base_model, max_new_tokens, batch_size, as_json) -> None:
    """Run the eval gate on a job (any provider) or an adapter folder: base vs tuned per category; exit 1 if blocked."""
    from .evaluation import evaluate_folder, evaluate_job

    path = Path(target)
    try:
        is_folder = path.exists()
    except OSError:  # a name too long for a path is a job id to look up, not a crash
        is_folder = False
    if not is_folder:
        store = _store()
        result = evaluate_job(store, store.get(target), golden=golden, base_model=base_model, batch=batch_size,
                              max_new_tokens=max_new_tokens)
    else:
        recipe = None
        manifest = next((m for m in (path / "manifest.json", path.parent / "manifest.json") if m.is_file()), None)
        if manifest:
            from ftplan.recipes.schema import parse_recipe

            recipe = parse_recipe(json.loads(manifest.read_text())["recipe"], str(manifest))
            if (path / "adapter").is_dir():
                path = path / "adapter"
        golden = golden or (recipe.eval.golden if recipe else None)
        base_model = base_model or (recipe.model if recipe else None)
        if base_model is None and (path / "adapter_config.json").is_file():
            base_model = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not golden:
            raise FtplanError("no golden set: give --golden FILE or set eval.golden in the recipe.")
        if not base_model:
            raise FtplanError("no base model: give --model (the adapter's base).")
        if not path.is_dir():
            raise FtplanError(f"{path}: no adapter or model folder here.")
        result = evaluate_folder(path, base_model, golden, thresholds=recipe.eval.thresholds if recipe else {},
                                 judge=recipe.eval.judge if recipe else None, batch=batch_size,
                                 max_new_tokens=max_new_tokens)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"eval gate on {result['golden']}")
        for col in ("category", "items", "base", "tuned", "change"):
            table.add_column(col, justify="left" if col == "category" else "right")
        for name, c in result["categories"].items():
            color = "red" if c["change"] < 0 else "green" if c["change"] > 0 else ""
            change = f"[{color}]{c['change']:+.0%}[/]" if color else f"{c['change']:+.0%}"
            table.add_row(name, str(c["n"]), f"{c['base']:.0%}", f"{c['adapter']:.0%}", change)
        Console().print(table)
        verdict = "PASSED" if result["passed"] else "BLOCKED: " + "; ".join(result["reasons"])
        click.echo(f"gate {verdict} (golden set sha256 {result['golden_sha256'][:12]})")
    if not result["passed"]:
        sys.exit(1)
