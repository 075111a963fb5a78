"""Run a recipe on Together AI's fine-tuning API.

Flow: the data is converted and checked locally (`together_data`), uploaded once (the file name
carries its content hash, so a retried upload reuses the earlier one), checked against
`/fine-tunes/models/limits`, priced with `/fine-tunes/estimate-price` (shown beside ftplan's own
estimate), then the job is created, idempotently: ftplan's job id travels in the `suffix`, and
an existing job with it is looked up before any create, and again after any create whose answer
was lost. `poll()` turns Together's job status and events into ftplan events, once each.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftplan.recipes.schema import Recipe
from ftplan.sizing.errors import FtplanError

from .archive import unpack
from .base import Job, Quote
from .http import HTTPClient, api_key
from .remote import translate_remote
from .together_data import prepare, split_off

DEFAULT_BASE_URL = "https://api.together.xyz/v1"
TERMINAL = {"completed": "completed", "cancelled": "cancelled", "error": "failed", "user_error": "failed"}


class TogetherClient(HTTPClient):
    provider = "Together"
    hints = {
        400: "Fix the request as the message says (ftplan sends the recipe's settings).",
        401: "Check TOGETHER_API_KEY (api.together.ai/settings/api-keys).",
        402: "Add credits or raise the limit at api.together.ai/settings/billing.",
        404: "Check the model name against GET /fine-tunes/models/supported, or the job id.",
        429: "Rate limited even after retries with backoff; wait a minute and run again.",
    }

    env_key, env_base, default_base = "TOGETHER_API_KEY", "TOGETHER_BASE_URL", DEFAULT_BASE_URL
    key_help = "api.together.ai/settings/api-keys"

    def find_file(self, name: str, size: int) -> dict | None:
        for f in self.json("GET", "/files").get("data", []):
            if f.get("filename") == name and f.get("bytes") == size:
                return f
        return None

    def upload(self, path: Path) -> dict:
        """Upload once: a file with the same content-hashed name and size is reused, even after a dropped upload."""
        size = path.stat().st_size

        def send() -> dict:
            with path.open("rb") as fh:
                return self.json("POST", "/files/upload", retry=False,
                                 files={"file": (path.name, fh, "application/octet-stream")},
                                 data={"file_name": path.name, "purpose": "fine-tune", "file_type": "jsonl"})

        return self.once(lambda: self.find_file(path.name, size), send)

    def limits(self, model: str) -> dict:
        return self.json("GET", "/fine-tunes/models/limits", params={"model_name": model})

    def estimate_price(self, body: dict) -> dict:
        return self.json("POST", "/fine-tunes/estimate-price", json=body)

    def find_job(self, suffix: str) -> dict | None:
        for job in self.json("GET", "/fine-tunes").get("data", []):
            if job.get("suffix") == suffix or suffix in (job.get("model_output_name") or ""):
                return job
        return None

    def create_job(self, body: dict) -> dict:
        """Exactly one job per suffix: looked up before creating, and again after a create whose answer was lost."""
        return self.once(lambda: self.find_job(body["suffix"]),
                         lambda: self.json("POST", "/fine-tunes", json=body, retry=False))

    def get_job(self, ft_id: str) -> dict:
        return self.json("GET", f"/fine-tunes/{ft_id}")

    def events(self, ft_id: str) -> list[dict]:
        return self.json("GET", f"/fine-tunes/{ft_id}/events").get("data", [])

    def checkpoints(self, ft_id: str) -> list[dict]:
        return self.json("GET", f"/fine-tunes/{ft_id}/checkpoints").get("data", [])

    def cancel(self, ft_id: str) -> dict:
        return self.json("POST", f"/fine-tunes/{ft_id}/cancel")

    def download(self, ft_id: str, dest: Path, checkpoint: str = "adapter") -> Path:
        return super().download("/finetune/download", dest, params={"ft_id": ft_id, "checkpoint": checkpoint})


# HF scheduler -> Together's (lr_scheduler_type, lr_scheduler_args). Together has linear and cosine; a constant
# rate is linear to min_lr_ratio 1.0. HF's cosine decays to 0 over half a cycle (the SDK's num_cycles default 0.5).
SCHEDULERS = {"cosine": ("cosine", {"min_lr_ratio": 0.0, "num_cycles": 0.5}),
              "linear": ("linear", {"min_lr_ratio": 0.0}),
              "constant": ("linear", {"min_lr_ratio": 1.0}),
              "constant_with_warmup": ("linear", {"min_lr_ratio": 1.0})}


def effective_batch(recipe: Recipe) -> int:
    """Together's batch_size: examples per optimizer step, as a local run takes them (micro x accumulation x GPUs)."""
    hp = recipe.hyperparameters
    return hp.batch_size * hp.gradient_accumulation * (recipe.hardware.gpus or 1)


def module_names(recipe: Recipe) -> str:
    """The recipe's LoRA targets as Together's lora_trainable_modules: 'all-linear' or the model's module names."""
    from ftplan.sizing.memory import is_all_linear, targeted_linears

    spec = recipe.method.lora.targets
    if is_all_linear(spec):
        return "all-linear"
    from ftplan.recipes.preflight import architecture

    arch = architecture(recipe)
    if arch is None:
        return ",".join(t.strip() for t in spec.split(",") if t.strip())
    return ",".join(sorted({lin.leaf for lin in targeted_linears(arch, spec) if not lin.param}))


def unsupported(recipe: Recipe) -> list[str]:
    """Recipe fields Together cannot honour, each with the nearest setting it has (checked before any upload)."""
    m, hp = recipe.method, recipe.hyperparameters
    out = []
    if m.adapter in ("qlora", "dora"):
        out.append(f"method.adapter {m.adapter}: Together trains LoRA or full models; the nearest is lora")
    if m.objective == "distillation" and m.generate_with_teacher:
        out.append("method.generate_with_teacher: Together trains on the completions in the file; write them with "
                   "the teacher first (ftplan run ... --provider local), or set generate_with_teacher: false")
    if hp.epochs != int(hp.epochs):
        out.append(f"hyperparameters.epochs {hp.epochs:g}: Together takes whole epochs; the nearest are "
                   f"{max(1, int(hp.epochs))} and {int(hp.epochs) + 1}")
    if hp.max_steps > 0:
        out.append(f"hyperparameters.max_steps {hp.max_steps}: Together counts epochs, not steps; remove max_steps and "
                   "set epochs")
    if hp.optimizer != "adamw":
        out.append(f"hyperparameters.optimizer {hp.optimizer}: Together chooses its own optimizer; use adamw")
    if hp.precision != "bf16":
        out.append(f"hyperparameters.precision {hp.precision}: Together trains in bf16; use bf16")
    if recipe.hardware.gpu or recipe.hardware.gpus:
        out.append("hardware.gpu/gpus: Together chooses the hardware; remove the hardware pins for --provider together")
    if recipe.output.push_to_hub and not os.environ.get("HF_TOKEN"):
        out.append("output.push_to_hub: Together pushes with your Hugging Face token; export HF_TOKEN=hf_...")
    others = [t for t in recipe.output.report_to if t != "wandb"]
    if others:
        out.append(f"output.report_to {', '.join(others)}: Together reports to Weights & Biases only; keep wandb or "
                   "remove them")
    if "wandb" in recipe.output.report_to and not os.environ.get("WANDB_API_KEY"):
        out.append("output.report_to wandb: Together logs to W&B with your key; export WANDB_API_KEY=...")
    return out


def job_body(recipe: Recipe, file_id: str, suffix: str, validation_file: str | None = None) -> dict:
    """The POST /fine-tunes body for a recipe, field by field as Together's SDK builds it (create_finetune_request)."""
    m, hp = recipe.method, recipe.hyperparameters
    if m.objective in ("dpo", "simpo"):
        method = {"method": "dpo", "dpo_beta": m.beta}
        if m.objective == "simpo":
            method.update(simpo_gamma=m.simpo_gamma, dpo_reference_free=True, dpo_normalize_logratios_by_length=True)
        if m.rpo_alpha is not None:
            method["rpo_alpha"] = m.rpo_alpha
    else:
        # Loss on completions and assistant turns unless the recipe trains on inputs too (same meaning locally).
        method = {"method": "sft", "train_on_inputs": m.train_on_inputs}
    if m.adapter == "full":
        training_type = {"type": "Full"}
    else:
        training_type = {"type": "Lora", "lora_r": m.lora.rank, "lora_alpha": m.lora.effective_alpha,
                         "lora_dropout": m.lora.dropout, "lora_trainable_modules": module_names(recipe)}
    kind, args = SCHEDULERS[hp.lr_scheduler]
    body = {
        "training_file": file_id, "model": recipe.model, "n_epochs": max(1, int(hp.epochs)),
        "n_checkpoints": recipe.checkpoint.keep, "n_evals": 0, "learning_rate": hp.learning_rate,
        "lr_scheduler": {"lr_scheduler_type": kind, "lr_scheduler_args": dict(args)},
        "warmup_ratio": 0.0 if hp.lr_scheduler == "constant" else hp.warmup_ratio,
        "max_grad_norm": hp.max_grad_norm, "weight_decay": hp.weight_decay, "random_seed": hp.seed, "suffix": suffix,
        "max_seq_length": hp.max_seq_length, "packing": hp.packing, "batch_size": effective_batch(recipe),
        "training_method": method, "training_type": training_type,
    }
    if validation_file:
        # Local runs evaluate once an epoch (eval_strategy "epoch"); Together's n_evals spreads that many evals.
        body.update(validation_file=validation_file, n_evals=body["n_epochs"])
    if recipe.output.push_to_hub:
        body.update(hf_output_repo_name=recipe.output.push_to_hub, hf_api_token=os.environ.get("HF_TOKEN", ""))
    if "wandb" in recipe.output.report_to:
        # Together's own W&B integration (POST /fine-tunes wandb_* fields): the run's name and project as locally.
        body.update(wandb_api_key=os.environ.get("WANDB_API_KEY", ""))
        if recipe.output.project:
            body["wandb_project_name"] = recipe.output.project
        if recipe.name:
            body["wandb_name"] = recipe.name
    body.update(recipe.providers.get("together", {}))  # provider-only knobs (wandb_base_url, n_checkpoints, ...)
    return body


def limit_problems(recipe: Recipe, body: dict, limits: dict) -> list[str]:
    """What the recipe must change to fit the model's limits (empty: fits)."""
    out = []
    m = recipe.method
    section = limits.get("full_training") if m.adapter == "full" else limits.get("lora_training")
    if section is None:
        out.append(f"{'full' if m.adapter == 'full' else 'LoRA'} training is not offered for {recipe.model}: set "
                   f"method.adapter to {'lora' if m.adapter == 'full' else 'full'}")
    else:
        if m.adapter != "full" and m.lora.rank > section.get("max_rank", m.lora.rank):
            out.append(f"method.lora.rank {m.lora.rank} > the model's max_rank {section['max_rank']}")
        bs = body.get("batch_size")
        top = section.get("max_batch_size_dpo" if m.objective in ("dpo", "simpo") else "max_batch_size")
        low = section.get("min_batch_size", 1)
        if isinstance(bs, int) and not low <= bs <= (top or bs):
            micro = recipe.hyperparameters.batch_size
            out.append(f"the effective batch {bs} (hyperparameters.batch_size x gradient_accumulation) is outside "
                       f"Together's {low}..{top} for this model; change gradient_accumulation to "
                       f"{max(1, -(-low // micro))}..{max(1, top // micro)}")
        allowed = section.get("target_modules")
        names = body["training_type"].get("lora_trainable_modules", "all-linear")
        if m.adapter != "full" and allowed and names != "all-linear":
            unknown = [n for n in names.split(",") if n not in allowed]
            if unknown:
                out.append(f"method.lora.targets {m.lora.targets!r} means {', '.join(unknown)} on this model, which "
                           f"Together cannot adapt; it offers {', '.join(allowed)}")
    if body["n_epochs"] > limits.get("max_num_epochs", body["n_epochs"]):
        out.append(f"hyperparameters.epochs {body['n_epochs']} > max_num_epochs {limits['max_num_epochs']}")
    if body.get("n_evals", 0) > limits.get("max_num_evals", body.get("n_evals", 0)):
        out.append(f"{body['n_evals']} evaluations > Together's max_num_evals {limits['max_num_evals']}")
    lr = body["learning_rate"]
    if not limits.get("min_learning_rate", lr) <= lr <= limits.get("max_learning_rate", lr):
        out.append(f"hyperparameters.learning_rate {lr:g} outside {limits['min_learning_rate']:g}.."
                   f"{limits['max_learning_rate']:g}")
    return out


def _event_key(e: dict) -> str:
    return e.get("hash") or json.dumps([e.get("created_at"), e.get("type"), e.get("message"), e.get("step")])


def translate(e: dict) -> tuple[str, dict]:
    """A Together fine-tune event -> (ftplan event type, fields)."""
    kind = e.get("type") or ""
    base = {"source": "together", "remote_type": kind, "message": e.get("message", "")}
    if kind == "checkpoint_save":
        return "checkpoint", {**base, "step": e.get("step", 0), "path": e.get("checkpoint_path") or ""}
    if kind == "job_error":
        return "log", {**base, "level": "error"}
    if e.get("total_steps") and e.get("step"):
        return "step", {**base, "step": e["step"], "total": e["total_steps"], "loss": None}
    level = "error" if kind == "billing_limit" else "warning" if kind == "warning" else "info"
    return "log", {**base, "level": level}


def failure_reason(remote: dict, events: list[dict]) -> str | None:
    """Why a job failed: the job's own error field, else its last error event's message."""
    err = remote.get("error")
    if isinstance(err, dict) and err.get("message"):
        return err["message"]
    if isinstance(err, str) and err:
        return err
    errors = [e for e in events if e.get("type") == "job_error" or e.get("level") == "error"]
    return errors[-1].get("message") if errors else None


NANODOLLARS = 1e9  # together.utils.tools.finetune_price_to_dollars: total_price / 1_000_000_000


class TogetherProvider:
    name = "together"
    summary = "Together AI's managed fine-tuning API"
    has_outputs = True

    def __init__(self, client: TogetherClient | None = None):
        self._client = client
        self._prepared: tuple[Path, str, int] | None = None
        self._validation: tuple[Path, str, int] | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    @contextmanager
    def client(self) -> Iterator[TogetherClient]:
        c = self._client or TogetherClient.from_env()
        try:
            yield c
        finally:
            if self._client is None:
                c.close()

    def check_ready(self, recipe: Recipe) -> None:
        """Key, Together's data rules (checked here, so a bad file never costs an upload), the model's limits."""
        api_key(TogetherClient.env_key, TogetherClient.provider, TogetherClient.key_help)
        refused = unsupported(recipe)
        if refused:
            raise FtplanError("Together cannot run this recipe as written: " + "; ".join(refused) +
                              ". Nothing was uploaded or charged.")
        self._tmp = tempfile.TemporaryDirectory(prefix="ftplan-together-")
        folder = Path(self._tmp.name)
        train = prepare(recipe.data.path, folder, recipe.method.objective)
        validation = None
        if recipe.data.eval_path:
            validation = prepare(recipe.data.eval_path, folder / "eval", recipe.method.objective, split="validation")
        elif recipe.data.eval_fraction:
            train, validation = split_off(train, recipe.data.eval_fraction, recipe.hyperparameters.seed, folder)
        self._prepared, self._validation = train, validation
        body = job_body(recipe, "file-pending", "ftplan-check", "file-pending" if validation else None)
        with self.client() as c:
            problems = limit_problems(recipe, body, c.limits(recipe.model))
        if problems:
            raise FtplanError(f"outside Together's limits for {recipe.model}: " + "; ".join(problems) +
                              ". Change the recipe and run again; nothing was uploaded or charged.")

    def quote(self, recipe: Recipe, plan: dict | None) -> Quote:
        """Upload (free, reused when the same bytes are there) and ask Together's /fine-tunes/estimate-price."""
        path, kind, n = self._prepared or prepare(recipe.data.path, Path(tempfile.mkdtemp()), recipe.method.objective)
        ours = next((p["usd"] for p in (plan or {}).get("per_provider", []) if p["provider"] == "together"), None)
        with self.client() as c:
            uploaded = c.upload(path)
            validation = c.upload(self._validation[0])["id"] if self._validation else None
            body = job_body(recipe, uploaded["id"], "ftplan-quote", validation)
            est = c.estimate_price({k: body[k] for k in ("training_file", "validation_file", "model", "n_epochs",
                                                         "n_evals", "training_method", "training_type") if k in body})
        usd = est.get("estimated_total_price")
        if est.get("allowed_to_proceed") is False:
            raise FtplanError(f"Together will not start this job: its quote ${usd:,.2f} is above your account's "
                              f"limit (${est.get('user_limit', 0):,.2f}). Add credits or shrink the job; nothing was "
                              "charged.")
        lines = [f"uploaded {path.name} ({n:,} {kind} examples) as {uploaded['id']}",
                 f"price: Together quotes ${usd:,.2f} for {est.get('estimated_train_token_count', 0):,.0f} training "
                 f"tokens; ftplan estimated " + (f"${ours:,.2f}." if ours is not None else "n/a.")]
        if validation:
            lines.append(f"validation: {self._validation[2]:,} examples as {validation}, evaluated "
                         f"{body['n_evals']} time(s)")
        return Quote(usd, "Together's quote (POST /fine-tunes/estimate-price)", 0.0, None, lines,
                     state={"file_id": uploaded["id"], "validation_file": validation, "estimated_usd": usd,
                            "ftplan_usd": ours, "train_tokens": est.get("estimated_train_token_count")})

    def submit(self, job: Job, quote: Quote) -> dict:
        return self._create(job, job_body(job.recipe, job.state["file_id"], f"ftplan-{job.id}",
                                          job.state.get("validation_file")))

    def resume(self, job: Job, previous: Job, quote: Quote) -> dict:
        """Continue from the previous job's newest checkpoint (`from_checkpoint`), never a silent fresh start."""
        ft_id = previous.state.get("ft_id")
        if not ft_id:
            raise FtplanError(f"job {previous.id} never reached Together ({previous.state or 'no job id'}); there is "
                              "nothing to resume. Run the recipe without --resume.")
        with self.client() as c:
            saved = c.checkpoints(ft_id)
        if not saved:
            raise FtplanError(f"Together kept no checkpoint of {ft_id} (job {previous.id}); there is nothing to "
                              "resume from. Run the recipe without --resume.")
        newest = max(saved, key=lambda x: (x.get("step") or 0, str(x.get("created_at"))))
        intermediate = "intermediate" in str(newest.get("checkpoint_type", "")).lower()
        ref = f"{ft_id}:{newest['step']}" if intermediate else ft_id  # the SDK's naming (_parse_raw_checkpoints)
        body = job_body(job.recipe, job.state["file_id"], f"ftplan-{job.id}", job.state.get("validation_file"))
        # The SDK sends either a model or a checkpoint, never both (create_finetune_request: "You must specify
        # either a model or a checkpoint to start a job from, not both").
        body.pop("model", None)
        body["from_checkpoint"] = ref
        return {**self._create(job, body), "from_checkpoint": ref}

    def _create(self, job: Job, body: dict) -> dict:
        with self.client() as c:
            remote = c.create_job(body)
        return {"ft_id": remote["id"], "suffix": body["suffix"], "objective": job.recipe.method.objective,
                "adapter": job.recipe.method.adapter, "training_type": body["training_type"]["type"]}

    def poll(self, job: Job) -> list[dict]:
        ft_id = job.state.get("ft_id")
        if not ft_id:
            return []
        with self.client() as c:
            remote = c.get_job(ft_id)
            events = sorted(c.events(ft_id), key=lambda x: str(x.get("created_at")))
            if remote.get("status") in TERMINAL:  # kept with the job: status answers offline from now on
                job.state["checkpoints"] = [{"step": x.get("step"), "path": x.get("path"),
                                             "type": x.get("checkpoint_type")} for x in c.checkpoints(ft_id)]

        def final(remote: dict, state: dict) -> dict:
            # What Together charged, as it reports it (a cancelled job's too); the pre-job quote stays beside it.
            price = remote.get("total_price")
            reported = isinstance(price, (int, float))
            return {"usd": price / NANODOLLARS if reported else None,
                    "usd_source": "Together's total_price" if reported else "not reported by Together",
                    "quoted_usd": state.get("estimated_usd"), "token_count": remote.get("token_count"),
                    "output": remote.get("model_output_name")}

        return translate_remote(job, remote, events, backend="together", reason="Together AI managed fine-tuning",
                                key=_event_key, translate=translate, terminal=TERMINAL, final_fields=final,
                                failure=failure_reason)

    def cancel(self, job: Job) -> None:
        ft_id = job.state.get("ft_id")
        if not ft_id:
            raise FtplanError(f"job {job.id} never reached Together; nothing to cancel.")
        with self.client() as c:
            c.cancel(ft_id)

    def fetch_outputs(self, job: Job, dest: Path) -> Path:
        """Download the adapter (LoRA) or the model (full) with retries, unpack it into the job's folder."""
        ft_id = job.state["ft_id"]
        full = job.state.get("training_type") == "Full" or (job.recipe and job.recipe.method.adapter == "full")
        # The SDK asks full fine-tunes for checkpoint=model_output_path and LoRA ones for merged or adapter.
        archive = dest / "download" / f"{ft_id}.archive"
        with self.client() as c:
            c.download(ft_id, archive, checkpoint="model_output_path" if full else "adapter")
        return unpack(archive, dest / ("model" if full else "adapter"))
