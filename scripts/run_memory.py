"""Peak anonymous memory and wall time of one ``atml run`` at several values of one option.

    python scripts/run_memory.py --json benchmarks/attention-memory-cpu.json --vary stats_images=16,64 -- \\
        run vit.attention --preset smoke --set arch=timm/vit_small_patch14_reg4_dinov2

Each value runs in a fresh process (``python -m atml ... --set KEY=VALUE``, ``--out`` a
temporary folder). Two figures: the kernel's high-water mark of its resident memory (exact:
``ru_maxrss`` from ``wait4``, file pages of the libraries included) and its peak *anonymous*
resident memory (``RssAnon``, sampled from here every 20 ms, so a short-lived peak can be
missed, more often in a short run). A flat high-water mark across the values says the run's
memory does not grow with that option (images read, images averaged over).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_scale import _anon, _tree  # noqa: E402  - the same sampling as the data benchmark


def measure(argv: list[str], out: Path) -> dict:
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen([sys.executable, "-m", "atml", *argv, "--out", str(out)], stdout=log, stderr=log,
                                 env={**os.environ, "TQDM_DISABLE": "1"})
        peak = 0
        while True:  # reaped with wait4, which also gives the kernel's high-water mark of its resident memory
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, sum(_anon(p) for p in _tree(child.pid)))
            time.sleep(0.02)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        log.seek(0)
        text = log.read()
    if child.returncode:
        raise SystemExit(f"atml {' '.join(argv)} failed (exit {child.returncode}):\n{text[-3000:]}")
    run = next(out.iterdir())
    results = json.loads((run / "results.json").read_text())
    return {"seconds": seconds, "peak_anon_mb": peak / 2**20, "peak_rss_mb": usage.ru_maxrss / 1024,
            "status": results["status"],
            "run_peak_memory_mb": results["metrics"].get("peak_memory_mb")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vary", required=True, help="KEY=V1,V2,...: one run per value")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the atml arguments (run NAME ...)")
    args = parser.parse_args(argv)
    command = [a for a in args.command if a != "--"]
    key, _, values = args.vary.partition("=")
    import torch

    report = {"date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or platform.machine(),
              "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
              "command": "atml " + " ".join(command), "vary": key, "rows": []}
    with open("/proc/cpuinfo") as handle:
        report["cpu"] = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                             report["cpu"])
    for value in values.split(","):
        with tempfile.TemporaryDirectory() as out:
            row = {key: value, **measure([*command, "--set", f"{key}={value}"], Path(out))}
        report["rows"].append(row)
        print(f"{key}={value}: {row['seconds']:.1f} s, high-water mark {row['peak_rss_mb']:,.0f} MB, sampled peak "
              f"anonymous {row['peak_anon_mb']:,.0f} MB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
