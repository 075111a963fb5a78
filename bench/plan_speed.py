"""How fast the planner answers: one full plan search, and counting a 1M-line data file.

    python bench/plan_speed.py [--lines 1000000] [--tokenizer path/to/tokenizer.json]

Prints the median wall time of the hardware search for one job (target <= 100 ms; the data
analysis is timed separately) and the time to stream, check and count a generated JSONL file of
`--lines` chat examples, by characters and, when `--tokenizer` is given, with a real tokenizer.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ftplan.sizing.catalog import resolve_model
from ftplan.sizing.dataformat import BY_KEY
from ftplan.sizing.dataset import PADDING_BATCHES, _padded, analyze
from ftplan.sizing.method import recommend
from ftplan.sizing.plan import Workload, search
from ftplan.sizing.prices import load_prices
from ftplan.sizing.setup import TrainingSetup


def time_search(model: str, runs: int = 20) -> tuple[float, int]:
    src = resolve_model(model)
    book = load_prices()
    choice = recommend(BY_KEY["messages"], examples=50_000, tokens=25_000_000, model_id=src.model_id,
                       params=src.arch.total_params)
    # 50,000 chats of ~500 tokens (log-normal lengths): the search weighs packing against padding too
    rng = random.Random(0)
    lengths = sorted(min(2048, max(8, int(rng.lognormvariate(6.0, 0.6)))) for _ in range(50_000))
    padded = {b: _padded(lengths, b, 2048) for b in PADDING_BATCHES}
    work = Workload(padded[1], sum(lengths), choice.epochs, choice.objective, 2048, padded_by_batch=padded,
                    sequences=len(lengths), seq_len=2048, longest=lengths[-1], mean_length=sum(lengths) / len(lengths))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        plans, _ = search(src.arch, work, choice, TrainingSetup(), book)
        times.append(time.perf_counter() - t)
    return statistics.median(times), len(plans)


def write_file(path: Path, lines: int) -> None:
    with path.open("w") as fh:
        for i in range(lines):
            fh.write(json.dumps({"messages": [
                {"role": "user", "content": f"Question {i}: what is {i % 97} times {i % 89}?"},
                {"role": "assistant", "content": f"It is {(i % 97) * (i % 89)}. " + "Let me explain. " * (i % 7)},
            ]}) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--tokenizer", type=Path, default=None)
    ap.add_argument("--model", default="llama-3.1-8b")
    args = ap.parse_args(argv)
    secs, n = time_search(args.model)
    print(f"plan search ({args.model}, all providers, {n} plans that fit): median {secs * 1e3:.1f} ms "
          "(target <= 100 ms)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        write_file(path, args.lines)
        size = path.stat().st_size / 2**20
        t = time.perf_counter()
        stats = analyze(path)
        print(f"count {args.lines:,} lines ({size:,.0f} MiB) by characters: {time.perf_counter() - t:.1f} s, "
              f"{stats.tokens:,} tokens")
        if args.tokenizer:
            t = time.perf_counter()
            stats = analyze(path, tokenizer_json=args.tokenizer)
            print(f"count {args.lines:,} lines with {args.tokenizer}: {time.perf_counter() - t:.1f} s, "
                  f"{stats.tokens:,} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
