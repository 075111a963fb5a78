"""Validate requests and responses against the providers' published OpenAPI specs (../shared copies)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

SPECS = Path(__file__).resolve().parents[1] / "data" / "specs"


@lru_cache(maxsize=4)
def spec(name: str) -> dict:
    data = yaml.safe_load((SPECS / f"{name}-openapi.yaml").read_text())
    if name == "together":
        # The spec's LRScheduler.lr_scheduler_args is oneOf [CosineLRSchedulerArgs, LinearLRSchedulerArgs], but the
        # linear variant requires nothing, so the cosine arguments Together's own SDK sends ({"min_lr_ratio",
        # "num_cycles"}, together/resources/finetune.py create_finetune_request) match both and fail "exactly one".
        # Checked as anyOf: each branch still validates its own fields.
        args = data["components"]["schemas"]["LRScheduler"]["properties"]["lr_scheduler_args"]
        args["anyOf"] = args.pop("oneOf")
    return data


def errors(name: str, schema: dict, instance) -> list[str]:
    """Validation problems of `instance` against `schema` (which may $ref the spec's components)."""
    from jsonschema import Draft202012Validator

    root = {"components": spec(name)["components"], **schema}
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in Draft202012Validator(root).iter_errors(instance)]


def request_schema(name: str, path: str, method: str) -> dict:
    op = spec(name)["paths"][path][method]
    return op["requestBody"]["content"]["application/json"]["schema"]


def component(name: str, schema: str) -> dict:
    return {"$ref": f"#/components/schemas/{schema}"}
