"""Check atml itself on a GPU: every experiment on CUDA, its speed beside timm's loops, torchrun, memory.

No download: the smoke preset's generated data and random weights. Four parts, one JSON file:

(a) every registered experiment at the smoke preset with ``--device cuda`` (in this process,
    through ``atml.runner``), with its status, seconds and peak GPU memory;
(b) ``atml speed``: atml's frozen-feature path for ResNet-152 and DeiT-S beside timm's plain
    benchmark loop, and atml's fine-tuning loop beside a plain training step, in img/s with
    the ratio (``--compile MODE`` adds the torch.compiled feature path), plus the GEMM rate in
    fp32 and bf16 measured in the same run;
(c) one experiment under ``torchrun --nproc-per-node 1`` (nccl on a GPU, gloo on a CPU);
(d) peak GPU memory of each part.

    python scripts/gpu_check.py --json benchmarks/gpu-check-H200.json   # a GPU machine: under 6 minutes
    python scripts/gpu_check.py --cpu --quick                          # the same paths on a CPU (tests)

Exit status 0 when every part ran, 1 when one failed (the JSON says which), 2 without a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from atml import config as config_lib
from atml import runtime
from atml import speedtest as speed
from atml.console import QUIET
from atml.suite import registry

TORCHRUN_EXPERIMENT = "resnet.transfer"


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_experiments(device: torch.device, names: list[str], out: Path) -> list[dict[str, Any]]:
    """(a): each experiment's smoke preset on ``device``, in this process, as ``atml run`` runs it."""
    from atml import runner

    rows = []
    for name in names:
        exp = registry().get(name)
        cfg = config_lib.build(exp.config_cls, exp.presets, "smoke", [f"device={device.type}", "offline=true"])
        reset_peak(device)
        started = time.perf_counter()
        row: dict[str, Any] = {"experiment": name}
        try:
            run = runner.execute(exp, cfg, preset="smoke", out=out, report=QUIET)
            row["status"] = json.loads((run.path / "results.json").read_text())["status"]
        except Exception as err:  # noqa: BLE001 - the check reports every failure and goes on
            row["status"] = "crashed"
            row["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            row["traceback"] = traceback.format_exc()[-2000:]
        row["seconds"] = time.perf_counter() - started
        row["peak_gib"] = peak_gib(device)
        print(f"  {name:<16} {row['status']:<8} {row['seconds']:6.1f} s"
              + (f"  peak {row['peak_gib']:.2f} GiB" if row["peak_gib"] is not None else "")
              + (f"  {row['error']}" if "error" in row else ""), flush=True)
        rows.append(row)
    return rows


def run_speed(device: torch.device, quick: bool, compile_mode: str) -> dict[str, Any]:
    """(b): atml's paths beside the peers', and the GEMM ceilings of both precisions."""
    sizes = speed.Sizes.for_device(device, quick)
    reset_peak(device)
    pairs = speed.compare(device, sizes, compile=compile_mode)
    out: dict[str, Any] = {"sizes": dataclasses.asdict(sizes),
                           "pairs": [{**dataclasses.asdict(p), "ratio": p.ratio} for p in pairs],
                           "peak_gib": peak_gib(device)}
    n = 512 if quick else 8192
    out["gemm_gflops"] = {"fp32": runtime.matmul_gflops(n, device=device)}
    if device.type == "cuda":
        out["gemm_gflops"]["bf16"] = runtime.matmul_gflops(n, device=device, dtype=torch.bfloat16)
    print(f"  GEMM ceiling (measured, {n}^3): "
          + ", ".join(f"{k} {v / 1000:.1f} TFLOP/s" for k, v in out["gemm_gflops"].items()), flush=True)
    return out


def run_torchrun(device: torch.device, out: Path) -> dict[str, Any]:
    """(c): one experiment under ``torchrun --nproc-per-node 1``; the backend is read back from env.json."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "atml",
           "run", TORCHRUN_EXPERIMENT, "--preset", "smoke", "--device", device.type, "--offline", "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    row: dict[str, Any] = {"experiment": TORCHRUN_EXPERIMENT, "returncode": done.returncode,
                           "seconds": time.perf_counter() - started}
    envs = sorted(out.glob(f"{TORCHRUN_EXPERIMENT}-*/env.json"))
    if envs:
        row["distributed"] = json.loads(envs[-1].read_text()).get("distributed")
    if done.returncode != 0:
        row["error"] = done.stderr[-1500:]
    backend = (row.get("distributed") or {}).get("backend")
    print(f"  torchrun --nproc-per-node 1 {TORCHRUN_EXPERIMENT}: rc {done.returncode}, backend {backend}, "
          f"{row['seconds']:.1f} s", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (no GPU needed)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for (b): checks the paths, not the speed")
    parser.add_argument("--compile", default="default", help="torch.compile mode for (b)'s extra rows; off to skip")
    parser.add_argument("--experiments", default="all", help="comma-separated names for (a), or all, or none")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; pass --cpu to exercise the same paths on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu") if args.cpu else torch.device("cuda", 0)
    names = {"all": registry().names(), "none": []}.get(args.experiments, args.experiments.split(","))
    torch.backends.cudnn.benchmark = True
    card = runtime.environment(device, 0)["device_name"]
    report: dict[str, Any] = {"card": card, "device": str(device), "torch": torch.__version__,
                              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                              "cuda": torch.version.cuda, "driver": _driver()}
    print(f"gpu_check: {card}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="atml-gpu-check-") as tmp, _private_cache(Path(tmp)):
        print("(a) every experiment, smoke preset, on", device, flush=True)
        report["experiments"] = run_experiments(device, names, Path(tmp) / "runs")
        print("(b) atml's paths beside timm's loops", flush=True)
        report["speed"] = _guarded(lambda: run_speed(device, args.quick, args.compile))
        print("(c) torchrun", flush=True)
        report["torchrun"] = _guarded(lambda: run_torchrun(device, Path(tmp) / "torchrun"))
    report["seconds"] = time.perf_counter() - started
    failed = [r["experiment"] for r in report["experiments"] if r["status"] != "ok"]
    failed += [part for part in ("speed", "torchrun") if "error" in report[part]]
    if report["torchrun"].get("returncode") not in (0, None):
        failed.append("torchrun")
    report["failed"] = sorted(set(failed))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_check: {'all parts ran' if not failed else 'FAILED: ' + ', '.join(report['failed'])} "
          f"in {report['seconds']:.0f} s", flush=True)
    return 1 if failed else 0


def _guarded(part: Any) -> dict[str, Any]:
    try:
        return part()
    except Exception as err:  # noqa: BLE001 - a failing part is reported, the others still run
        print(f"  failed: {type(err).__name__}: {err}", flush=True)
        return {"error": f"{type(err).__name__}: {err}"[:500], "traceback": traceback.format_exc()[-2000:]}


@contextlib.contextmanager
def _private_cache(tmp: Path) -> Any:
    """Nothing the check does lands in the user's atml cache."""
    previous = os.environ.get("ATML_CACHE")
    os.environ["ATML_CACHE"] = str(tmp / "cache")
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("ATML_CACHE", None)
        else:
            os.environ["ATML_CACHE"] = previous


def _driver() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
        return done.stdout.strip() or None
    return None


if __name__ == "__main__":
    sys.exit(main())
