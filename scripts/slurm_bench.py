"""The same 8-cell grid through ``--executor local`` and ``--executor slurm`` (the real cluster of
``scripts/slurm_cluster.sh``): wall time, and per cell what the dispatch adds.

    bash scripts/slurm_cluster.sh start          # root; once
    python scripts/slurm_bench.py                # writes benchmarks/sweep-slurm-cpu.json

Per cell, from the controller's own lines (stamped as they are printed) and the cell's log (submitit stamps
"Starting" and "Job completed successfully" to the millisecond):

- ``start_s``: from the moment the cell could start (its submission, or for a cell that waited for a free slot
  - 2 cells run at once here - the end of the cell whose slot it took) to its job starting;
- ``seen_s``: from the job's end to the controller's "done" line.

Both executors run 2 cells at a time on this 2-core machine (local: ``--parallel 2``; Slurm: one CPU per cell).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATML = [sys.executable, "-m", "atml"]
GRID = ["compare.probe", "--preset", "smoke", "--grid", "models=[digits-resnet-small]|[vit-digits]",
        "--grid", "data=generated-cifar10,digits", "--grid", "seed=0,1"]
PARALLEL = 2
STAMP = re.compile(r"submitit INFO \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\) - (Starting with|Job completed)")


def _stamps(log: Path) -> tuple[float, float]:
    """The job's (last) start and its end, as epoch seconds, from submitit's lines in the cell's log."""
    start = end = float("nan")
    for when, what in STAMP.findall(log.read_text()):
        seconds = datetime.datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        start, end = (seconds, end) if what == "Starting with" else (start, seconds)
    return start, end


def sweep(executor: str, work: Path) -> dict[str, object]:
    extra = ["--parallel", str(PARALLEL)] if executor == "local" else []
    command = [*ATML, "sweep", *GRID, "--executor", executor, "--out", executor, *extra]
    began = time.time()
    proc = subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    submitted: dict[str, float] = {}
    seen: dict[str, float] = {}
    logs: dict[str, Path] = {}
    for line in proc.stdout:
        now = time.time()
        if match := re.match(r"atml: cell (\S+): job \S+, log (\S+)", line):
            submitted[match[1]], logs[match[1]] = now, Path(match[2])
        elif match := re.match(r"atml: cell (\S+): done", line):
            seen[match[1]] = now
    if proc.wait() != 0 or len(seen) != 8:
        raise SystemExit(f"{' '.join(command)} failed (exit {proc.returncode}, {len(seen)} of 8 cells done)")
    wall = time.time() - began
    stamps = {cell: _stamps(log) for cell, log in logs.items()}
    ends = sorted(end for _, end in stamps.values())
    order = sorted(stamps, key=lambda cell: stamps[cell][0])
    start_s = [stamps[cell][0] - max(submitted[cell], ends[i - PARALLEL] if i >= PARALLEL else 0.0)
               for i, cell in enumerate(order)]
    seen_s = [seen[cell] - stamps[cell][1] for cell in stamps]
    return {"wall_s": wall, "start_s": _summary(start_s), "seen_s": _summary(seen_s),
            "cells": {cell: {"start_s": s, "seen_s": seen[cell] - stamps[cell][1]}
                      for cell, s in zip(order, start_s)}}


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "max": max(values)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "sweep-slurm-cpu.json"))
    args = parser.parse_args(argv)
    if subprocess.run(["bash", str(ROOT / "scripts" / "slurm_cluster.sh"), "status"]).returncode != 0:
        raise SystemExit("no Slurm cluster is up: bash scripts/slurm_cluster.sh start (as root)")
    work = Path(tempfile.mkdtemp(prefix="atml-slurm-bench-"))
    subprocess.run([*ATML, "run", "compare.probe", "--preset", "smoke", "--out", "warm"], cwd=work, check=True,
                   capture_output=True)  # data cached, imports warm
    results = {executor: sweep(executor, work) for executor in ("local", "slurm")}
    version = subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.strip()
    storage = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    accounting = re.search(r"AccountingStorageType\s*=\s*(\S+)", storage)
    report = {
        "command": "python scripts/slurm_bench.py (8 smoke cells of compare.probe: 2 models x 2 datasets x 2 seeds, "
                   f"{PARALLEL} at a time)",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "slurm": version,
        "accounting": accounting[1] if accounting else "unknown", "executors": results,
    }
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "executors"} | {
        e: {k: v for k, v in r.items() if k != "cells"} for e, r in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
