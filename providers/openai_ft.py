"""Run a recipe on OpenAI's fine-tuning API (legacy: OpenAI is winding it down).

SFT (`method.type: supervised`), DPO and reinforcement fine-tuning (GRPO recipes, with the grader
from `providers.openai.grader`) on OpenAI's own models, as the published API defines them. The
shutdown calendar is data (`sizing/data/prices.json`): a warning until the cutoff, a refusal
after it that names the alternatives. Creation is idempotent: ftplan's job id travels in the
job's metadata and suffix, and `GET /fine_tuning/jobs?metadata[ftplan_job]=...` is asked before
any create and after a create whose answer was lost. Events and checkpoints are paginated with
`after`; the actual cost comes from `trained_tokens` (RFT: hours at the hourly rate).
"""

from __future__ import annotations

import json
import math
import os
from datetime import date
from pathlib import Path

from ftplan.recipes.schema import Recipe
from ftplan.sizing.datafile import BadRecord, iter_records
from ftplan.sizing.dataformat import as_messages, detect
from ftplan.sizing.errors import DataError, FtplanError
from ftplan.sizing.prices import PriceBook, load_prices, parse_date

from .http import HTTPClient
from .remote import poll_into_events

DEFAULT_BASE_URL = "https://api.openai.com/v1"
TERMINAL = {"succeeded": "completed", "cancelled": "cancelled", "failed": "failed"}
MIN_EXAMPLES = 10
METHODS = {"sft": "supervised", "distillation": "supervised", "dpo": "dpo", "grpo": "reinforcement"}


def today() -> date:
    """Today, or FTPLAN_TODAY (YYYY-MM-DD) to see what the calendar says on another day."""
    env = os.environ.get("FTPLAN_TODAY")
    return parse_date(env) if env else date.today()


def calendar_check(book: PriceBook, model: str, on: date) -> str:
    """The warning to show today; raises after the cutoff or for a model OpenAI no longer tunes."""
    oa = book.apis["openai"]
    cutoff = parse_date(oa["no_new_jobs_after"])
    alternatives = ("fine-tune an open model instead: --provider together (managed), --provider local, or Modal; "
                    "`ftplan estimate DATA --model M` compares them")
    if on > cutoff:
        raise FtplanError(f"OpenAI stopped accepting new fine-tuning jobs after {oa['no_new_jobs_after']} (its "
                          f"shutdown calendar); {alternatives}.")
    known = {**oa["models"], **oa["rft_usd_per_hour"]}
    if model not in known:
        raise FtplanError(f"{model} is not an OpenAI model ftplan can fine-tune; choose one of {', '.join(known)}.")
    retired = oa.get("retired", {}).get(model)
    if retired and on >= parse_date(retired):
        raise FtplanError(f"OpenAI retired {model} on {retired}; choose another model or {alternatives}.")
    return (f"OpenAI fine-tuning is legacy: no new jobs after {oa['no_new_jobs_after']}, and fine-tuned models "
            f"shut down {oa['models_shut_down']}. Prefer an open model you can keep.")


class OpenAIClient(HTTPClient):
    provider = "OpenAI"
    hints = {
        400: "Fix the request or the data as the message says.",
        401: "Check OPENAI_API_KEY (platform.openai.com/api-keys).",
        403: "This organisation may no longer create fine-tuning jobs (OpenAI is winding the platform down).",
        404: "Check the model or job id.",
        429: "Rate limited or over quota even after retries; check your usage limits.",
    }

    env_key, env_base, default_base = "OPENAI_API_KEY", "OPENAI_BASE_URL", DEFAULT_BASE_URL
    key_help = "platform.openai.com/api-keys"

    def find_file(self, name: str, size: int) -> dict | None:
        files = self.json("GET", "/files", params={"purpose": "fine-tune"}).get("data", [])
        return next((f for f in files if f.get("filename") == name and f.get("bytes") == size), None)

    def upload(self, path: Path) -> dict:
        size = path.stat().st_size

        def send() -> dict:
            with path.open("rb") as fh:
                return self.json("POST", "/files", retry=False, data={"purpose": "fine-tune"},
                                 files={"file": (path.name, fh, "application/jsonl")})

        return self.once(lambda: self.find_file(path.name, size), send)

    def find_job(self, ftplan_job: str) -> dict | None:
        jobs = self.json("GET", "/fine_tuning/jobs", params={"metadata[ftplan_job]": ftplan_job, "limit": 10})
        return next((j for j in jobs.get("data", []) if (j.get("metadata") or {}).get("ftplan_job") == ftplan_job),
                    None)

    def create_job(self, body: dict) -> dict:
        """One job per ftplan job: its id is in the metadata, looked up before and after a lost answer."""
        return self.once(lambda: self.find_job(body["metadata"]["ftplan_job"]),
                         lambda: self.json("POST", "/fine_tuning/jobs", json=body, retry=False))

    def _pages(self, path: str, limit: int = 20) -> list[dict]:
        items, after = [], None
        while True:
            params = {"limit": limit, **({"after": after} if after else {})}
            page = self.json("GET", path, params=params)
            items += page.get("data", [])
            if not page.get("has_more") or not page.get("data"):
                return items
            after = page["data"][-1]["id"]

    def get_job(self, job_id: str) -> dict:
        return self.json("GET", f"/fine_tuning/jobs/{job_id}")

    def events(self, job_id: str) -> list[dict]:
        """All events, oldest first (the API pages newest first)."""
        return sorted(self._pages(f"/fine_tuning/jobs/{job_id}/events"), key=lambda e: (e["created_at"], e["id"]))

    def checkpoints(self, job_id: str) -> list[dict]:
        return self._pages(f"/fine_tuning/jobs/{job_id}/checkpoints", limit=10)

    def cancel(self, job_id: str) -> dict:
        return self.json("POST", f"/fine_tuning/jobs/{job_id}/cancel")


def prepare(source: str | Path, out_dir: Path, objective: str) -> tuple[Path, int]:
    """OpenAI's JSONL for this objective (chat SFT, preference DPO, RFT prompts), checked first."""
    if objective not in METHODS:
        raise DataError(f"OpenAI fine-tunes with SFT, DPO and reinforcement fine-tuning (GRPO recipes); not "
                        f"{objective}. Run it with --provider local or together.")
    _, word, records = iter_records(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"openai-{METHODS[objective]}.jsonl"
    problems, n = [], 0
    with path.open("w", encoding="utf-8") as fh:
        for loc, rec in records:
            fmt = None if isinstance(rec, BadRecord) else detect(rec)
            key = fmt.key if fmt else None
            if objective == "dpo" and key in ("preference", "openai_preference"):
                if key == "openai_preference":
                    row = {k: rec[k] for k in ("input", "preferred_output", "non_preferred_output")}
                else:
                    row = {"input": {"messages": as_messages(rec["prompt"], "user")},
                           "preferred_output": as_messages(rec["chosen"], "assistant")[-1:],
                           "non_preferred_output": as_messages(rec["rejected"], "assistant")[-1:]}
            elif objective in ("sft", "distillation") and key in ("messages", "prompt_completion"):
                row = {"messages": rec["messages"]} if key == "messages" else {
                    "messages": as_messages(rec["prompt"], "user") + as_messages(rec["completion"], "assistant")}
            elif objective == "grpo" and key in ("prompt_only", "prompt_completion"):
                row = {**{k: v for k, v in rec.items() if k not in ("prompt", "completion")},
                       "messages": as_messages(rec["prompt"], "user")}
            else:
                what = rec.reason if isinstance(rec, BadRecord) else (fmt.description if fmt else "no known format")
                problems.append(f"{word} {loc}: {what} does not fit OpenAI's {METHODS[objective]} format")
                if len(problems) > 20:
                    break
                continue
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    if problems:
        path.unlink(missing_ok=True)
        raise DataError(f"{source}: not uploaded: " + "; ".join(problems[:5]) +
                        (f"; and {len(problems) - 5} more" if len(problems) > 5 else "") + ".")
    if n < MIN_EXAMPLES:
        path.unlink(missing_ok=True)
        raise DataError(f"{source}: {n} examples; OpenAI requires at least {MIN_EXAMPLES} (50+ recommended).")
    return path, n


def job_body(recipe: Recipe, file_id: str, ftplan_job: str) -> dict:
    m, hp = recipe.method, recipe.hyperparameters
    kind = METHODS[m.objective]
    hyper: dict = {"n_epochs": max(1, math.ceil(hp.epochs))}
    extra = dict(recipe.providers.get("openai", {}))
    grader = extra.pop("grader", None)
    hyper.update(extra.pop("hyperparameters", {}))
    if kind == "dpo":
        hyper["beta"] = m.beta
    method: dict = {"type": kind, kind: {"hyperparameters": hyper}}
    if kind == "reinforcement":
        if not grader:
            raise FtplanError("reinforcement fine-tuning on OpenAI needs providers.openai.grader in the recipe "
                              "(e.g. {type: string_check, name: exact, input: '{{sample.output_text}}', "
                              "reference: '{{item.answer}}', operation: eq}).")
        method[kind]["grader"] = grader
    return {"model": recipe.model, "training_file": file_id, "suffix": f"ftplan-{ftplan_job}"[:64],
            "seed": hp.seed, "metadata": {"ftplan_job": ftplan_job}, "method": method, **extra}


def estimate_usd(book: PriceBook, model: str, tokens: int, epochs: int) -> float | None:
    rate = book.apis["openai"]["models"].get(model)
    return None if rate is None else tokens * epochs / 1e6 * rate


def actual_usd(book: PriceBook, remote: dict) -> float | None:
    oa = book.apis["openai"]
    model = remote.get("model")
    if model in oa["rft_usd_per_hour"] and remote.get("finished_at") and remote.get("created_at"):
        hours = (remote["finished_at"] - remote["created_at"]) / 3600  # an upper bound: queue time is not billed
        return round(hours * oa["rft_usd_per_hour"][model], 2)
    if remote.get("trained_tokens") is not None and model in oa["models"]:
        return round(remote["trained_tokens"] / 1e6 * oa["models"][model], 4)
    return None


def translate(e: dict) -> tuple[str, dict]:
    data = e.get("data") or {}
    base = {"source": "openai", "remote_id": e.get("id"), "message": e.get("message", "")}
    if e.get("type") == "metrics" and "step" in data:
        return "step", {**base, "step": data["step"], "total": data.get("total_steps", 0),
                        "loss": data.get("train_loss"), "tokens_per_second": None}
    return "log", {**base, "level": {"warn": "warning"}.get(e.get("level"), e.get("level", "info"))}


def poll(store, job: dict, client: OpenAIClient | None = None) -> None:
    if not job["provider_ids"].get("remote_job") or not job.get("events_path"):
        return
    book = load_prices()

    def fetch(ids: dict) -> tuple[dict, list[dict]]:
        c = client or OpenAIClient.from_env()
        try:
            return c.get_job(ids["remote_job"]), c.events(ids["remote_job"])
        finally:
            if client is None:
                c.close()

    def final(remote: dict, ids: dict) -> dict:
        return {"usd": actual_usd(book, remote), "trained_tokens": remote.get("trained_tokens"),
                "output": remote.get("fine_tuned_model")}

    poll_into_events(store, job, backend="openai", reason="OpenAI managed fine-tuning (legacy)", fetch=fetch,
                     key=lambda e: e["id"], translate=translate, terminal=TERMINAL, final_fields=final)


def cancel(job: dict, client: OpenAIClient | None = None) -> dict:
    rid = job["provider_ids"].get("remote_job")
    if not rid:
        raise FtplanError(f"job {job['id']} never reached OpenAI (it stopped at: {job.get('error')}).")
    c = client or OpenAIClient.from_env()
    try:
        return c.cancel(rid)
    finally:
        if client is None:
            c.close()
