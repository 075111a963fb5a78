"""`ftplan run` for the local provider: plan, ask, start, watch; and the helpers `status`/`logs`/`cancel` use.

Money is never spent without a shown estimate and a yes (or `--yes`), and never past
`--max-cost`: the plan is refused up front when it costs more, and a run whose projection
crosses the limit is cancelled (it checkpoints first).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from ftplan.providers import local as local_provider
from ftplan.recipes.schema import Recipe
from ftplan.sizing.errors import FtplanError

from .follow import sync
from .jobstore import TERMINAL, JobStore


def recipe_plan(recipe: Recipe, local=None, prices=None):
    """The planner's answer for a recipe (same as `ftplan estimate DATA` with the recipe's settings)."""
    from ftplan.sizing.planner import plan_for_data
    from ftplan.sizing.setup import TrainingSetup

    if recipe.method.objective == "merge":
        return None
    hp, m = recipe.hyperparameters, recipe.method
    setup = TrainingSetup(
        adapter=m.adapter, lora_rank=m.lora.rank, lora_alpha=m.lora.effective_alpha, lora_targets=m.lora.targets,
        lora_dropout=m.lora.dropout,
        seq_len=hp.max_seq_length, micro_batch_size=hp.batch_size, grad_accum=hp.gradient_accumulation,
        gradient_checkpointing=hp.gradient_checkpointing, optimizer=hp.optimizer,
        precision="bf16" if hp.precision == "bf16" else hp.precision,
    )
    gpus = {recipe.hardware.gpu} if recipe.hardware.gpu else None
    counts = {recipe.hardware.gpus} if recipe.hardware.gpus else None
    if gpus:
        from ftplan.sizing.gpus import get_gpu

        gpus = {get_gpu(g).name for g in gpus}
    result = plan_for_data(
        recipe.data.path, recipe.model, setup=setup, method=m.objective, adapter=m.adapter, lora_rank=m.lora.rank,
        lora_alpha=m.lora.effective_alpha, epochs=max(1, math.ceil(hp.epochs)), packing=hp.packing,
        verifier=",".join(m.rewards) or None, gpus=gpus, counts=counts, local=local, prices=prices,
        group_size=m.num_generations, completion_len=m.max_completion_length, split=recipe.data.split,
        precompute_ref=m.precompute_ref and m.objective in ("dpo", "kto"),
        teacher=m.teacher if m.objective == "distillation" and m.generate_with_teacher else None,
    )
    # The plan shows what the recipe will run, not what the playbook would have picked.
    choice = result.method
    choice.learning_rate, choice.scheduler, choice.warmup_ratio = hp.learning_rate, hp.lr_scheduler, hp.warmup_ratio
    choice.lora_targets = m.lora.targets
    choice.reasons = [f"{m.objective} with {m.adapter} and the hyperparameters as the recipe sets them"] + [
        r for r in choice.reasons if "->" in r]
    return result


def start_local(store: JobStore, recipe_path: str, recipe: Recipe, *, plan: dict | None, usd_per_hour: float,
                resume_job: str | None = None, skip_eval: bool = False) -> str:
    out = Path(recipe.output.dir).resolve()
    if resume_job:
        old = store.get(resume_job)
        out = Path(old["output_dir"])
    events = out / "events.jsonl"
    job_id = store.create("local", recipe_path=str(Path(recipe_path).resolve()), recipe_hash=recipe.digest(),
                          name=recipe.name or Path(recipe_path).stem, plan=plan, output_dir=str(out),
                          events_path=str(events), status="submitted")
    # A resumed run appends to the same events file: start reading at its current end.
    if events.exists():
        store.update(job_id, events_offset=events.stat().st_size)
    extra = ["--skip-eval"] if skip_eval else []
    if recipe.eval.golden and not skip_eval:
        from ftplan.recipes.golden import file_sha256

        # Frozen now: the hash travels with the job, and the program refuses a set changed since.
        sha = store.get(resume_job)["golden_sha256"] if resume_job else file_sha256(recipe.eval.golden)
        store.update(job_id, golden_sha256=sha)
        extra += ["--golden-sha256", sha]
    store.update(job_id, skip_eval=int(skip_eval))
    pid = local_provider.submit(str(Path(recipe_path).resolve()), out, events, plan=plan, usd_per_hour=usd_per_hour,
                                resume=bool(resume_job), gpus=recipe.hardware.gpus or 1,
                                distributed=recipe.hardware.distributed, extra=extra)
    store.merge_provider_ids(job_id, pid=pid, usd_per_hour=usd_per_hour)
    return job_id


def cancel_job(store: JobStore, job_id: str, wait: float = 0.0) -> dict:
    """Ask the job to stop (local: checkpoint, then stop; remote: the provider's cancel) and wait up to `wait` s."""
    job, _ = sync(store, job_id)
    if job["status"] in TERMINAL:
        raise FtplanError(f"job {job['id']} has already ended ({job['status']}); nothing to cancel.")
    if job["provider"] == "local":
        if not local_provider.cancel(job["provider_ids"].get("pid")):
            return sync(store, job_id)[0]  # it had already exited: its final state says how
    else:
        from ftplan.providers import modal_app, openai_ft, together

        {"together": together, "openai": openai_ft, "modal": modal_app}[job["provider"]].cancel(job)
    store.update(job["id"], status="cancelling")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        job, _ = sync(store, job["id"])
        if job["status"] in TERMINAL:
            break
        time.sleep(0.2)
    return store.get(job["id"])


def watch(store: JobStore, job_id: str, *, label: str, usd_per_hour: float, planned_usd: float | None,
          max_cost: float | None, console, live: bool = True, poll: float = 0.5) -> dict:
    """Follow a job until it ends, drawing the live view; Ctrl-C stops watching, not the job."""
    from rich.live import Live

    from .progress import RunState, render

    state = RunState(job_id, label, usd_per_hour, planned_usd)
    for e in store.events(job_id):
        state.add(e)
    stopped_for_cost = False
    try:
        with Live(render(state), console=console, refresh_per_second=4, transient=False, auto_refresh=live) as view:
            while True:
                job, new = sync(store, job_id)
                for e in new:
                    state.add(e)
                if job["status"] in TERMINAL:
                    state.status = job["status"]
                    view.update(render(state), refresh=True)
                    break
                proj = state.projected_usd
                if max_cost is not None and proj is not None and proj > max_cost and not stopped_for_cost:
                    stopped_for_cost = True
                    state.messages.append(f"projected ${proj:,.2f} > --max-cost {max_cost:g}: cancelling "
                                          "(a checkpoint is written first)")
                    cancel_job(store, job_id)
                view.update(render(state), refresh=True)
                time.sleep(poll)
    except KeyboardInterrupt:
        console.print(f"Stopped watching; job {job_id} keeps running. Follow it with `ftplan logs {job_id} "
                      f"--follow`, stop it with `ftplan cancel {job_id}`.")
    return store.get(job_id)


def record_actuals(store: JobStore, job: dict) -> None:
    """Predicted vs actual for a finished GPU run: what `ftplan estimate` uses to correct its speed."""
    plan, actual = job.get("plan") or {}, job.get("actuals") or {}
    local = (plan or {}).get("local") or {}
    if job["status"] != "completed" or not local.get("gpu") or not actual.get("tokens_per_second"):
        return
    store.record_measurement(local["gpu"], job["id"], local.get("tokens_per_second"), actual["tokens_per_second"],
                             local.get("per_gpu_bytes"), actual.get("peak_memory_bytes"))


def format_event(e: dict) -> str:
    t = time.strftime("%H:%M:%S", time.localtime(e.get("time", 0)))
    kind = e.get("type")
    if kind == "step":
        tps = e.get("tokens_per_second")
        return (f"{t} step {e.get('step')}/{e.get('total')} loss {e.get('loss', float('nan')):.4f} "
                f"lr {e.get('lr') or 0:.3g}" + (f" {tps:,.0f} tok/s" if tps else ""))
    if kind == "checkpoint":
        return f"{t} checkpoint step {e.get('step')}: {e.get('path')}"
    if kind == "eval":
        return f"{t} eval " + ", ".join(f"{k}={v:.4g}" for k, v in e.items()
                                        if k.startswith("eval_") and isinstance(v, (int, float)))
    if kind == "started":
        return f"{t} started {e.get('objective')} ({e.get('adapter')}) on {e.get('device')}, backend " \
               f"{e.get('backend')}: {e.get('backend_reason')}"
    if kind == "finished":
        return f"{t} finished: {e.get('status')}" + (f" -> {e.get('output')}" if e.get("output") else "")
    if kind == "failed":
        return f"{t} FAILED: {e.get('error')}"
    if kind == "cost":
        return f"{t} cost so far ${e.get('usd', 0):,.4f}"
    return f"{t} {kind}: {e.get('message') or e.get('values') or ''}"


class _Stage:
    """Where a remote submission is, so a failure can say where it stopped."""

    def __init__(self) -> None:
        self.now = "preparing"


def _submit_remote(store: JobStore, provider: str, recipe_path: str, recipe: Recipe, steps) -> str | None:
    """Run `steps(job_id, stage)` with a job record that exists from the first step and records any failure."""
    from ftplan.providers.http import APIError

    out = Path(recipe.output.dir).resolve()
    job_id = store.create(provider, recipe_path=str(Path(recipe_path).resolve()), recipe_hash=recipe.digest(),
                          name=recipe.name or Path(recipe_path).stem, output_dir=str(out),
                          events_path=str(out / "events.jsonl"), status="preparing")
    stage = _Stage()
    try:
        ids = steps(job_id, stage, out)
    except (APIError, FtplanError) as exc:
        store.update(job_id, status="failed", error=f"stopped while {stage.now}: {exc}")
        raise
    if ids is None:
        store.update(job_id, status="cancelled", error="declined before creating the job")
        return None
    store.update(job_id, status="submitted", provider_ids=ids)
    return job_id


def _price_gate(quote: float | None, max_cost: float | None, yes: bool, confirm, what: str) -> bool:
    if max_cost is not None and quote is not None and quote > max_cost:
        raise FtplanError(f"{what} is ${quote:,.2f}, above --max-cost {max_cost:g}; no job was created.")
    price = f" for ${quote:,.2f}" if quote is not None else ""
    return yes or confirm(f"Create the job{price}?")


def start_together(store: JobStore, recipe_path: str, recipe: Recipe, *, ftplan_usd: float | None, yes: bool,
                   max_cost: float | None, confirm, say, client=None) -> str | None:
    """Prepare, upload, check limits, price, ask, and create the Together job (exactly once)."""
    from ftplan.providers import together
    from ftplan.providers.together_data import prepare

    def steps(job_id: str, stage: _Stage, out: Path) -> dict | None:
        c = client or together.TogetherClient.from_env()
        try:
            stage.now = "converting the data"
            path, kind, n = prepare(recipe.data.path, out, recipe.method.objective)
            stage.now = "uploading the data"
            uploaded = c.upload(path)
            say(f"uploaded {path.name} ({n:,} {kind} examples) as {uploaded['id']}")
            body = together.job_body(recipe, uploaded["id"], f"ftplan-{job_id}")
            stage.now = "checking the model's limits"
            problems = together.limit_problems(recipe, body, c.limits(recipe.model))
            if problems:
                raise FtplanError(f"{recipe_path}: outside Together's limits for {recipe.model}: " +
                                  "; ".join(problems) + ". Change the recipe and run again; nothing was charged.")
            stage.now = "asking Together for a price"
            est = c.estimate_price({k: body[k] for k in ("training_file", "model", "n_epochs", "n_evals",
                                                         "training_method", "training_type")})
            quote = est.get("estimated_total_price")
            ours = f"${ftplan_usd:,.2f}" if ftplan_usd is not None else "n/a"
            say(f"price: Together quotes ${quote:,.2f} for {est.get('estimated_train_token_count', 0):,.0f} training "
                f"tokens; ftplan estimated {ours}.")
            store.update(job_id, plan={"together_quote_usd": quote, "ftplan_usd": ftplan_usd,
                                       "train_tokens": est.get("estimated_train_token_count")})
            if est.get("allowed_to_proceed") is False:
                raise FtplanError(f"Together will not start this job: the quote ${quote:,.2f} is above your limit "
                                  f"(${est.get('user_limit', 0):,.2f}). Add credits or shrink the job.")
            if not _price_gate(quote, max_cost, yes, confirm, "Together's quote"):
                return None
            stage.now = "creating the job"
            remote = c.create_job(body)
            say(f"Together job {remote['id']} created (ftplan job {job_id})")
            return {"ft_id": remote["id"], "file_id": uploaded["id"], "suffix": body["suffix"],
                    "estimated_usd": quote, "objective": recipe.method.objective, "adapter": recipe.method.adapter}
        finally:
            if client is None:
                c.close()

    return _submit_remote(store, "together", recipe_path, recipe, steps)


def start_openai(store: JobStore, recipe_path: str, recipe: Recipe, *, yes: bool, max_cost: float | None, confirm,
                 say, client=None) -> str | None:
    """Calendar check, convert, upload, price by OpenAI's per-token rate, ask, create once."""
    from ftplan.providers import openai_ft
    from ftplan.sizing.dataset import analyze
    from ftplan.sizing.prices import load_prices

    book = load_prices()
    say(openai_ft.calendar_check(book, recipe.model, openai_ft.today()))  # raises after the cutoff

    def steps(job_id: str, stage: _Stage, out: Path) -> dict | None:
        c = client or openai_ft.OpenAIClient.from_env()
        try:
            stage.now = "converting the data"
            path, n = openai_ft.prepare(recipe.data.path, out, recipe.method.objective)
            body = openai_ft.job_body(recipe, "file-pending", job_id)
            tokens = analyze(path, seq_len=recipe.hyperparameters.max_seq_length).tokens_kept
            epochs = body["method"][body["method"]["type"]]["hyperparameters"]["n_epochs"]
            quote = openai_ft.estimate_usd(book, recipe.model, tokens, epochs)
            say(f"{n:,} examples, ~{tokens:,} tokens x {epochs} epochs" +
                (f": about ${quote:,.2f} at OpenAI's per-token rate (characters-based count)" if quote is not None
                 else ": billed per hour of reinforcement training"))
            store.update(job_id, plan={"ftplan_usd": quote, "train_tokens": tokens * epochs})
            if not _price_gate(quote, max_cost, yes, confirm, "the estimate"):
                return None
            stage.now = "uploading the data"
            uploaded = c.upload(path)
            body["training_file"] = uploaded["id"]
            stage.now = "creating the job"
            remote = c.create_job(body)
            say(f"OpenAI job {remote['id']} created (ftplan job {job_id})")
            return {"remote_job": remote["id"], "file_id": uploaded["id"], "estimated_usd": quote,
                    "objective": recipe.method.objective, "adapter": "managed"}
        finally:
            if client is None:
                c.close()

    return _submit_remote(store, "openai", recipe_path, recipe, steps)


def download_outputs(store: JobStore, job: dict, client=None) -> Path | None:
    """Fetch the finished Together adapter into the job's output folder."""
    if job["provider"] != "together" or job["status"] != "completed":
        return None
    from ftplan.providers import together

    own = client is None
    client = client or together.TogetherClient.from_env()
    try:
        dest = client.download(job["provider_ids"]["ft_id"], Path(job["output_dir"]) / "adapter.tar.zst")
    finally:
        if own:
            client.close()
    store.merge_provider_ids(job["id"], downloaded=str(dest))
    return dest
