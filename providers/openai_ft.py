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
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from ftplan.recipes.schema import Recipe
from ftplan.sizing.datafile import BadRecord, iter_records
from ftplan.sizing.dataformat import as_messages, detect
from ftplan.sizing.errors import DataError, FtplanError
from ftplan.sizing.prices import PriceBook, load_prices, parse_date, today

from .base import Job, Quote
from .http import HTTPClient, api_key
from .remote import translate_remote

DEFAULT_BASE_URL = "https://api.openai.com/v1"
TERMINAL = {"succeeded": "completed", "cancelled": "cancelled", "failed": "failed"}
MIN_EXAMPLES = 10
METHODS = {"sft": "supervised", "distillation": "supervised", "dpo": "dpo", "grpo": "reinforcement"}


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


def prepare(source: str | Path, out_dir: Path, objective: str, split: str = "train",
            minimum: int = MIN_EXAMPLES) -> tuple[Path, int]:
    """OpenAI's JSONL for this objective (chat SFT, preference DPO, RFT prompts), checked first.

    Chat messages go as they are, `weight` included: OpenAI trains on assistant messages whose weight is
    1 (the default) and skips those with 0, which is how a conversation says which answers to learn.
    """
    if objective not in METHODS:
        raise DataError(f"OpenAI fine-tunes with SFT, DPO and reinforcement fine-tuning (GRPO recipes); not "
                        f"{objective}. Run it with --provider local or together.")
    _, word, records = iter_records(source, split)
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
    if n < minimum:
        path.unlink(missing_ok=True)
        raise DataError(f"{source}: {n} examples; OpenAI requires at least {minimum} (50+ recommended).")
    return path, n


def _explicit(section) -> set[str]:
    return set(section.model_fields_set)


def unsupported(recipe: Recipe) -> list[str]:
    """Recipe fields OpenAI cannot honour (it trains its own models its own way), with what to do instead."""
    m, hp = recipe.method, recipe.hyperparameters
    out = []
    if m.train_on_inputs:
        out.append("method.train_on_inputs: OpenAI trains on assistant messages only (a message's 'weight' 0 or 1 "
                   "picks which); set train_on_inputs: false")
    if m.adapter != "lora":
        out.append(f"method.adapter {m.adapter}: OpenAI chooses how it trains its models; leave adapter at lora "
                   "(recorded as managed)")
    if _explicit(m.lora):
        out.append(f"method.lora.{', method.lora.'.join(sorted(_explicit(m.lora)))}: OpenAI has no LoRA settings; "
                   "remove them for --provider openai")
    if "learning_rate" in _explicit(hp):
        out.append("hyperparameters.learning_rate: OpenAI takes a multiplier of its own rate, not a rate; remove it, "
                   "or set providers.openai.hyperparameters.learning_rate_multiplier")
    fixed = sorted(_explicit(hp) & {"lr_scheduler", "warmup_ratio", "weight_decay", "max_grad_norm", "max_seq_length",
                                    "packing", "optimizer", "precision"})
    if fixed:
        out.append(f"hyperparameters.{', hyperparameters.'.join(fixed)}: OpenAI sets these itself; remove them for "
                   "--provider openai (its batch size, epochs and learning-rate multiplier can be set)")
    if hp.epochs != int(hp.epochs):
        out.append(f"hyperparameters.epochs {hp.epochs:g}: OpenAI takes whole epochs; the nearest are "
                   f"{max(1, int(hp.epochs))} and {int(hp.epochs) + 1}")
    if hp.max_steps > 0:
        out.append(f"hyperparameters.max_steps {hp.max_steps}: OpenAI counts epochs; remove max_steps")
    if m.rpo_alpha is not None:
        out.append("method.rpo_alpha: OpenAI's DPO has no NLL term; remove it")
    if recipe.hardware.gpu or recipe.hardware.gpus:
        out.append("hardware.gpu/gpus: OpenAI chooses the hardware; remove the hardware pins for --provider openai")
    if recipe.output.merge or recipe.output.push_to_hub:
        out.append("output.merge/push_to_hub: the model stays at OpenAI; remove them for --provider openai")
    others = [t for t in recipe.output.report_to if t != "wandb"]
    if others:
        out.append(f"output.report_to {', '.join(others)}: OpenAI's only integration is Weights & Biases; keep wandb "
                   "or remove them")
    return out


def job_body(recipe: Recipe, file_id: str, ftplan_job: str, validation_file: str | None = None) -> dict:
    m, hp = recipe.method, recipe.hyperparameters
    kind = METHODS[m.objective]
    hyper: dict = {"n_epochs": max(1, int(hp.epochs))}
    if {"batch_size", "gradient_accumulation"} & _explicit(hp):
        hyper["batch_size"] = hp.batch_size * hp.gradient_accumulation  # examples per step, as locally
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
    body = {"model": recipe.model, "training_file": file_id, "suffix": f"ftplan-{ftplan_job}"[:64],
            "seed": hp.seed, "metadata": {"ftplan_job": ftplan_job}, "method": method, **extra}
    if "wandb" in recipe.output.report_to:
        # OpenAI's W&B integration (`integrations`, openai-openapi.yaml); the W&B key is set once in the
        # OpenAI organization's settings, not sent with the job.
        wandb = {"project": recipe.output.project or "ftplan"}
        if recipe.name:
            wandb["name"] = recipe.name
        body.setdefault("integrations", []).append({"type": "wandb", "wandb": wandb})
    if validation_file:
        body["validation_file"] = validation_file
    return body


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


class OpenAIProvider:
    name = "openai"
    summary = "OpenAI's fine-tuning API (legacy, its own models)"
    has_outputs = False  # the fine-tuned model stays at OpenAI: it is used (and evaluated) through its API

    def __init__(self, client: OpenAIClient | None = None):
        self._client = client
        self._prepared: tuple[Path, int] | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.warning = ""

    @contextmanager
    def client(self) -> Iterator[OpenAIClient]:
        c = self._client or OpenAIClient.from_env()
        try:
            yield c
        finally:
            if self._client is None:
                c.close()

    def chat_client(self) -> OpenAIClient:
        """For the eval gate: base and fine-tuned model answer through POST /chat/completions."""
        return self._client or OpenAIClient.from_env()

    def check_ready(self, recipe: Recipe) -> None:
        """The shutdown calendar, the key, OpenAI's format rules (checked here: a bad file is never uploaded)."""
        self.warning = calendar_check(load_prices(), recipe.model, today())  # raises after the cutoff
        api_key(OpenAIClient.env_key, OpenAIClient.provider, OpenAIClient.key_help)
        refused = unsupported(recipe)
        if refused:
            raise FtplanError("OpenAI cannot run this recipe as written: " + "; ".join(refused) +
                              ". Nothing was uploaded or charged.")
        job_body(recipe, "file-pending", "check")  # a GRPO recipe without a grader is refused here
        self._tmp = tempfile.TemporaryDirectory(prefix="ftplan-openai-")
        folder = Path(self._tmp.name)
        self._prepared = prepare(recipe.data.path, folder, recipe.method.objective)
        self._validation = None
        if recipe.data.eval_path:
            self._validation = prepare(recipe.data.eval_path, folder / "eval", recipe.method.objective,
                                       split="validation", minimum=1)
        elif recipe.data.eval_fraction:
            from .together_data import split_off

            (train, _, n), (val, _, k) = split_off((*self._prepared[:1], "chat", self._prepared[1]),
                                                   recipe.data.eval_fraction, recipe.hyperparameters.seed, folder)
            self._prepared, self._validation = (train, n), (val, k)

    def quote(self, recipe: Recipe, plan: dict | None) -> Quote:
        from ftplan.sizing.dataset import analyze

        book = load_prices()
        path, n = self._prepared
        tokens = analyze(path, seq_len=recipe.hyperparameters.max_seq_length).tokens_kept
        epochs = max(1, math.ceil(recipe.hyperparameters.epochs))
        usd = estimate_usd(book, recipe.model, tokens, epochs)
        lines = [self.warning, f"{n:,} examples, ~{tokens:,} tokens x {epochs} epochs" +
                 (f": about ${usd:,.2f} at OpenAI's per-token rate (characters-based count)" if usd is not None
                  else ": billed per hour of reinforcement training")]
        return Quote(usd, f"OpenAI's per-token rate ({book.apis['openai']['source']}, as of "
                     f"{book.apis['openai']['as_of']})", 0.0, None, lines, state={"estimated_usd": usd})

    def submit(self, job: Job, quote: Quote) -> dict:
        path, _ = self._prepared
        with self.client() as c:
            uploaded = c.upload(path)
            validation = c.upload(self._validation[0])["id"] if self._validation else None
            remote = c.create_job(job_body(job.recipe, uploaded["id"], job.id, validation))
        return {"remote_job": remote["id"], "file_id": uploaded["id"], "validation_file": validation,
                "objective": job.recipe.method.objective, "adapter": "managed"}

    def resume(self, job: Job, previous: Job, quote: Quote) -> dict:
        raise FtplanError("OpenAI's fine-tuning API cannot continue a job from its checkpoint; run the recipe without "
                          "--resume to start a new one (or fine-tune the earlier job's model further by naming it "
                          "as `model:`).")

    def poll(self, job: Job) -> list[dict]:
        rid = job.state.get("remote_job")
        if not rid:
            return []
        book = load_prices()
        with self.client() as c:
            remote, events = c.get_job(rid), c.events(rid)
            if remote.get("status") in TERMINAL:
                job.state["checkpoints"] = [{"step": x.get("step_number"), "path": x.get("fine_tuned_model_checkpoint")}
                                            for x in c.checkpoints(rid)]

        def final(remote: dict, state: dict) -> dict:
            return {"usd": actual_usd(book, remote), "trained_tokens": remote.get("trained_tokens"),
                    "output": remote.get("fine_tuned_model")}

        def failure(remote: dict, events: list[dict]) -> str | None:
            err = remote.get("error")
            return err.get("message") if isinstance(err, dict) else None

        return translate_remote(job, remote, events, backend="openai", reason="OpenAI managed fine-tuning (legacy)",
                                key=lambda e: e["id"], translate=translate, terminal=TERMINAL, final_fields=final,
                                failure=failure)

    def cancel(self, job: Job) -> None:
        rid = job.state.get("remote_job")
        if not rid:
            raise FtplanError(f"job {job.id} never reached OpenAI; nothing to cancel.")
        with self.client() as c:
            c.cancel(rid)

    def fetch_outputs(self, job: Job, dest: Path) -> None:
        return None
