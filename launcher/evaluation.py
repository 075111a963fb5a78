"""`ftplan eval`: the eval gate on a job's outputs (any provider) or on an adapter folder.

A job's adapter or model is found in its folder (pulled first when the provider keeps it
remotely); a model that stays on the provider's side (OpenAI) is evaluated through the provider's
own chat endpoint, base model against fine-tuned model, with the same golden set and rules.
The result is recorded on the job (an annotation: a final record's history never changes) and
in the manifest beside the adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftplan.sizing.errors import FtplanError

from . import jobs
from .jobstore import JobStore


def _summary(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "items"}


def evaluate_job(store: JobStore, record: dict, *, golden: str | None = None, base_model: str | None = None,
                 batch: int = 8, max_new_tokens: int = 64) -> dict:
    job = jobs.view(record)
    recipe = job.recipe
    if recipe is None:
        raise FtplanError(f"job {record['id']} has no recipe.yaml in {job.folder}; give the adapter folder instead.")
    golden = golden or recipe.eval.golden
    if not golden:
        raise FtplanError("no golden set: give --golden FILE or set eval.golden in the recipe.")
    sha = job.options.golden_sha256 if golden == recipe.eval.golden else None
    from ftplan.providers import registry

    provider = registry.get(record["provider"])
    if not provider.has_outputs:
        from ftplan.recipes.evalgate import evaluate_remote

        tuned = (record.get("actuals") or {}).get("output")
        if not tuned:
            raise FtplanError(f"job {record['id']} has no fine-tuned model yet ({record['status']}).")
        result = evaluate_remote(provider.chat_client(), base_model or recipe.model, tuned, golden,
                                 thresholds=recipe.eval.thresholds, expected_sha256=sha, judge_cfg=recipe.eval.judge,
                                 max_new_tokens=max_new_tokens).to_dict()
    else:
        path = jobs.outputs_path(record)
        if path is None:
            path = jobs.pull(store, record["id"])
        if path is None or not path.is_dir():
            raise FtplanError(f"job {record['id']}: no adapter or model folder in {job.folder}.")
        result = evaluate_folder(path, base_model or recipe.model, golden, thresholds=recipe.eval.thresholds,
                                 sha=sha, judge=recipe.eval.judge, batch=batch, max_new_tokens=max_new_tokens)
    store.update(record["id"], eval=_summary(result))
    return result


def evaluate_folder(path: Path, base_model: str, golden: str, *, thresholds: dict | None = None,
                    sha: str | None = None, judge: dict | None = None, batch: int = 8,
                    max_new_tokens: int = 64) -> dict:
    from ftplan.recipes.evalgate import evaluate

    result = evaluate(base_model, path, golden, thresholds=thresholds or {}, expected_sha256=sha, judge_cfg=judge,
                      batch=batch, max_new_tokens=max_new_tokens).to_dict()
    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        m.setdefault("evals", []).append(_summary(result))
        manifest.write_text(json.dumps(m, indent=2, default=str))
    return result
