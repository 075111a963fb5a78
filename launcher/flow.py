"""`ftplan run`: one flow for every provider.

    plan -> check_ready -> quote against --max-cost -> confirm -> job record -> submit (or resume)
         -> watch -> outputs -> eval gate -> actuals

Money is never spent without a shown price and a yes (or `--yes`), and never past `--max-cost`:
the quote is refused up front when it costs more, and a run whose projection crosses the limit is
cancelled (it checkpoints first where the provider can). Everything a provider does differently
lives behind `ftplan.providers.base.Provider`; this module has no provider branches, and the CLI
only parses, calls this, and exits with the code it returns.

Exit codes: 0 the job completed (or was started detached), 1 it failed or the eval gate blocked its
adapter, 2 bad input (nothing started), 3 it was cancelled (`ftplan cancel`, SIGTERM/SIGHUP to the
foreground run, or --max-cost), 4 you stopped watching (Ctrl-C) and the job goes on.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ftplan.providers import registry
from ftplan.providers.base import Job, Provider, Quote, RunOptions
from ftplan.recipes.schema import Recipe, load_recipe
from ftplan.sizing.errors import FtplanError

from . import jobs
from .jobstore import TERMINAL, JobStore
from .progress import gate_lines

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_WATCH_STOPPED = 0, 1, 2, 3, 4


@dataclass
class RunRequest:
    recipe: str
    provider: str = "local"
    detach: bool = False
    yes: bool = False
    max_cost: float | None = None
    resume: str | None = None
    skip_eval: bool = False
    local: str | None = None
    electricity: float | None = None
    poll_seconds: float = 0.5


@dataclass
class UI:
    """How the flow talks to the person: rich console for the live view, plain lines, a yes/no question."""

    console: object
    say: Callable[[str], None]
    warn: Callable[[str], None]
    ask: Callable[[str, bool], bool]
    interactive: bool


def run(req: RunRequest, ui: UI) -> int:
    if req.max_cost is not None and req.max_cost <= 0:
        raise FtplanError(f"--max-cost {req.max_cost:g} is impossible: give a positive number of USD.")
    provider = registry.get(req.provider)
    recipe = load_recipe(req.recipe)
    store = JobStore()  # a job store that cannot be opened fails here, before anything is checked or paid
    previous = _previous(store, req.resume, provider, recipe) if req.resume else None
    _check_inputs(recipe, req)
    provider.check_ready(recipe)  # installed, logged in, keys, the provider's limits: before any upload
    plan = _plan(recipe, req, ui)
    quote = provider.quote(recipe, plan)
    for line in quote.lines:
        ui.say(line)
    if plan and plan.get("cheapest") and plan["cheapest"]["provider"] != provider.name:
        c = plan["cheapest"]
        ui.say(f"For comparison, the cheapest plan anywhere: {c['label']} {c['count'] or ''} {c['gpu'] or ''} "
               f"${c['usd']:,.2f}.")
    if req.max_cost is not None and quote.usd is not None and quote.usd > req.max_cost:
        raise FtplanError(f"{quote.source}: ${quote.usd:,.2f}, above --max-cost {req.max_cost:g}; nothing was "
                          "started or paid.")
    paid = bool(quote.usd or quote.usd_per_hour)
    if not req.yes:
        if not ui.interactive:
            raise FtplanError("not starting without a yes: run in a terminal to answer, or pass --yes.")
        price = f" for about ${quote.usd:,.2f}" if quote.usd is not None else ""
        if not ui.ask(f"Start {recipe.name or Path(req.recipe).stem} on {provider.name}{price}?", not paid):
            ui.say("Not started.")
            return EXIT_OK
    job = _create(store, provider, recipe, req, plan, quote, previous)
    ui.say(f"job {job.id} started on {provider.name} (folder {job.folder})")
    if req.detach:
        ui.say(f"Detached. Follow: ftplan logs {job.id} --follow   Status: ftplan status {job.id}   "
               f"Stop: ftplan cancel {job.id}" + (f"   Outputs: ftplan pull {job.id}" if provider.has_outputs else ""))
        return EXIT_OK
    record, stopped = watch(store, job.id, ui, label=recipe.name or Path(req.recipe).stem,
                            usd_per_hour=quote.usd_per_hour, planned_usd=quote.usd, max_cost=req.max_cost,
                            poll=req.poll_seconds)
    if stopped == "interrupt":
        ui.say(f"Stopped watching; job {job.id} keeps running. Follow it: ftplan logs {job.id} --follow   "
               f"Stop it: ftplan cancel {job.id}")
        return EXIT_WATCH_STOPPED
    return finish(store, record, ui, provider, signal_name=stopped)


def _check_inputs(recipe: Recipe, req: RunRequest) -> None:
    """Everything the run will read or write, checked before a job exists.

    The model folder, the data and eval data (every line), the golden set and the output folder:
    each of these failing inside training would leave a job that started and died for a typo.
    """
    from ftplan.recipes.data import check_data, check_eval_data
    from ftplan.recipes.preflight import check_model_path, check_output_dir

    check_model_path(recipe.model, "model")
    if recipe.method.teacher and recipe.method.generate_with_teacher:
        check_model_path(recipe.method.teacher, "method.teacher")
    if recipe.method.merge:
        for i, adapter in enumerate(recipe.method.merge.adapters):
            check_model_path(adapter, f"method.merge.adapters[{i}]")
    check_output_dir(recipe.output.dir)
    if recipe.method.objective != "merge":
        fmt, _ = check_data(recipe)
        check_eval_data(recipe, fmt)
    if recipe.eval.golden and not req.skip_eval:
        from ftplan.recipes.golden import load_golden

        load_golden(recipe.eval.golden)  # malformed lines are reported now, not after hours of training


def _plan(recipe: Recipe, req: RunRequest, ui: UI) -> dict | None:
    if recipe.method.objective == "merge":
        return None
    from ftplan.sizing.prices import load_prices

    from .localgpu import local_box
    from .recipeplan import recipe_plan

    book = load_prices()
    try:
        return recipe_plan(recipe, local_box(req.local, book, req.electricity, None, None), book).to_dict()
    except FtplanError as exc:  # an architecture the planner cannot read: the run can still go, unpriced
        ui.warn(f"no estimate: {exc}")
        return None


def _previous(store: JobStore, job_id: str, provider: Provider, recipe: Recipe) -> Job:
    """The job a --resume continues: final, same provider, same model and method."""
    record, _, _ = jobs.sync(store, job_id)
    if record["status"] not in TERMINAL:
        raise FtplanError(f"job {record['id']} is still {record['status']}; resume continues a job that ended. Stop "
                          f"it first (ftplan cancel {record['id']}) or follow it (ftplan logs {record['id']} -f).")
    if record["provider"] != provider.name:
        raise FtplanError(f"job {record['id']} ran on {record['provider']}; --resume continues it there: add "
                          f"--provider {record['provider']}.")
    previous = jobs.view(record)
    if previous.recipe is not None:
        old, new = previous.recipe, recipe
        for label, a, b in (("model", old.model, new.model), ("method.objective", old.method.objective,
                                                               new.method.objective),
                            ("method.adapter", old.method.adapter, new.method.adapter)):
            if a != b:
                raise FtplanError(f"{label} is {b!r} in this recipe but job {record['id']} trained {a!r}; a resume "
                                  "continues the same training. Run it without --resume to start a new one.")
    return previous


def _create(store: JobStore, provider: Provider, recipe: Recipe, req: RunRequest, plan: dict | None, quote: Quote,
            previous: Job | None) -> Job:
    """The job record and folder exist from here on; a failed submission is recorded, never lost."""
    job_id = store.new_id()
    folder = Path(recipe.output.dir) / job_id
    try:
        folder.mkdir(parents=True)
        (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    except OSError as exc:
        raise FtplanError(f"output.dir {recipe.output.dir}: the job folder cannot be created there "
                          f"({exc.strerror}); point output.dir at a writable folder.") from None
    options = RunOptions(skip_eval=req.skip_eval, usd_per_hour=quote.usd_per_hour)
    if recipe.eval.golden and not req.skip_eval:
        from ftplan.recipes.golden import file_sha256

        # Frozen now: the hash travels with the job, and the program refuses a set changed since.
        options.golden_sha256 = file_sha256(recipe.eval.golden)
    store.create(provider.name, job_id=job_id, recipe_path=str(Path(req.recipe).resolve()),
                 recipe_hash=recipe.digest(), name=recipe.name or Path(req.recipe).stem, plan=plan,
                 output_dir=str(folder), events_path=str(folder / "events.jsonl"), status="submitting",
                 resumed_from=previous.id if previous else None, options=asdict(options))
    job = jobs.view(store.get(job_id))
    job.state.update(quote.state)
    try:
        ids = provider.resume(job, previous, quote) if previous else provider.submit(job, quote)
    except BaseException as exc:
        what = str(exc) or type(exc).__name__
        store.update(job_id, status="failed", provider_ids=job.state, options=asdict(job.options),
                     error=f"stopped while submitting to {provider.name}: {what}")
        jobs.write_record(store, job_id)
        if isinstance(exc, FtplanError):
            raise FtplanError(f"{what} (job {job_id} records where it stopped; nothing else was started).") from None
        raise
    job.state.update(ids)
    store.update(job_id, status="submitted", provider_ids=job.state, options=asdict(job.options))
    jobs.write_record(store, job_id)
    return job


def watch(store: JobStore, job_id: str, ui: UI, *, label: str, usd_per_hour: float, planned_usd: float | None,
          max_cost: float | None, poll: float = 0.5, live: bool = True) -> tuple[dict, str | None]:
    """Follow a job until it ends, drawing the live view. Returns (record, why watching ended early).

    SIGTERM or SIGHUP ask the run to checkpoint and stop (as `ftplan cancel`) and the view waits for
    it; Ctrl-C stops watching only. A run whose projected cost crosses --max-cost is cancelled.
    """
    from rich.live import Live

    from .progress import RunState, render

    state = RunState(job_id, label, usd_per_hour, planned_usd)
    for e in store.events(job_id):
        state.add(e)
    received: dict[str, str] = {}

    def on_signal(signum, frame) -> None:
        received.setdefault("signal", signal.Signals(signum).name)

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    asked = False
    drawing = live
    view = Live(render(state), console=ui.console, auto_refresh=False, transient=False)
    try:
        if drawing:
            view.start()
        while True:
            record, new, warning = jobs.sync(store, job_id)
            for e in new:
                state.add(e)
            state.warning = warning
            if record["status"] in TERMINAL:
                state.status = record["status"]
            elif received.get("signal") and not asked:
                asked = True
                state.messages.append(f"{received['signal']}: asked the run to checkpoint and stop (as ftplan cancel)")
                _cancel_quietly(store, job_id, state)
            elif max_cost is not None and not asked and (state.projected_usd or 0) > max_cost:
                asked = True
                received["signal"] = "max-cost"
                state.messages.append(f"projected ${state.projected_usd:,.2f} > --max-cost {max_cost:g}: cancelling "
                                      "(a checkpoint is written first where the provider can)")
                _cancel_quietly(store, job_id, state)
            if drawing:
                try:
                    view.update(render(state), refresh=True)
                except OSError:  # the terminal went away (SIGHUP): keep supervising without drawing
                    drawing = False
            if record["status"] in TERMINAL:
                return record, received.get("signal")
            time.sleep(poll)
    except KeyboardInterrupt:
        return store.get(job_id), "interrupt"
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        if drawing:
            try:
                view.stop()
                if not ui.console.is_terminal:  # rich ends the last line only on a terminal
                    ui.console.line()
            except OSError:
                pass


def _cancel_quietly(store: JobStore, job_id: str, state) -> None:
    try:
        jobs.cancel(store, job_id, wait=0)
    except FtplanError as exc:
        state.messages.append(f"cancel: {exc}")


def finish(store: JobStore, record: dict, ui: UI, provider: Provider, signal_name: str | None = None) -> int:
    """After the job ended: outputs into its folder, the eval gate where the run did not run it, the exit code."""
    job_id, status = record["id"], record["status"]
    curve = jobs.write_loss_curve(store, record)
    if curve:
        ui.say(f"loss curve: {curve}")
    if status == "completed":
        if provider.has_outputs:
            try:
                dest = jobs.pull(store, job_id)
            except FtplanError as exc:
                ui.warn(str(exc))
                return EXIT_FAILED
            ui.say(f"outputs: {dest}")
        else:
            ui.say(f"fine-tuned model: {(record.get('actuals') or {}).get('output')} (kept by {provider.name})")
        return _gate_after(store, store.get(job_id), ui)
    if status == "blocked":
        ui.warn("\n".join(gate_lines(record.get("eval"))))
        ui.warn(f"job {job_id}: the adapter is BLOCKED by the eval gate. It is kept in {record['output_dir']} but was "
                f"not merged or pushed; `ftplan eval {job_id}` shows the failed items.")
        return EXIT_FAILED
    if status == "cancelled":
        why = {"SIGTERM": "on SIGTERM", "SIGHUP": "on SIGHUP (the terminal closed)",
               "max-cost": "as its projected cost crossed --max-cost"}.get(signal_name or "", "")
        ui.warn(f"job {job_id} was cancelled{' ' + why if why else ''}; its checkpoints are kept in "
                f"{record['output_dir']}: `ftplan run {record.get('recipe_path')} --resume {job_id}` continues it.")
        return EXIT_CANCELLED
    ui.warn(f"job {job_id} failed: {record.get('error')}. Its folder {record['output_dir']} keeps what it wrote; "
            f"`ftplan run {record.get('recipe_path')} --resume {job_id}` continues from its last checkpoint where "
            "there is one.")
    return EXIT_FAILED


def _gate_after(store: JobStore, record: dict, ui: UI) -> int:
    """The eval gate for runs whose program did not run it (managed APIs): same golden set, same rules."""
    job = jobs.view(record)
    recipe = job.recipe
    if record.get("eval") is not None or recipe is None or not recipe.eval.golden or job.options.skip_eval:
        return EXIT_OK
    from .evaluation import evaluate_job

    try:
        result = evaluate_job(store, record)
    except FtplanError as exc:
        ui.warn(f"the eval gate did not run ({exc}); `ftplan eval {record['id']}` runs it.")
        return EXIT_OK
    if not result["passed"]:
        ui.warn("\n".join(gate_lines(result)))
        ui.warn(f"job {record['id']}: the model is BLOCKED by the eval gate.")
        return EXIT_FAILED
    ui.say("\n".join(gate_lines(result)))
    return EXIT_OK


def console_ui(yes: bool) -> UI:
    import click
    from rich.console import Console

    return UI(console=Console(), say=click.echo, warn=lambda m: click.echo(m, err=True),
              ask=lambda q, d: click.confirm(q, default=d), interactive=sys.stdin.isatty() and not yes)
