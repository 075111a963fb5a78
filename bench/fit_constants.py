"""Fit the estimator constants on published rows (coordinate descent over a grid per constant).

    python bench/fit_constants.py

Prints the values that fit every expressible row of every source best. It changes nothing: copy
the values into sizing/constants.py, then rerun bench/calibration.py. bench/calibration.py calls
`fit()` once per source on all the other sources to score leave-one-source-out.

Objectives: memory, median + p90/2 of |relative error| (a few rows of another program must not
drag the rest); speed, the mean |log(predicted / measured)| over the rows (symmetric in over- and
under-prediction; weighting each source equally instead was tried and scored worse out of sample).
Every fit starts from the same neutral values (the middle of each grid), never from the constants in
the file, so a left-out source cannot leak in through a starting point.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rows  # noqa: E402

from ftplan.sizing import constants as C  # noqa: E402
from ftplan.sizing.catalog import resolve_model  # noqa: E402
from ftplan.sizing.gpus import get_gpu  # noqa: E402
from ftplan.sizing.memory import estimate_memory  # noqa: E402
from ftplan.sizing.throughput import estimate_throughput  # noqa: E402

GIB = 2**30
# Each grid spans what is physically plausible, so a fit cannot trade one term for an absurd other: no
# eager matmul sustains more than 80 % of peak, eager elementwise work touches a layer's saved bytes a
# handful of times per pass, a layer's kernel launches cost milliseconds at most.
MEMORY_GRID = {
    "ACTIVATION_OVERHEAD": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5],
    "ALLOCATOR_OVERHEAD": [0.03, 0.06, 0.1, 0.15],
    "LOGITS_BYTES_STANDARD_EXTRA": [8, 10, 12, 14],  # see constants.py: 8 to 14 bytes beyond the logits
    "CUDA_CONTEXT_BYTES": [int(g * 2**30) for g in (0.3, 0.5, 0.8, 1.0)],
}
SPEED_GRID = {
    "MATMUL_EFFICIENCY": [0.4, 0.5, 0.6, 0.7, 0.8],
    "MATMUL_HALF_WIDTH": [0, 128, 256, 512, 1024],
    "ELEMENTWISE_PASSES": [0.0, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0],
    "LAYER_SECONDS": [0.0, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.007],
    # a module call launches kernels forward, backward and on recompute: never free
    "MODULE_SECONDS": [0.0001, 0.0002, 0.0004, 0.0006, 0.0008, 0.001],
    "SHARDED_LAYER_SECONDS": [0.0, 0.001, 0.002, 0.004, 0.006, 0.01],
    "STEP_SECONDS": [0.0, 0.01, 0.02, 0.05, 0.1],
    "OPTIMIZER_STEP_SECONDS": [0.0, 0.01, 0.02, 0.05, 0.1, 0.2],
    "FUSED_LAUNCH_FRACTION": [0.1, 0.25, 0.5, 0.75, 1.0],
    "FUSED_ELEMENTWISE_FRACTION": [0.1, 0.25, 0.5, 0.75, 1.0],
    "LINK_EFFICIENCY": [0.1, 0.2, 0.35, 0.5, 0.7, 0.9],
    "COMM_OVERLAP": [0.0, 0.2, 0.4, 0.6, 0.8],
}


@contextlib.contextmanager
def constants(values: dict):
    """Set estimator constants for the duration of a block."""
    old = {k: getattr(C, k) for k in values}
    for k, v in values.items():
        setattr(C, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(C, k, v)


def predicted_memory_gib(case: rows.Case) -> float:
    """The figure comparable with what the row's source measured."""
    est = estimate_memory(resolve_model(case.model).arch, case.setup)
    if case.metric == "allocated":
        return est.allocated / GIB
    if case.metric == "reserved":
        return (est.allocated + est.components["allocator_overhead"]) / GIB
    return est.per_gpu / GIB


def predicted_tokens_per_second(case: rows.Case) -> float:
    return estimate_throughput(resolve_model(case.model).arch, case.speed_setup, get_gpu(case.gpu)).tokens_per_second


def memory_rows(cases: list[rows.Case]) -> list[rows.Case]:
    return [c for c in cases if c.memory_gib and c.row["outcome"] in ("ok", "max_context_fits")]


def speed_rows(cases: list[rows.Case]) -> list[rows.Case]:
    return [c for c in cases if c.tokens_per_second and c.gpu]


def memory_score(cases: list[rows.Case]) -> float:
    errs = sorted(abs(predicted_memory_gib(c) / c.memory_gib - 1) for c in cases)
    return statistics.median(errs) + errs[int(0.9 * (len(errs) - 1))] / 2


def speed_score(cases: list[rows.Case]) -> float:
    """Mean |log error| over the rows (symmetric in over- and under-prediction, no row ignored)."""
    return statistics.fmean(abs(math.log(predicted_tokens_per_second(c) / c.tokens_per_second)) for c in cases)


def _descend(grid: dict, score, rounds: int = 4) -> dict:
    values = {k: v[len(v) // 2] for k, v in grid.items()}
    with constants(values):
        best = score()
        for _ in range(rounds):
            changed = False
            for name, options in grid.items():
                for v in options:
                    if v == values[name]:
                        continue
                    setattr(C, name, v)
                    s = score()
                    if s < best - 1e-9:
                        best, values[name], changed = s, v, True
                setattr(C, name, values[name])
            if not changed:
                break
    return values


def fit(cases: list[rows.Case]) -> dict:
    """Constants fitted on these rows: memory first, then speed (which reads the memory model)."""
    mem = memory_rows(cases)
    values = _descend(MEMORY_GRID, lambda: memory_score(mem)) if mem else {}
    spd = speed_rows(cases)
    with constants(values):
        values.update(_descend(SPEED_GRID, lambda: speed_score(spd)) if spd else {})
    return values


def main() -> int:
    cases, _ = rows.load_cases()
    values = fit(cases)
    for k, v in values.items():
        print(f"{k} = {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
