"""Speed measured against a naive baseline in the same process, on the same data.

Each experiment's ``bench(cfg)`` times atml's path and the naive one, then
:func:`summarise` prints both times, their ratio, the backbone's images/s and that rate
as a share of the machine's matrix-multiply throughput measured in the same run.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from atml import runtime
from atml.results import Bench, Throughput
from atml.run_dir import RunDir


@contextlib.contextmanager
def scratch_context(cfg: Any) -> Iterator[Any]:
    """A RunContext on a temporary run folder and a temporary ``$ATML_CACHE``, both deleted afterwards.

    A bench never touches the user's runs or caches: it works in a copy of the cache's
    ``pretrained/`` folder (the demo's stand-in models, so they are not trained again), and
    whatever it writes (embedding caches, datasets) goes to the temporary cache.
    """
    from atml.console import QUIET
    from atml.context import RunContext

    device = runtime.select_device(cfg.device)
    runtime.seed_everything(cfg.seed)
    real_cache = runtime.cache_dir()
    with tempfile.TemporaryDirectory(prefix="atml-bench-") as tmp:
        cache = Path(tmp) / "cache"
        if (real_cache / "pretrained").is_dir():
            shutil.copytree(real_cache / "pretrained", cache / "pretrained")
        previous = os.environ.get("ATML_CACHE")
        os.environ["ATML_CACHE"] = str(cache)
        run = RunDir.create(Path(tmp) / "runs", "bench", "bench")
        run.write_env(runtime.environment(device, cfg.seed))
        try:
            yield RunContext(run, device, "bench", runtime.is_offline(cfg.offline), report=QUIET)
        finally:
            run.unlock()
            if previous is None:
                os.environ.pop("ATML_CACHE", None)
            else:
                os.environ["ATML_CACHE"] = previous


def flops_per_image(model: Any, example: torch.Tensor) -> float:
    """Forward FLOPs of ``model.forward_features`` for one image (multiply-add = 2 FLOPs)."""
    return flops_of(lambda: model.forward_features(example[:1]))


def flops_of(fn: Any) -> float:
    """FLOPs of calling ``fn()`` once, counted by torch's FlopCounterMode."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def images_per_s(fn: Any, images_per_call: int, device: torch.device, *, calls: int = 1, warmup: int = 2) -> float:
    """Images/s of ``fn()``: ``warmup`` untimed calls (kernel selection, autotuning, lazy
    initialisation), then ``calls`` calls between two device synchronisations."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return calls * images_per_call / (time.perf_counter() - start)


def ceiling(rate: float, flops: float, device: torch.device, amp: bool = True) -> dict[str, Any]:
    """The achieved GFLOP/s of ``rate`` images/s and its share of the GEMM rate in the same precision."""
    dtype = runtime.compute_dtype(device, amp)
    gemm = runtime.matmul_gflops(device=device, dtype=dtype)
    achieved = rate * flops / 1e9
    return {"flops_per_image": flops, "precision": PRECISION_NAMES[dtype], "gemm_gflops": gemm,
            "achieved_gflops": achieved, "share_of_gemm": achieved / gemm}


PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def backbone_throughput(model: Any, prep: Any, images: torch.Tensor,
                        device: torch.device, batch_size: int, max_images: int = 512) -> dict[str, Any]:
    """Backbone images/s with channels_last and contiguous layouts, and the same-precision GEMM ceiling."""
    prep = prep.to(device)
    sample = images[:max_images].to(device)
    flops = flops_per_image(model, prep(sample[:1]))
    out: dict[str, Any] = {}
    model.eval()
    for layout in (torch.channels_last, torch.contiguous_format):
        model.to(memory_format=layout)
        prep.channels_last = layout == torch.channels_last
        name = "channels_last" if layout == torch.channels_last else "contiguous"

        @torch.inference_mode()
        def forward_all() -> None:
            for batch in sample.split(batch_size):
                with runtime.autocast(device):
                    model.forward_features(prep(batch))

        out[f"images_per_s_{name}"] = images_per_s(forward_all, len(sample), device, warmup=1)
    model.to(memory_format=torch.channels_last)
    prep.channels_last = True
    return {**out, **ceiling(out["images_per_s_channels_last"], flops, device)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PerSampleLoader:
    """The naive data path: a per-sample Dataset through PIL (as ``torchvision.datasets``
    does for MNIST-like data) and a DataLoader with default collation, in the main process.
    Yields the same uint8 batches as :class:`atml.train.loop.Batches`, in the same order."""

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int) -> None:
        from torch.utils.data import DataLoader, Dataset

        class _PerSample(Dataset[tuple[torch.Tensor]]):
            def __len__(self) -> int:
                return len(images)

            def __getitem__(self, i: int) -> tuple[torch.Tensor]:
                from PIL import Image

                array = images[i].permute(1, 2, 0).squeeze(-1).numpy()
                return (torch.from_numpy(np.array(Image.fromarray(array))).reshape(images.shape[1:]),)

        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self._dataset, self._loader = _PerSample(), DataLoader

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self._dataset) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        from torch.utils.data import DistributedSampler

        indices: Any = range(len(self._dataset))  # a sampler needs only len()
        sampler: DistributedSampler[int] = DistributedSampler(indices, num_replicas=1, rank=0, shuffle=True,
                                                              seed=self.seed)
        sampler.set_epoch(self.epoch)
        # its own generator: creating the iterator must not draw from torch's global RNG, which
        # the training step uses (VAE noise, GAN latents), or the two paths would diverge
        return iter(self._loader(self._dataset, batch_size=self.batch_size, sampler=sampler,
                                 generator=torch.Generator().manual_seed(self.seed)))


def time_both_data_paths(images: torch.Tensor, cfg: Any, device: torch.device,
                         build: Any) -> tuple[dict[str, tuple[float, float]], torch.nn.Module]:
    """Train with :func:`fit` on :class:`PerSampleLoader` (naive) and on atml's :class:`Batches`.

    ``build()`` returns ``(model, optimizer, step, callbacks)`` and is called under the same
    seed for both paths, so data order, initialisation and noise are identical and both must
    end on the same loss. Returns ``{label: (seconds, final train loss)}`` and the last model.
    """
    from atml.train.loop import Batches, Fit, MemoryRecorder, fit

    paths: dict[str, Any] = {"naive (per-sample PIL DataLoader)": PerSampleLoader(images, cfg.batch_size, cfg.seed),
             "atml (in-memory batches)": Batches((images,), cfg.batch_size, shuffle=True, seed=cfg.seed)}
    timings = {}
    for label, batches in paths.items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model, optimizer, step, callbacks = build()
            started = time.perf_counter()
            rows = fit(Fit(model, optimizer, batches, None, cfg.epochs, device, MemoryRecorder(), stage="bench",
                           step=step, callbacks=callbacks, say=lambda _m: None))
            timings[label] = (time.perf_counter() - started, rows[-1]["loss"])
    return timings, model


def model_throughput(forward: Any, example: torch.Tensor, device: torch.device, batch_size: int,
                     repeats: int = 20) -> dict[str, Any]:
    """Images/s of ``forward(batch)`` under inference mode, and its share of the same-precision GEMM rate."""
    flops = flops_of(lambda: forward(example[:1]))
    batch = example[:batch_size]

    @torch.inference_mode()
    def call() -> None:
        with runtime.autocast(device):
            forward(batch)

    rate = images_per_s(call, len(batch), device, calls=repeats)
    return {"images_per_s": rate, **ceiling(rate, flops, device)}


CHANCE_MARGIN = 0.05
"""An accuracy within this of chance (1 / classes) says nothing: two paths agreeing there prove nothing."""


def summarise(title: str, timings: dict[str, tuple[float, float]], throughput: dict[str, Any],
              result_name: str = "final val acc", chance: float | None = None) -> Bench:
    """Print the comparison table and return the same figures.

    With ``chance`` (an accuracy's chance level), results within :data:`CHANCE_MARGIN` of it are
    reported as at chance, never as "the same result".
    """
    (naive_label, (naive_s, naive_acc)), (fast_label, (fast_s, fast_acc)) = timings.items()
    at_chance = chance is not None and max(naive_acc, fast_acc) <= chance + CHANCE_MARGIN
    rate = Throughput.from_json(throughput)
    lines = [title, f"  {naive_label:<32} {naive_s:8.2f} s   {result_name} {naive_acc:.4f}",
             f"  {fast_label:<32} {fast_s:8.2f} s   {result_name} {fast_acc:.4f}",
             f"  speed-up: {naive_s / fast_s:.1f}x",
             *([f"  both at chance ({chance:.2f}): their agreement says nothing about the two paths"]
               if at_chance else []),
             "  model forward: " + ", ".join(f"{v:.1f} img/s {k}".rstrip() for k, v in rate.rates.items())
             + f" ({rate.flops_per_image / 1e9:.4f} GFLOP/img)",
             f"  achieved {rate.achieved_gflops:.1f} GFLOP/s = {rate.share_of_gemm:.0%} of this "
             f"machine's {rate.precision} matrix-multiply rate measured in this run "
             f"({rate.gemm_gflops:.1f} GFLOP/s, the faster of a 2048^3 GEMM and, on a CPU, a 1x1 "
             "convolution of the same size)"]
    print("\n".join(lines))
    return Bench(title, naive_label, fast_label, naive_s, fast_s, naive_s / fast_s, result_name, naive_acc, fast_acc,
                 chance, at_chance, rate)
