"""``atml sweep`` beside the shell loop it replaces: 8 smoke cells of compare.probe (2 models x 2 datasets x 2 seeds).

    python scripts/sweep_bench.py                      # writes benchmarks/sweep-cpu.json
    python scripts/sweep_bench.py --json other.json

Three ways in one session, each in fresh processes on a warm dataset cache (one run first):

- ``loop``: ``for cell: atml run compare.probe --preset smoke --set ...`` one after another (the baseline);
- ``sweep --parallel 1``: the same cells through submitit's LocalExecutor one at a time: its wall time minus the
  loop's, per cell, is what dispatching through submitit costs;
- ``sweep --parallel 2``: two cells at a time (the default on this machine): the speed-up over the loop.

Also the largest resident high-water mark among each command's processes (``/usr/bin/time``'s, which counts the
processes it waited for: with the sweep, a cell's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATML = [sys.executable, "-m", "atml"]
MODELS = ["[digits-resnet-small]", "[vit-digits]"]
DATA = ["generated-cifar10", "digits"]
SEEDS = [0, 1]


def _timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and the process's own resident high-water mark (MB) of one command."""
    started = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb=%M", *command], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    match = re.search(r"maxrss_kb=(\d+)", out.stderr)
    return seconds, int(match.group(1)) / 1024 if match else float("nan")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "sweep-cpu.json"))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="atml-sweep-bench-"))
    cells = [(m, d, s) for m in MODELS for d in DATA for s in SEEDS]
    grid = ["compare.probe", "--preset", "smoke", "--grid", "models=" + "|".join(MODELS),
            "--grid", "data=" + ",".join(DATA), "--grid", "seed=" + ",".join(map(str, SEEDS))]
    _timed([*ATML, "run", "compare.probe", "--preset", "smoke", "--out", "warm"], work)  # data cached, imports warm
    loop = 0.0
    for m, d, s in cells:
        seconds, _ = _timed([*ATML, "run", "compare.probe", "--preset", "smoke", "--set", f"models={m}",
                             "--set", f"data={d}", "--set", f"seed={s}", "--out", "loop"], work)
        loop += seconds
    one, one_rss = _timed([*ATML, "sweep", *grid, "--out", "p1", "--parallel", "1"], work)
    two, two_rss = _timed([*ATML, "sweep", *grid, "--out", "p2", "--parallel", "2"], work)
    report = {
        "command": f"python scripts/sweep_bench.py ({len(cells)} smoke cells of compare.probe: "
                   f"{len(MODELS)} models x {len(DATA)} datasets x {len(SEEDS)} seeds)",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cells": len(cells),
        "loop_s": loop, "sweep_parallel1_s": one, "sweep_parallel2_s": two,
        "speedup_parallel2": loop / two, "dispatch_overhead_per_cell_s": (one - loop) / len(cells),
        "largest_process_rss_mb": {"sweep_parallel1": one_rss, "sweep_parallel2": two_rss},
    }
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
