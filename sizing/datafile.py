"""Stream records out of a training data file: JSONL, JSON, CSV or Parquet (or a Hub dataset id).

Each record comes with its location ("line 12" for JSONL and CSV, "record 12" for JSON and
Parquet) so every later complaint can name it. Files are streamed, never loaded whole, except
a JSON array, which the format itself forces into memory. Lines that are not JSON objects are
yielded as `BadRecord`s rather than raised, so one pass can report all of them.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet",
            ".pq": "parquet"}
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# CSV cells that hold structured values (a list of messages) are JSON text.
_JSON_CELL = re.compile(r"^\s*[\[{]")


@dataclass(frozen=True)
class BadRecord:
    """A line that could not be parsed into an object; `reason` says why."""

    reason: str


def detect_file_format(path: Path) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: unknown file type '{path.suffix}'. ftplan reads .jsonl, .json, .csv and .parquet; "
            "rename the file or convert it."
        )
    return fmt


def iter_records(source: str | Path, split: str = "train") -> tuple[str, str, Iterator[tuple[int, dict | BadRecord]]]:
    """(file format, location word, iterator of (number, record)) for a path or Hub id."""
    path = Path(source).expanduser()
    if not path.exists():
        if HUB_ID.match(str(source)):
            return "hub", "record", _iter_hub(str(source), split)
        raise DataError(f"{source}: no such file. Give a path to a .jsonl, .json, .csv or .parquet file.")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give the data file itself (.jsonl, .json, .csv or .parquet).")
    fmt = detect_file_format(path)
    reader = {"jsonl": _iter_jsonl, "json": _iter_json, "csv": _iter_csv, "parquet": _iter_parquet}[fmt]
    word = "line" if fmt in ("jsonl", "csv") else "record"
    return fmt, word, reader(path)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict | BadRecord]]:
    loads = json.loads
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = loads(raw)
            except ValueError as exc:
                yield number, BadRecord(f"not valid JSON ({str(exc).split(':')[0]})")
                continue
            yield number, obj if isinstance(obj, dict) else BadRecord(f"a JSON {type(obj).__name__}, not an object")


def _iter_json(path: Path) -> Iterator[tuple[int, dict | BadRecord]]:
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc}). A .json file must hold a list of objects; for one object per "
            "line use .jsonl."
        ) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    elif isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        # Column-oriented ({"prompt": [...], "completion": [...]}), as pandas/datasets can write it.
        keys = list(data)
        if len({len(v) for v in data.values()}) > 1:
            raise DataError(f"{path}: the columns {keys} have different lengths; every column needs one value per "
                            "example.")
        data = [dict(zip(keys, row, strict=True)) for row in zip(*(data[k] for k in keys), strict=True)]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects (or {{'data': [...]}}), got a {type(data).__name__}.")
    for number, obj in enumerate(data, start=1):
        yield number, obj if isinstance(obj, dict) else BadRecord(f"a JSON {type(obj).__name__}, not an object")


def _csv_value(value: str | None):
    if value is None or value == "":
        return None  # an empty cell is a missing value, as in pandas
    if _JSON_CELL.match(value):
        try:
            return json.loads(value)
        except ValueError:
            return value
    low = value.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    return value


def _bad_utf8(row: dict) -> str | None:
    """The first cell holding bytes that are not UTF-8 (read with surrogateescape, they show as lone surrogates)."""
    for key, value in row.items():
        for text in (key, value):
            if isinstance(text, str):
                bad = next((c for c in text if "\udc80" <= c <= "\udcff"), None)
                if bad is not None:
                    column = key.encode("utf-8", "replace").decode()
                    return f"column {column!r} holds byte 0x{ord(bad) - 0xDC00:02x}, which is not UTF-8 (re-save " \
                           "the file as UTF-8)"
    return None


def _iter_csv(path: Path) -> Iterator[tuple[int, dict | BadRecord]]:
    # surrogateescape keeps bytes that are not UTF-8 visible, so they are reported with their line instead of
    # being replaced here and failing (or silently training on U+FFFD) later.
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise DataError(f"{path}: the CSV file has no header row; the first row must name the columns.")
        for row in reader:
            if None in row:
                yield reader.line_num, BadRecord("more cells than the header has columns")
                continue
            bad = _bad_utf8(row)
            if bad:
                yield reader.line_num, BadRecord(bad)
                continue
            yield reader.line_num, {k: _csv_value(v) for k, v in row.items()}


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict | BadRecord]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow: pip install pyarrow (it comes with 'ftplan[train]')."
        ) from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: cannot be read as Parquet ({exc}).") from None
    number = 0
    for batch in pf.iter_batches(batch_size=4096):
        for obj in batch.to_pylist():
            number += 1
            yield number, obj


def _iter_hub(dataset_id: str, split: str) -> Iterator[tuple[int, dict | BadRecord]]:
    import importlib
    import importlib.util

    if importlib.util.find_spec("datasets") is None:  # only this path needs the Hub client
        raise DataError(
            f"{dataset_id}: not a local file, and reading a Hugging Face Hub dataset needs the 'train' extra "
            "(pip install 'ftplan[train]') and a network connection. Or download it and pass the file."
        )
    try:
        load_dataset = importlib.import_module("datasets").load_dataset
        ds = load_dataset(dataset_id, split=split, streaming=True)
        yield from enumerate(ds, start=1)
    except Exception as exc:  # network, auth, missing split: the Hub client raises many types
        raise DataError(
            f"{dataset_id}: could not be read from the Hugging Face Hub ({type(exc).__name__}: {exc}). Check the id, "
            "your connection and HF_TOKEN for gated sets, or download the data and pass the file."
        ) from None
