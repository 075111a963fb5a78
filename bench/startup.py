"""Cold start-up time of the planner's JSON path.

    python bench/startup.py [--runs 7]

Runs `ftplan estimate --model llama-3.1-8b --json` in fresh processes and prints the median wall
time (target <= 0.2 s on a 2-core machine), and checks that the run imported no torch,
transformers or rich.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    exe = shutil.which("ftplan") or str(Path(sys.executable).parent / "ftplan")
    cmd = [exe, "estimate", "--model", "llama-3.1-8b", "--json"]
    subprocess.run(cmd, check=True, capture_output=True)  # warm the OS file cache, not Python
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    print(f"ftplan estimate --model llama-3.1-8b --json: median {statistics.median(times):.3f} s "
          f"over {args.runs} runs (min {min(times):.3f}, max {max(times):.3f}); target <= 0.200 s", flush=True)
    probe = ("import sys, runpy; sys.argv=['ftplan','estimate','--model','llama-3.1-8b','--json'];\n"
             "from ftplan.launcher.cli import cli\n"
             "try:\n    cli(prog_name='ftplan')\nexcept SystemExit:\n    pass\n"
             "heavy=[m for m in ('torch','transformers','rich') if m in sys.modules]\n"
             "print('heavy modules imported:', heavy or 'none', file=sys.stderr)")
    subprocess.run([sys.executable, "-c", probe], check=True, stdout=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
