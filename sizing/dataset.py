"""One streamed pass over a training file: its format, its problems, its tokens.

`analyze()` reads the file once (any size: records are counted in chunks, never held whole),
detects TRL's format from the first records, checks every record, and counts the tokens of what
the trainer will forward. Problems are collected with their line numbers; errors (what the
trainer would reject) raise one `DataError` that lists them all, warnings travel with the
statistics. Nothing is silently dropped: every skipped or truncated example is counted.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .datafile import BadRecord, iter_records
from .dataformat import BY_KEY, DataFormat, Finding, check, detect, sequences
from .errors import DataError
from .tokencount import CharCounter, SampledCounter, TokenizerCounter

SHOW_LOCATIONS = 5  # line numbers shown per problem kind; the rest are counted
DETECT_WINDOW = 1000  # records read before the file's format is decided
CHUNK = 2048  # sequences counted per tokenizer call

# (singular, plural) verb phrases: "1 line cannot be parsed", "3 lines miss a required field".
ERROR_TEXT = {
    "bad_json": ("cannot be parsed", "cannot be parsed"),
    "missing_field": ("misses a required field", "miss a required field"),
    "mixed_format": ("is in another format than the rest of the file", "are in another format than the rest"),
    "unknown_format": ("matches no known format", "match no known format"),
    "bad_value": ("holds a value of the wrong kind", "hold a value of the wrong kind"),
    "template_error": ("is rejected by the model's chat template", "are rejected by the model's chat template"),
    "bad_role": ("has a message role chat templates do not know", "have message roles chat templates do not know"),
    "no_assistant": ("is a conversation without an assistant turn", "are conversations without an assistant turn"),
}
WARNING_TEXT = {
    "empty_turn": ("has an empty assistant turn or completion", "have an empty assistant turn or completion"),
    "duplicate": ("repeats an earlier example exactly", "repeat an earlier example exactly"),
    "truncated": ("is longer than --seq-len and will be truncated", "are longer than --seq-len and will be truncated"),
    "over_context": ("is longer than the model's context window", "are longer than the model's context window"),
    "assistant_first": ("opens with an assistant turn instead of the user's",
                        "open with an assistant turn instead of the user's"),
}


def _phrase(table: dict, kind: str, count: int) -> str:
    return table[kind][0 if count == 1 else 1]


@dataclass
class Problem:
    count: int = 0
    locations: list[int] = field(default_factory=list)
    detail: str = ""

    def add(self, location: int, detail: str = "") -> None:
        self.count += 1
        if len(self.locations) < SHOW_LOCATIONS:
            self.locations.append(location)
        if not self.detail:
            self.detail = detail


def _where(word: str, p: Problem) -> str:
    more = f" and {p.count - len(p.locations)} more" if p.count > len(p.locations) else ""
    return f"{word}{'s' if len(p.locations) > 1 else ''} {', '.join(map(str, p.locations))}{more}"


def _quantile(ordered: list[int], q: float) -> int:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0


@dataclass
class DatasetStats:
    source: str
    file_format: str
    data_format: DataFormat
    location_word: str
    examples: int
    sequences: int
    counter: str
    exact: bool
    uncertainty: float
    tokens: int  # as written, before truncation
    tokens_kept: int  # after truncation at seq_len: what packing trains on
    padded_tokens: int  # what padding to the longest in each micro-batch computes on
    lengths: dict[str, int]
    seq_len: int
    micro_batch_size: int
    labels: dict[str, int]
    warnings: dict[str, Problem]
    notes: list[str]
    padded_by_batch: dict[int, int] = field(default_factory=dict)  # padded tokens per epoch at b sequences/batch

    @property
    def padding_efficiency(self) -> float:
        return self.tokens_kept / self.padded_tokens if self.padded_tokens else 1.0

    def tokens_per_epoch(self, packing: bool) -> int:
        """Tokens the GPU computes on per epoch: packed (real tokens) or padded per micro-batch."""
        return self.tokens_kept if packing else self.padded_tokens

    def warning_lines(self) -> list[str]:
        return [f"{p.count} {'example' if p.count == 1 else 'examples'} {_phrase(WARNING_TEXT, k, p.count)} "
                f"({_where(self.location_word, p)}){': ' + p.detail if p.detail else ''}."
                for k, p in self.warnings.items() if p.count]

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "file_format": self.file_format,
            "format": self.data_format.key,
            "format_description": self.data_format.description,
            "examples": self.examples,
            "sequences": self.sequences,
            "token_counter": self.counter,
            "exact_tokens": self.exact,
            "token_uncertainty_pct": round(100 * self.uncertainty, 1),
            "tokens": self.tokens,
            "tokens_after_truncation": self.tokens_kept,
            "padded_tokens": self.padded_tokens,
            "padding_efficiency": round(self.padding_efficiency, 3),
            "lengths": self.lengths,
            "seq_len": self.seq_len,
            "labels": self.labels,
            "warnings": {k: {"count": p.count, "first": p.locations} for k, p in self.warnings.items() if p.count},
            "warning_text": self.warning_lines(),
            "notes": self.notes,
        }


PADDING_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)  # sequences per micro-batch the planner may choose
_QUANTILE_POINTS = 4096


def _padded(ordered: list[int], batch: int, seq_len: int) -> int:
    """Tokens computed per epoch when micro-batches are drawn at random and padded to their longest member.

    The Trainer's default sampler shuffles, so a micro-batch of `batch` sequences is padded to the longest
    of `batch` random draws: n x E[min(max, seq_len)], with P(max <= L_(i)) = (i / n) ** batch over the
    sorted lengths (evaluated on at most 4096 evenly spaced quantiles, so a million lines cost no more).
    """
    n = len(ordered)
    if not n:
        return 0
    if batch == 1:
        return sum(min(x, seq_len) for x in ordered)
    k = min(n, _QUANTILE_POINTS)
    expected, prev = 0.0, 0.0
    for j in range(1, k + 1):
        cur = (j / k) ** batch
        expected += min(ordered[-(-j * n // k) - 1], seq_len) * (cur - prev)  # the j-th of k quantiles
        prev = cur
    return round(n * expected)


def analyze(source: str | Path, *, seq_len: int = 2048, micro_batch_size: int = 1, max_context: int | None = None,
            tokenizer_json: Path | None = None, vocab_size: int | None = None, split: str = "train",
            count_all: bool = False) -> DatasetStats:
    """Read `source` once and return its statistics, or raise `DataError` naming every bad record."""
    file_format, word, records = iter_records(source, split)
    if tokenizer_json:
        counter = SampledCounter(TokenizerCounter(tokenizer_json), exact_first=None if count_all else 50_000)
    else:
        counter = CharCounter(vocab_size)
    errors: dict[str, Problem] = defaultdict(Problem)
    warnings: dict[str, Problem] = {k: Problem() for k in WARNING_TEXT}

    head: list[tuple[int, dict | BadRecord]] = []
    for item in records:
        head.append(item)
        if len(head) >= DETECT_WINDOW:
            break
    kinds = Tally(f.key for _, r in head if not isinstance(r, BadRecord) for f in [detect(r)] if f)
    if not kinds:
        first = next(((n, r) for n, r in head if not isinstance(r, BadRecord)), None)
        if first is None:
            if head:
                n, bad = head[0]
                shape = {"jsonl": "JSON Lines: one JSON object per line", "csv": "CSV: a header row naming the "
                         "columns, then one example per row", "json": "a JSON list of objects"}.get(file_format,
                                                                                                      "readable")
                raise DataError(f"{source}: no record could be read ({word} {n}: {bad.reason}). "
                                f"Check that the file is {shape}.")
            raise DataError(f"{source}: the file holds no examples.")
        n, rec = first
        raise DataError(
            f"{source}: {word} {n} has fields {sorted(rec)}, which match no format ftplan knows. Use 'messages' "
            "(chat), 'prompt'+'completion', 'text', 'prompt'+'chosen'+'rejected' (preference), "
            "'prompt'+'completion'+'label' (KTO) or 'prompt' alone (GRPO)."
        )
    fmt = BY_KEY[kinds.most_common(1)[0][0]]

    lengths: list[int] = []
    labels: Tally = Tally()
    seen: set[int] = set()
    pending: list = []
    pending_loc: list[int] = []
    examples = 0

    def flush() -> None:
        if not pending:
            return
        try:
            counts = counter.count(pending)
        except Exception:  # a chat template rejected one of them: find which, count the rest
            counts = []
            for seq, loc in zip(pending, pending_loc, strict=True):
                render_error = getattr(counter, "render_error", None)
                reason = render_error(seq) if render_error and not isinstance(seq, str) else None
                if reason:
                    errors["template_error"].add(loc, reason)
                    counts.append(0)
                else:
                    counts.append(counter.count([seq])[0])
        for n, loc in zip(counts, pending_loc, strict=True):
            if not n:
                continue
            lengths.append(n)
            if n > seq_len:
                warnings["truncated"].add(loc)
            if max_context and n > max_context:
                warnings["over_context"].add(loc, f"context is {max_context} tokens")
        pending.clear()
        pending_loc.clear()

    def take(loc: int, rec: dict | BadRecord) -> None:
        nonlocal examples
        if isinstance(rec, BadRecord):
            errors["bad_json"].add(loc, rec.reason)
            return
        found: list[Finding] = check(rec, fmt)
        bad = [f for f in found if f.is_error]
        for f in found:
            (errors[f.kind] if f.is_error else warnings[f.kind]).add(loc, f.detail)
        if bad:
            return
        examples += 1
        seqs = sequences(rec, fmt)
        key = hash(repr(seqs))
        if key in seen:
            warnings["duplicate"].add(loc)
        seen.add(key)
        if fmt.key == "unpaired_preference":
            labels["desirable" if rec["label"] in (True, 1) else "undesirable"] += 1
        pending.extend(seqs)
        pending_loc.extend([loc] * len(seqs))
        if len(pending) >= CHUNK:
            flush()

    for loc, rec in head:
        take(loc, rec)
    for loc, rec in records:
        take(loc, rec)
    flush()

    if errors:
        parts = [f"{p.count} {word}{'s' if p.count != 1 else ''} {_phrase(ERROR_TEXT, k, p.count)} ({_where(word, p)}; "
                 f"first: {p.detail})" for k, p in errors.items()]
        raise DataError(
            f"{source} ({fmt.description}): " + "; ".join(parts) + ". Nothing was skipped silently: fix these "
            f"{word}s (or remove them) and run again."
        )
    ordered = sorted(lengths)
    kept = sum(min(n, seq_len) for n in lengths)
    notes = []
    if getattr(counter, "template_note", ""):
        notes.append(counter.template_note)
    long_texts = getattr(getattr(counter, "inner", counter), "long_texts", 0)
    if long_texts:
        from .tokencount import LONG_TEXT_CHARS

        notes.append(f"{long_texts:,} sequence(s) longer than {LONG_TEXT_CHARS:,} characters: counted on their first "
                     f"{LONG_TEXT_CHARS:,} characters and scaled by length, +/-{100 * counter.uncertainty:.1f} % "
                     "on the total (training truncates them at --seq-len).")
    if isinstance(counter, SampledCounter) and counter.estimated:
        notes.append(f"{len(lengths) - counter.estimated:,} of {len(lengths):,} sequences tokenized exactly (the first "
                     f"{counter.exact_first:,}, then 1 in {counter.every}); the rest from this file's own tokens per "
                     f"character (+/-{100 * counter.uncertainty:.2f} %). --count-all tokenizes every one.")
    elif not counter.exact and hasattr(counter, "ratio"):
        notes.append(f"Token counts estimated from characters ({counter.ratio:.2f} chars/token, "
                     f"+/-{100 * counter.uncertainty:.0f} %); pass --tokenizer or a --model folder with "
                     "tokenizer.json for exact counts.")
    return DatasetStats(
        source=str(source), file_format=file_format, data_format=fmt, location_word=word, examples=examples,
        sequences=len(lengths), counter=counter.name, exact=counter.exact, uncertainty=counter.uncertainty,
        tokens=sum(lengths), tokens_kept=kept, padded_tokens=_padded(ordered, micro_batch_size, seq_len),
        lengths={"p50": _quantile(ordered, 0.5), "p95": _quantile(ordered, 0.95), "max": ordered[-1] if ordered else 0,
                 "mean": round(sum(ordered) / len(ordered)) if ordered else 0},
        seq_len=seq_len, micro_batch_size=micro_batch_size, labels=dict(labels), warnings=warnings, notes=notes,
        padded_by_batch={b: _padded(ordered, b, seq_len) for b in PADDING_BATCHES},
    )
