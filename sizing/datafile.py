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
HUB_HOST = ("huggingface.co", 443)
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
        if looks_like_hub_id(str(source)):
            return "hub", "record", _iter_hub(str(source), split)
        raise DataError(f"{source}: no such file. Give a path to a .jsonl, .json, .csv or .parquet file"
                        + (f" (the folder {path.parent} does not exist either)." if not path.parent.exists() else "."))
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give the data file itself (.jsonl, .json, .csv or .parquet).")
    fmt = detect_file_format(path)
    reader = {"jsonl": _iter_jsonl, "json": _iter_json, "csv": _iter_csv, "parquet": _iter_parquet}[fmt]
    word = "line" if fmt in ("jsonl", "csv") else "record"
    return fmt, word, reader(path)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(value) -> str | None:
    """The first text in `value` holding half a UTF-16 pair ("\\ud800" alone): not Unicode, no tokenizer takes it."""
    if isinstance(value, str):
        bad = next((c for c in value if "\ud800" <= c <= "\udfff"), None)
        return f"\\u{ord(bad):04x}" if bad else None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        found = _lone_surrogate(item)
        if found:
            return found
    return None


def _parse(raw: bytes) -> dict | BadRecord:
    """One JSONL line -> an object, or the reason it is not one."""
    try:
        obj = json.loads(raw)
    except RecursionError:
        return BadRecord("nested deeper than JSON can be read (a record is a flat object of fields)")
    except ValueError as exc:
        return BadRecord(f"not valid JSON ({str(exc).split(':')[0]})")
    if not isinstance(obj, dict):
        return BadRecord(f"a JSON {type(obj).__name__}, not an object")
    if _SURROGATE_ESCAPE.search(raw):  # paired escapes decode to one character; a lone one stays a surrogate
        bad = _lone_surrogate(obj)
        if bad:
            return BadRecord(f"holds {bad}, half of a UTF-16 surrogate pair, which is not valid Unicode (remove it or "
                             "write the whole character)")
    return obj


def _opened(path: Path, *args, **kwargs):
    """`path.open`, with an unreadable file as a message naming it."""
    try:
        return path.open(*args, **kwargs)
    except PermissionError:
        raise DataError(f"{path}: permission denied; make the file readable (chmod u+r) or copy it somewhere "
                        "you can read.") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be opened ({exc.strerror or exc}).") from None


def looks_like_hub_id(text: str) -> bool:
    """`org/name` with no data-file suffix and no path prefix: only then is a missing path tried on the Hub."""
    if text.startswith((".", "/", "~")) or Path(text).suffix.lower() in SUFFIXES:
        return False
    return bool(HUB_ID.match(text))


def _hub_reachable(timeout: float = 3.0) -> str | None:
    """Why the Hub cannot be reached right now (offline mode, no connection), or None."""
    import os
    import socket

    if any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return "HF_HUB_OFFLINE is set"
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return None
    except OSError as exc:
        return f"{HUB_HOST[0]} cannot be reached ({exc.strerror or exc})"


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict | BadRecord]]:
    with _opened(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            yield number, _parse(raw)


def _iter_json(path: Path) -> Iterator[tuple[int, dict | BadRecord]]:
    with _opened(path, "rb") as fh:
        raw = fh.read()
    try:
        data = json.loads(raw)
    except RecursionError:
        raise DataError(f"{path}: nested deeper than JSON can be read; a .json data file is a list of flat "
                        "objects.") from None
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
        if not isinstance(obj, dict):
            yield number, BadRecord(f"a JSON {type(obj).__name__}, not an object")
            continue
        bad = _lone_surrogate(obj) if _SURROGATE_ESCAPE.search(raw) else None
        yield number, BadRecord(f"holds {bad}, half of a UTF-16 surrogate pair, which is not valid Unicode") \
            if bad else obj


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
    # being replaced here and failing (or silently training on U+FFFD) later. strict: a quote opened and never
    # closed is an error at the record that opened it, not one record swallowing the rest of the file.
    with _opened(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh, strict=True)
        try:
            if not reader.fieldnames:
                raise DataError(f"{path}: the CSV file has no header row; the first row must name the columns.")
        except csv.Error as exc:
            raise DataError(f"{path}: line 1 (the header) cannot be parsed as CSV ({exc}).") from None
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                reason = ("a quoted cell opened here is never closed, so the rest of the file would run into one "
                          "cell (close the quote, or double a quote inside a cell: \"\")"
                          if "end of data" in str(exc) else f"not valid CSV ({exc})")
                yield start, BadRecord(reason)
                return
            line, start = start, reader.line_num + 1
            if None in row:
                yield line, BadRecord("more cells than the header has columns")
                continue
            bad = _bad_utf8(row)
            if bad:
                yield line, BadRecord(bad)
                continue
            yield line, {k: _csv_value(v) for k, v in row.items()}


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
    offline = _hub_reachable()
    if offline:
        raise DataError(f"{dataset_id}: no such file here, and as a Hugging Face Hub dataset id it cannot be read "
                        f"now: {offline}. Give a local .jsonl, .json, .csv or .parquet file, or connect and retry.")
    try:
        load_dataset = importlib.import_module("datasets").load_dataset
        ds = load_dataset(dataset_id, split=split, streaming=True)
        yield from enumerate(ds, start=1)
    except Exception as exc:  # network, auth, missing split: the Hub client raises many types
        raise DataError(
            f"{dataset_id}: could not be read from the Hugging Face Hub ({type(exc).__name__}: {exc}). Check the id, "
            "your connection and HF_TOKEN for gated sets, or download the data and pass the file."
        ) from None
