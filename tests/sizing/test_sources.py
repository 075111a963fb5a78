"""Every number the planner reads carries a public source and a date, never a path outside the repository."""

import json
import re
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "sizing" / "data"
URL = re.compile(r"https?://\S+")


def _sourced(node, path=""):
    """(where, source text, as_of) for every object in a data file that has a source."""
    if isinstance(node, dict):
        for key in ("source", "calendar_source", "memory_source"):
            if isinstance(node.get(key), str):
                yield path + "." + key, node[key], node.get("as_of")
        for k, v in node.items():
            yield from _sourced(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _sourced(v, f"{path}[{i}]")


@pytest.mark.parametrize("name", ["prices.json", "models.json", "gpus.json"])
def test_sources_are_public_urls_with_dates(name):
    rows = list(_sourced(json.loads((DATA / name).read_text())))
    assert len(rows) > 10
    for where, source, _ in rows:
        assert "../shared" not in source and "shared/reference" not in source, where
        # a URL, or an assumption marked [U: why] (e.g. a PCIe card's memory taken as its SXM sibling's)
        assert URL.search(source) or "[U:" in source, (where, source[:120])
    assert all(as_of for where, _, as_of in rows if where.endswith(".source") and "_about" not in where), name


def test_printed_model_source_is_the_url_and_its_date():
    from ftplan.sizing.catalog import resolve_model

    src = resolve_model("llama-3.1-8b")
    assert src.citation == "https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json (as of 2026-11)"
