"""Device, seeds, precision and the facts about the machine a run records."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atml.errors import Option, UsageError

OFFLINE_ENV_VARS = ("ATML_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def select_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an unavailable explicit choice is an error.

    Under torchrun each process takes the GPU of its ``LOCAL_RANK``.
    """
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if name == "auto":
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError(Option("device", "cuda"), " was asked for but no CUDA device is available; use ",
                         Option("device", "cpu"), " or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError(Option("device", "mps"), " was asked for but MPS is not available; use ",
                         Option("device", "cpu"), " or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def is_offline(flag: bool) -> bool:
    """True when ``--offline`` was given or an offline variable (e.g. HF_HUB_OFFLINE=1) is set."""
    return flag or any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in OFFLINE_ENV_VARS)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on CUDA; a no-op elsewhere (CPU bf16 is slower than fp32 on AVX2)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def maybe_compile(fn: Any, mode: str) -> Any:
    """``torch.compile(fn, mode=mode)``, or ``fn`` itself when ``mode`` is "off" (the modes a config takes:
    :data:`atml.config.COMPILE_MODES`; torch refuses others).

    For frozen forward passes (feature extraction): the graph is fixed, so the compile cost
    (seconds to a minute, once per process and input shape) pays off on large datasets.
    """
    if mode == "off":
        return fn
    return torch.compile(fn, mode=mode)


def cache_dir() -> Path:
    """Where shared artefacts (datasets, demo backbones) live: $ATML_CACHE or ~/.cache/atml."""
    return Path(os.environ.get("ATML_CACHE", Path.home() / ".cache" / "atml"))


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's counter, or on Linux the kernel's VmHWM (clear_refs 5)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def available_memory(device: torch.device) -> int:
    """Bytes a run can still allocate: free GPU memory on CUDA, else the kernel's MemAvailable (or 1 TB unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    with contextlib.suppress(OSError, ValueError, StopIteration):
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        return int(next(line for line in meminfo if line.startswith("MemAvailable:")).split()[1]) * 1024
    return 1 << 40


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated on a GPU, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError, ValueError, StopIteration):  # Linux: resettable peak
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) / 1024
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the atml checkout, when it is one (None for an installed wheel)."""
    where = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return out.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def environment(device: torch.device, seed: int) -> dict[str, Any]:
    """Versions, device, seed and commit, as recorded in a run's ``env.json``."""
    import torchvision

    from atml._version import __version__

    env = {
        "atml": __version__,
        "commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": _device_name(device),
        "seed": seed,
        "argv": sys.argv,
    }
    return env


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError, StopIteration):  # Linux: the CPU's model name
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name"))
        return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} threads)"
    return platform.processor() or platform.machine()


def matmul_gflops(n: int = 2048, repeats: int = 3, device: torch.device | None = None,
                  dtype: torch.dtype = torch.float32) -> float:
    """The machine's best measured matrix-multiply rate (GFLOP/s) in ``dtype``: the ceiling a network can approach.

    Compare a rate only with the ceiling of the precision it ran in (a bf16 rate with the
    bf16 GEMM rate): on a GPU bf16 matrix units are several times faster than fp32. On a
    CPU the same product is also timed as a 1x1 convolution, because oneDNN's convolutions
    can use wider vector units than the BLAS behind ``torch.mm`` (seen here: 374 vs 198
    GFLOP/s on an AMD EPYC), and a ceiling below what the networks reach is no ceiling.
    """
    device = device or torch.device("cpu")
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 2 * n**3 / _best_time(lambda: torch.mm(a, b), repeats, device) / 1e9
    if device.type == "cpu":
        side = max(1, int((n // 4) ** 0.5))  # (1, n, side, side) x (n, n): about n^3 / 4 multiply-adds
        x = torch.randn(1, n, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(n, n, 1, 1, dtype=dtype).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            seconds = _best_time(lambda: torch.nn.functional.conv2d(x, w), repeats, device)
        best = max(best, 2 * n * n * side * side / seconds / 1e9)
    return best


def _best_time(fn: Any, repeats: int, device: torch.device) -> float:
    """The fastest of ``repeats`` synchronised calls, after two warm-up calls (kernel selection, clocks)."""
    for _ in range(2):
        fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def compute_dtype(device: torch.device, amp: bool = True) -> torch.dtype:
    """The precision atml's matrix work runs in on ``device``: bf16 under autocast on CUDA, else fp32."""
    return torch.bfloat16 if amp and device.type == "cuda" else torch.float32


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
