"""Fit the estimator constants on all expressible published rows (grid search).

    python bench/fit_constants.py

Prints the best values for the memory constants (objective: median + p90/2 of |error|) and for
the speed constants (objective: median |error|) over every row bench/calibration.py can express.
It changes nothing: copy the values into sizing/constants.py, then rerun bench/calibration.py.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import calibration  # noqa: E402

from ftplan.sizing import constants as C  # noqa: E402

MEMORY_GRID = {
    "ACTIVATION_OVERHEAD": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5],
    "ALLOCATOR_OVERHEAD": [0.03, 0.06, 0.1, 0.15],
    "LOGITS_BYTES_STANDARD_EXTRA": [10, 12, 14, 16, 18],
    "CUDA_CONTEXT_BYTES": [int(g * 2**30) for g in (0.3, 0.5, 0.8)],
}
SPEED_GRID = {
    "MFU_PEAK": [0.5, 0.6, 0.7, 0.8, 0.9],
    "MFU_HALF_TOKENS": [0, 64, 128, 256],
    "MFU_HALF_WIDTH": [0, 128, 256, 512],
    "MFU_ADAPTER_FACTOR": [0.6, 0.7, 0.8, 0.9, 1.0],
}


def search(grid: dict, score) -> tuple[float, dict]:
    best = (float("inf"), {})
    names = list(grid)
    for values in itertools.product(*(grid[n] for n in names)):
        for n, v in zip(names, values, strict=True):
            setattr(C, n, v)
        res = calibration.run(calibration.DEFAULT_DATA)
        s = score(res)
        if s < best[0]:
            best = (s, dict(zip(names, values, strict=True)), res)
    for n, v in best[1].items():
        setattr(C, n, v)
    return best


def main() -> int:
    mem = search(MEMORY_GRID, lambda r: r["memory"]["median_pct"] + r["memory"]["p90_pct"] / 2)
    print("memory:", mem[1], mem[2]["memory"], mem[2]["oom"])
    spd = search(SPEED_GRID, lambda r: r["throughput"]["median_pct"])
    print("speed :", spd[1], spd[2]["throughput"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
