"""What one very long line costs `ftplan estimate`: wall time and peak memory, with a real tokenizer.

    python bench/long_line.py [--mb 50]

Writes a chat JSONL whose single record holds an assistant turn of `--mb` megabytes, trains a
byte-level BPE tokenizer on the spot (no download) and runs `ftplan estimate FILE --tokenizer ...`
in a child process, then prints its wall time and peak RSS (getrusage of the child). A sequence
longer than 200,000 characters is counted on its head and scaled by its length
(`sizing/tokencount.py`, LONG_TEXT_CHARS), so the cost stays bounded whatever the line's length.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=8000, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [f"the quick brown fox {i} jumps over the lazy dog; what is {i} plus {i}?" for i in range(20000)]
    tok.train_from_iterator(corpus, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=50.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        words = "the quick brown fox jumps over the lazy dog and what is two plus two ".split()
        size = int(args.mb * 1e6)
        text = (" ".join(words) + " ") * (size // (len(" ".join(words)) + 1) + 1)
        record = {"messages": [{"role": "user", "content": "summarise this"},
                               {"role": "assistant", "content": text[:size]}]}
        data = tmp / "long.jsonl"
        data.write_text(json.dumps(record) + "\n")
        tok = tokenizer(tmp / "tok")
        cmd = [sys.executable, "-m", "ftplan.launcher.cli", "estimate", str(data), "--model", "llama-3.1-8b",
               "--tokenizer", str(tok), "--json"]
        start = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB -> MiB (Linux)
        if res.returncode != 0:
            sys.exit(res.stderr)
        ds = json.loads(res.stdout)["dataset"]
        print(f"file {data.stat().st_size / 1e6:,.1f} MB, one line: estimate took {wall:,.2f} s, peak RSS "
              f"{peak:,.0f} MiB; tokens counted {ds['tokens']:,} (+/-{ds['token_uncertainty_pct']:g} %)")


if __name__ == "__main__":
    main()
