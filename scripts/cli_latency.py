"""How long the ``atml`` command takes to answer at the prompt, beside ``python -c pass`` in the same run.

    python scripts/cli_latency.py            # writes benchmarks/cli-latency-cpu.json (README's table)

Each command runs ``--repeats`` times as its own process (the console script of this environment); the median wall
time is kept. ``import torch`` is timed too: what every answer cost before the CLI stopped importing it up front.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [["--version"], ["--help"], ["list"], ["models"], ["run", "resnet.nope"],
            ["run", "resnet.head", "--preset", "huge"], ["run", "resnet.head", "--bogus"], ["sweep", "resnet.nope"],
            ["run", "resnet.head", "--set", "epoch=3"], ["run", "resnet.head", "--set", "epochs=-1"],
            ["run", "compare.cka", "--preset", "demo", "--set", "models=[a]"]]
"""The answers a user waits on; the last (a config value, checked by the experiment's config class) imports the
experiment and is shown for scale."""


def timed(argv: list[str], repeats: int) -> tuple[float, int]:
    """Median seconds of ``argv`` over ``repeats`` processes, and its exit code."""
    times, code = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        code = subprocess.run(argv, capture_output=True, cwd=ROOT).returncode
        times.append(time.perf_counter() - start)
    return statistics.median(times), code


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "cli-latency-cpu.json"))
    args = parser.parse_args(argv)
    atml = str(Path(sys.executable).with_name("atml"))
    base, _ = timed([sys.executable, "-c", "pass"], args.repeats)
    torch_s, _ = timed([sys.executable, "-c", "import torch"], args.repeats)
    rows = []
    for command in COMMANDS:
        seconds, code = timed([atml, *command], args.repeats)
        rows.append({"command": "atml " + " ".join(command), "seconds": round(seconds, 3), "exit": code,
                     "over_python": round(seconds - base, 3)})
        print(f"{rows[-1]['command']:<42} {seconds:6.2f} s  exit {code}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    report = {"command": "python scripts/cli_latency.py " + " ".join(argv), "date": time.strftime("%Y-%m-%d"),
              "commit": commit.stdout.strip(), "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "repeats": args.repeats, "python_pass_s": round(base, 3),
              "import_torch_s": round(torch_s, 3), "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"python -c pass {base:.2f} s, import torch {torch_s:.2f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
