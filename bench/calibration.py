"""Accuracy of the planner against published measurements, out of sample.

    python bench/calibration.py            # leave-one-source-out figures (about a minute)
    python bench/calibration.py --rows     # and every row with its out-of-sample prediction
    python bench/calibration.py --in-sample  # only the constants in sizing/constants.py, on all rows

Reads both published sets in bench/data/ (rows.py says how each row is read). For each source
(a repository or web site), the constants are refitted on every other source
(fit_constants.fit) and that source's rows are predicted with them: the leave-one-source-out
figures are the ones to quote. Beside them: the same figures with the constants in the file
(fitted on everything: in-sample, labelled so), and for throughput the rule of thumb
"tokens/s = GPUs x peak x 35 % / 6N" on the same rows.

Memory: n, median and p90 of |error|; every OOM row should be flagged (estimate above the card),
and no row that ran should be called "does not fit" on the card it ran on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit_constants as F  # noqa: E402
import rows  # noqa: E402

from ftplan.sizing.catalog import resolve_model  # noqa: E402
from ftplan.sizing.gpus import get_gpu  # noqa: E402
from ftplan.sizing.memory import FITS, TIGHT, TOO_BIG, estimate_memory, fit_verdict  # noqa: E402

GIB = 2**30
RULE_OF_THUMB_MFU = 0.35


def stats(errs: list[float]) -> dict:
    if not errs:
        return {"n": 0}
    errs = sorted(abs(e) for e in errs)
    p90 = errs[min(len(errs) - 1, int(round(0.9 * (len(errs) - 1))))]
    return {"n": len(errs), "median_pct": round(100 * statistics.median(errs), 1), "p90_pct": round(100 * p90, 1)}


def rule_of_thumb(case: rows.Case) -> float:
    """tokens/s = GPUs x dense peak x 35 % / (6 x parameters)."""
    peak = get_gpu(case.gpu).bf16_tflops * 1e12
    return case.setup.gpus * peak * RULE_OF_THUMB_MFU / (6 * resolve_model(case.model).arch.total_params)


def fit_checks(cases: list[rows.Case]) -> dict:
    """The fit verdict on the card each row ran on (or ran out of memory on).

    Every OOM row should be flagged (a verdict other than "fits": "tight" or "does not fit"), and no row
    that ran should be called "does not fit".
    """
    oom, flagged, ran, refused, tight, lines = 0, 0, 0, [], 0, []
    for c in cases:
        if c.capacity_gib is None or c.row["outcome"] == "max_context_fits":
            continue
        need = estimate_memory(resolve_model(c.model).arch, c.setup).per_gpu
        verdict = fit_verdict(need, c.capacity_gib * GIB)
        line = f"{c.row['id']} {c.row['outcome']:4s} {c.model:34s} needs {need / GIB:6.1f} GiB of {c.capacity_gib:5.1f}"
        if c.row["outcome"] == "OOM":
            oom += 1
            flagged += verdict != FITS
            lines.append(f"{line}: {verdict}{'' if verdict != FITS else '  MISSED'}")
        elif c.row["outcome"] == "ok":
            ran += 1
            tight += verdict == TIGHT
            if verdict == TOO_BIG:
                refused.append(c.row["id"])
                lines.append(f"{line}: called does not fit")
    return {"oom_rows": oom, "oom_flagged": flagged, "ran_rows": ran, "ran_tight": tight,
            "ran_called_too_big": refused, "lines": lines}


def predictions(cases: list[rows.Case]) -> dict[str, dict]:
    """Predicted memory and speed for each case with the constants currently set."""
    out = {}
    for c in cases:
        p = {}
        if c in F.memory_rows([c]):
            p["memory"] = F.predicted_memory_gib(c)
        if c in F.speed_rows([c]):
            p["speed"] = F.predicted_tokens_per_second(c)
        out[c.row["id"]] = p
    return out


def leave_one_source_out(cases: list[rows.Case]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Each source predicted with constants fitted on all the others; and the constants per fold."""
    preds, folds = {}, {}
    for source in sorted({c.source for c in cases}):
        held = [c for c in cases if c.source == source]
        if not (F.memory_rows(held) or F.speed_rows(held)):
            continue
        values = F.fit([c for c in cases if c.source != source])
        folds[source] = values
        with F.constants(values):
            preds.update(predictions(held))
    return preds, folds


def errors(cases: list[rows.Case], preds: dict[str, dict], kind: str) -> list[float]:
    out = []
    for c in cases:
        p = preds.get(c.row["id"], {}).get(kind)
        if p is None:
            continue
        truth = c.memory_gib if kind == "memory" else c.tokens_per_second
        out.append(p / truth - 1)
    return out


def run(loso: bool = True, show_rows: bool = False) -> dict:
    cases, skipped = rows.load_cases()
    inside = predictions(cases)
    outside, folds = leave_one_source_out(cases) if loso else ({}, {})
    thumb = {c.row["id"]: {"speed": rule_of_thumb(c)} for c in F.speed_rows(cases)}
    groups = {"all": cases, **{name: [c for c in cases if c.dataset == name] for name in rows.DATA_FILES}}
    result = {"skipped": skipped, "fit": fit_checks(cases), "sets": {}, "sources": {}}
    for name, group in groups.items():
        result["sets"][name] = {
            "memory_in_sample": stats(errors(group, inside, "memory")),
            "memory_loso": stats(errors(group, outside, "memory")),
            "throughput_in_sample": stats(errors(group, inside, "speed")),
            "throughput_loso": stats(errors(group, outside, "speed")),
            "throughput_rule_of_thumb": stats(errors(group, thumb, "speed")),
        }
    for source in sorted({c.source for c in cases}):
        group = [c for c in cases if c.source == source]
        result["sources"][source] = {
            "memory_loso": stats(errors(group, outside, "memory")),
            "throughput_loso": stats(errors(group, outside, "speed")),
            "throughput_rule_of_thumb": stats(errors(group, thumb, "speed")),
        }
    result["folds"] = folds
    if show_rows:
        for c in cases:
            i, o = inside.get(c.row["id"], {}), outside.get(c.row["id"], {})
            if "memory" in i:
                print(f"{c.row['id']} memory {c.model:30s} {c.setup.adapter:5s} {c.source[:18]:18s} true "
                      f"{c.memory_gib:6.2f} in {i['memory']:6.2f} ({i['memory'] / c.memory_gib - 1:+6.1%})"
                      + (f" loso {o['memory']:6.2f} ({o['memory'] / c.memory_gib - 1:+6.1%})" if "memory" in o else ""))
            if "speed" in i:
                t = c.tokens_per_second
                print(f"{c.row['id']} speed  {c.model:30s} {c.setup.adapter:5s} {c.source[:18]:18s} true {t:7.0f} "
                      f"in {i['speed']:7.0f} ({i['speed'] / t - 1:+6.1%})"
                      + (f" loso {o['speed']:7.0f} ({o['speed'] / t - 1:+6.1%})" if "speed" in o else "")
                      + f" thumb {thumb[c.row['id']]['speed'] / t - 1:+6.1%}  {c.speed_setup.tokens_per_micro_batch} "
                      f"tok x{c.setup.gpus} {c.gpu} {c.setup.trainer}")
        print("\n".join(result["fit"]["lines"]))
    return result


def _fmt(s: dict) -> str:
    return f"n={s['n']:3d}  median {s['median_pct']:5.1f} %  p90 {s['p90_pct']:6.1f} %" if s["n"] else "n=  0"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", action="store_true", help="print every compared row")
    ap.add_argument("--in-sample", action="store_true", help="skip the leave-one-source-out refits")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = run(loso=not args.in_sample, show_rows=args.rows)
    if args.json:
        res["fit"].pop("lines")
        print(json.dumps(res, indent=1))
        return 0
    for name, s in res["sets"].items():
        print(f"[{name}]")
        if not args.in_sample:
            print(f"  memory      leave-one-source-out  {_fmt(s['memory_loso'])}   (target median <= 10, p90 <= 25)")
        print(f"  memory      in-sample             {_fmt(s['memory_in_sample'])}")
        if not args.in_sample:
            print(f"  throughput  leave-one-source-out  {_fmt(s['throughput_loso'])}"
                  "   (target median <= 20, p90 <= 60)")
        print(f"  throughput  in-sample             {_fmt(s['throughput_in_sample'])}")
        print(f"  throughput  rule of thumb         {_fmt(s['throughput_rule_of_thumb'])}")
    if not args.in_sample:
        print("per source (leave-one-source-out):")
        for source, s in res["sources"].items():
            print(f"  {source:45s} memory {_fmt(s['memory_loso'])}   speed {_fmt(s['throughput_loso'])}"
                  f"   thumb {_fmt(s['throughput_rule_of_thumb'])}")
    f = res["fit"]
    print(f"OOM rows flagged as not fitting: {f['oom_flagged']} of {f['oom_rows']}   (target: all)")
    print(f"rows that ran, called 'does not fit' on their card: {len(f['ran_called_too_big'])} of {f['ran_rows']}"
          f" {f['ran_called_too_big'] or ''}  (target: none; {f['ran_tight']} called 'tight')")
    print("not expressible: " + ", ".join(f"{k} ({v})" for k, v in sorted(res["skipped"].items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
