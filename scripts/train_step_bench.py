"""atml's training loop against a plain PyTorch loop, for the VAE and the DCGAN: steps per second on the same data,
batch size, model and initialisation.

    python scripts/train_step_bench.py                   # writes benchmarks/train-step-cpu.json (docs' Speed page)
    python scripts/train_step_bench.py --device cuda --out benchmarks/train-step-gpu.json

atml's side is what ``vae.train`` and ``gan.dcgan`` run: :func:`atml.train.loop.fit` over :class:`Batches` with the
recipe's step (``VAEStep``, ``GANStep``: the loss terms and diagnostics it records every step, the epoch's averages,
the checkpoint at each epoch's end). The plain loop is what a notebook writes: a shuffled index, a slice of the uint8
tensor, the model's own preprocessing, the loss, backward, step; no records, no checkpoint. Both train the same
number of epochs from the same initialisation; the two alternate ``--repeats`` times (each first in every other
round). Reported: the ratio of the two medians, the median of each round's ratio (the two runs of a round are
adjacent in time, so a slow spell of a shared machine weighs on both), and the ratio of the fastest runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from atml import runtime  # noqa: E402
from atml.models import factory  # noqa: E402
from atml.models import vae as vae_model  # noqa: E402
from atml.run_dir import RunDir  # noqa: E402
from atml.train import gan_recipe  # noqa: E402
from atml.train.loop import Batches, Fit, fit  # noqa: E402
from atml.train.vae_recipe import VAEStep, Variant  # noqa: E402

Built = tuple[torch.nn.Module, torch.optim.Optimizer, Callable[[torch.Tensor], torch.Tensor]]


def build_vae(device: torch.device) -> Built:
    """The demo's VAE (latent 20, hidden 400) and its Adam, as vae.train builds them."""
    torch.manual_seed(0)
    built = factory.create("mlp-vae", family="vae", latent_dim=20, hidden=400)
    model = built.model.to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3), built.preprocess.to(device)


def build_gan(device: torch.device) -> Built:
    """The demo's DCGAN (width 32, latent 100) and the recipe's two-group Adam, as gan.dcgan builds them."""
    torch.manual_seed(0)
    built = factory.create("dcgan", family="gan", latent_dim=100, width=32)
    model = built.model.to(device)
    return model, gan_recipe.optimizer(model, 2e-4, 0.5), built.preprocess.to(device)


def atml_vae(images: torch.Tensor, batch: int, epochs: int, device: torch.device, run: RunDir) -> float:
    model, optimizer, preprocess = build_vae(device)
    step = VAEStep(Variant("baseline"), epochs, preprocess, optimizer)
    return _timed(lambda: fit(Fit(model, optimizer, Batches((images,), batch, shuffle=True, seed=0), None, epochs,
                                  device, run, stage="vae", step=step, callbacks=[step],
                                  checkpoint_path=run.path / "vae.pt", say=lambda _m: None, ddp=False)), device)


def plain_vae(images: torch.Tensor, batch: int, epochs: int, device: torch.device, run: RunDir) -> float:
    model, optimizer, preprocess = build_vae(device)

    def train() -> None:
        model.train()
        for x in _plain_batches(images, batch, epochs, device, preprocess):
            loss = vae_model.loss(model(x), x, kl_weight=1.0).total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return _timed(train, device)


def atml_gan(images: torch.Tensor, batch: int, epochs: int, device: torch.device, run: RunDir) -> float:
    model, optimizer, preprocess = build_gan(device)
    return _timed(lambda: fit(Fit(model, optimizer, Batches((images,), batch, shuffle=True, seed=0), None, epochs,
                                  device, run, stage="gan", step=gan_recipe.GANStep(optimizer, preprocess),
                                  checkpoint_path=run.path / "gan.pt", say=lambda _m: None, ddp=False)), device)


def plain_gan(images: torch.Tensor, batch: int, epochs: int, device: torch.device, run: RunDir) -> float:
    """The standard DCGAN step: D on real and detached fake, then the non-saturating G loss; two Adam groups."""
    model, optimizer, preprocess = build_gan(device)
    gan: Any = model
    d_params, g_params = list(gan.discriminator.parameters()), list(gan.generator.parameters())

    def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

    def train() -> None:
        model.train()
        for real in _plain_batches(images, batch, epochs, device, preprocess):
            fake = gan.generator(torch.randn(len(real), gan.generator.latent_dim, device=device))
            loss_d = bce(gan.discriminator(real), 1.0) + bce(gan.discriminator(fake.detach()), 0.0)
            optimizer.zero_grad(set_to_none=True)
            loss_d.backward(inputs=d_params)
            optimizer.step()
            loss_g = bce(gan.discriminator(fake), 1.0)
            optimizer.zero_grad(set_to_none=True)
            loss_g.backward(inputs=g_params)
            optimizer.step()
    return _timed(train, device)


def _plain_batches(images: torch.Tensor, batch: int, epochs: int, device: torch.device,
                   preprocess: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[torch.Tensor]:
    """What a notebook's loop does: each epoch a shuffled index, slices of the uint8 tensor, the model's
    preprocessing on the device."""
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for i in range(0, len(images), batch):
            yield preprocess(images[order[i:i + batch]].to(device, non_blocking=True))


def _timed(train: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``train()``, the device's queue drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


PAIRS = {"vae": (atml_vae, plain_vae, 64, "vae.train's demo model: MLP VAE, latent 20, hidden 400, batch 64"),
         "dcgan": (atml_gan, plain_gan, 64, "gan.dcgan's demo model: DCGAN width 32, latent 100, batch 64")}


def measure(name: str, images: torch.Tensor, epochs: int, repeats: int, device: torch.device) -> dict[str, Any]:
    atml_fn, plain_fn, batch, what = PAIRS[name]
    steps = epochs * -(-len(images) // batch)
    times: dict[str, list[float]] = {"atml": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="atml-train-step-") as tmp:
        for r in range(repeats + 1):  # the first round warms both up (allocator, kernels) and is not kept
            order = (("atml", atml_fn), ("plain", plain_fn))
            for label, fn in order if r % 2 else order[::-1]:  # each goes first in every other round
                run = RunDir.create(Path(tmp), f"{name}-{label}", str(r))
                seconds = fn(images, batch, epochs, device, run)
                run.unlock()
                if r:
                    times[label].append(seconds)
    atml_s, plain_s = statistics.median(times["atml"]), statistics.median(times["plain"])
    paired = statistics.median(p / a for a, p in zip(times["atml"], times["plain"], strict=True))
    row = {"model": name, "what": what, "images": len(images), "batch": batch, "epochs": epochs, "steps": steps,
           "atml_steps_per_s": steps / atml_s, "plain_steps_per_s": steps / plain_s, "ratio": plain_s / atml_s,
           "paired_ratio": paired, "best_ratio": min(times["plain"]) / min(times["atml"]),
           "atml_s": times["atml"], "plain_s": times["plain"]}
    print(f"{name}: atml {row['atml_steps_per_s']:.1f} steps/s, plain {row['plain_steps_per_s']:.1f} steps/s, "
          f"atml / plain {row['ratio']:.2f} (medians), {paired:.2f} (median of each round's ratio), "
          f"{row['best_ratio']:.2f} (fastest runs)", flush=True)
    return row


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=1437, help="training images (the demo's digits: 1,437)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "train-step-cpu.json"))
    args = parser.parse_args(argv)
    device = runtime.select_device(args.device)
    images = torch.randint(0, 256, (args.images, 1, 28, 28), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    rows = [measure(name, images, args.epochs, args.repeats, device) for name in PAIRS]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    report = {"command": "python scripts/train_step_bench.py " + " ".join(argv), "date": time.strftime("%Y-%m-%d"),
              "commit": commit.stdout.strip(), "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "device": str(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "repeats": args.repeats, "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
