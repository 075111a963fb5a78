"""What `ftplan estimate` counts is what trains: one reader for planner and trainer.

These layouts used to count as 50 examples in the planner and load as 1 row (or as strings) in
`datasets`: a {"data": [...]} JSON, column-oriented JSON, a CSV whose cell holds the JSON messages.
"""

import csv
import json
from pathlib import Path

import pytest

from ftplan.recipes.schema import parse_recipe

pytestmark = [pytest.mark.train]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHATS = [json.loads(line) for line in (EXAMPLES / "chat.jsonl").read_text().splitlines()]


def layouts(tmp_path: Path) -> dict[str, Path]:
    out = {}
    out["data-key.json"] = tmp_path / "data-key.json"
    out["data-key.json"].write_text(json.dumps({"data": CHATS}))
    pc = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(30)]
    out["columns.json"] = tmp_path / "columns.json"
    out["columns.json"].write_text(json.dumps({"prompt": [r["prompt"] for r in pc],
                                               "completion": [r["completion"] for r in pc]}))
    out["messages.csv"] = tmp_path / "messages.csv"
    with out["messages.csv"].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["messages"])
        for c in CHATS:
            w.writerow([json.dumps(c["messages"])])
    out["pc.parquet"] = EXAMPLES / "prompt_completion.parquet"
    return out


@pytest.mark.parametrize("name", ["data-key.json", "columns.json", "messages.csv", "pc.parquet"])
def test_the_trainer_reads_what_the_planner_counted(tmp_path, name):
    from ftplan.recipes.data import check_data, load_training_data

    path = layouts(tmp_path)[name]
    recipe = parse_recipe({"model": "m", "data": {"path": str(path)}})
    fmt, stats = check_data(recipe)
    train, _ = load_training_data(recipe, fmt)
    assert len(train) == stats.examples > 1
    row = train[0]
    if fmt.key == "messages":
        assert isinstance(row["messages"], list) and row["messages"][0]["role"] in ("system", "user")
    else:
        assert isinstance(row["prompt"], str) and isinstance(row["completion"], str)


def test_a_csv_with_bytes_that_are_not_utf8_is_refused_with_its_line(tmp_path):
    from ftplan.recipes.data import check_data
    from ftplan.sizing.errors import DataError

    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"prompt,completion\nhello,world\nbad \xff byte,x\n")
    with pytest.raises(DataError, match=r"line 3.*0xff.*UTF-8"):
        check_data(parse_recipe({"model": "m", "data": {"path": str(bad)}}))
