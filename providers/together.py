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
import math
from pathlib import Path

from ftplan.recipes.schema import Recipe
from ftplan.sizing.errors import FtplanError

from .http import HTTPClient
from .remote import poll_into_events

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
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_suffix(dest.suffix + ".part")
        with self.http.stream("GET", "/finetune/download", params={"ft_id": ft_id, "checkpoint": checkpoint}) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise self._error(resp)
            with part.open("wb") as fh:
                for chunk in resp.iter_bytes():
                    fh.write(chunk)
        part.replace(dest)
        return dest


def job_body(recipe: Recipe, file_id: str, suffix: str) -> dict:
    """The POST /fine-tunes body for a recipe (the wire format, not the SDK's keyword sugar)."""
    m, hp = recipe.method, recipe.hyperparameters
    if m.objective in ("dpo", "simpo"):
        method = {"method": "dpo", "dpo_beta": m.beta}
        if m.objective == "simpo":
            method.update(simpo_gamma=m.simpo_gamma, dpo_reference_free=True, dpo_normalize_logratios_by_length=True)
    else:
        # The loss on completions only (the playbook's SFT). The published spec types this field boolean,
        # though the docs also mention "auto"; a boolean satisfies both.
        method = {"method": "sft", "train_on_inputs": False}
    if m.adapter == "full":
        training_type = {"type": "Full"}
    else:
        training_type = {"type": "Lora", "lora_r": m.lora.rank, "lora_alpha": m.lora.effective_alpha,
                         "lora_dropout": m.lora.dropout, "lora_trainable_modules": m.lora.targets}
    body = {
        "training_file": file_id, "model": recipe.model, "n_epochs": max(1, math.ceil(hp.epochs)),
        "n_checkpoints": 1, "n_evals": 0, "learning_rate": hp.learning_rate,
        "lr_scheduler": {"lr_scheduler_type": "linear" if hp.lr_scheduler == "linear" else "cosine",
                         "lr_scheduler_args": {"min_lr_ratio": 0.0}},
        "warmup_ratio": hp.warmup_ratio, "max_grad_norm": hp.max_grad_norm, "weight_decay": hp.weight_decay,
        "random_seed": hp.seed, "suffix": suffix, "max_seq_length": hp.max_seq_length, "packing": hp.packing,
        "batch_size": "max", "training_method": method, "training_type": training_type,
    }
    body.update(recipe.providers.get("together", {}))  # provider-only knobs (batch_size, n_checkpoints, wandb_*)
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
        if isinstance(bs, int) and not section.get("min_batch_size", 1) <= bs <= (top or bs):
            out.append(f"providers.together.batch_size {bs} outside {section.get('min_batch_size')}..{top}")
    if body["n_epochs"] > limits.get("max_num_epochs", body["n_epochs"]):
        out.append(f"hyperparameters.epochs {body['n_epochs']} > max_num_epochs {limits['max_num_epochs']}")
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


def poll(store, job: dict, client: TogetherClient | None = None) -> None:
    """Fetch the remote job and its new events into the job's events file (once each, in order)."""
    if not job["provider_ids"].get("ft_id") or not job.get("events_path"):
        return

    def fetch(ids: dict) -> tuple[dict, list[dict]]:
        c = client or TogetherClient.from_env()
        try:
            remote = c.get_job(ids["ft_id"])
            return remote, sorted(c.events(ids["ft_id"]), key=lambda x: str(x.get("created_at")))
        finally:
            if client is None:
                c.close()

    def final(remote: dict, ids: dict) -> dict:
        return {"usd": ids.get("estimated_usd"), "total_price_raw": remote.get("total_price"),
                "token_count": remote.get("token_count"), "output": remote.get("model_output_name")}

    poll_into_events(store, job, backend="together", reason="Together AI managed fine-tuning", fetch=fetch,
                     key=_event_key, translate=translate, terminal=TERMINAL, final_fields=final)


def cancel(job: dict, client: TogetherClient | None = None) -> dict:
    ft_id = job["provider_ids"].get("ft_id")
    if not ft_id:
        raise FtplanError(f"job {job['id']} never reached Together (it stopped at: {job.get('error')}).")
    own = client is None
    client = client or TogetherClient.from_env()
    try:
        return client.cancel(ft_id)
    finally:
        if own:
            client.close()
