"""How atml trains the course VAE: one step object for every KL schedule and mitigation.

The step is also a loop callback, so the KL weight follows training progress
(epoch and batch), which a resumed run recomputes exactly instead of storing.

Mitigations of posterior collapse (the architecture never changes):

* ``warmup``: linear KL annealing from 0 to the target weight (Bowman et al. 2016);
* ``cyclical``: M cycles, each rising linearly over its first half, then flat (Fu et al. 2019);
* ``free_bits``: each dimension's KL is clamped from below at lambda nats (Kingma et al. 2016);
* ``aggressive``: extra encoder-only updates per batch early in training (He et al. 2019,
  with a fixed number of inner steps instead of "until convergence").
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, Literal

import torch

from atml.distributed import sync_gradients, unwrap
from atml.models import vae
from atml.train.loop import Batch, Callback, StepOutput

Schedule = Literal["constant", "warmup", "cyclical"]
SCHEDULES: tuple[Schedule, ...] = typing.get_args(Schedule)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of training: the KL schedule and the mitigations in force."""

    name: str
    kl_weight: float = 1.0
    schedule: Schedule = "constant"
    warmup_fraction: float = 0.5
    cycles: int = 4
    free_bits: float = 0.0
    aggressive_epochs: int = 0
    aggressive_steps: int = 0

    def __post_init__(self) -> None:  # a misspelled schedule must not train as a constant weight
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} is not a KL schedule; one of {', '.join(SCHEDULES)}")


def kl_weight_at(variant: Variant, progress: float) -> float:
    """The KL weight at ``progress`` in [0, 1) of training."""
    if variant.schedule == "warmup":
        return variant.kl_weight * min(1.0, progress / max(variant.warmup_fraction, 1e-9))
    if variant.schedule == "cyclical":
        phase = (progress * variant.cycles) % 1.0
        return variant.kl_weight * min(1.0, phase / 0.5)
    if variant.schedule == "constant":
        return variant.kl_weight
    raise ValueError(f"schedule={variant.schedule!r} is not a KL schedule; one of {', '.join(SCHEDULES)}")


class VAEStep(Callback):
    """``step(model, batch)`` for the loop: uint8 images in, the VAE loss and its terms out."""

    def __init__(self, variant: Variant, epochs: int, preprocess: Callable[[torch.Tensor], torch.Tensor],
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        """``preprocess``: the VAE's own (``Built.preprocess``, on the training device): uint8 -> [0, 1]."""
        self.variant = variant
        self.preprocess = preprocess
        self.epochs = epochs
        self.optimizer = optimizer
        self.weight = kl_weight_at(variant, 0.0)
        self.aggressive = False

    def on_train_batch_start(self, epoch: int, step: int, steps_per_epoch: int) -> None:
        progress = (epoch - 1 + step / max(steps_per_epoch, 1)) / self.epochs
        self.weight = kl_weight_at(self.variant, progress)
        self.aggressive = epoch <= self.variant.aggressive_epochs

    def __call__(self, model: Any, batch: Batch) -> StepOutput:
        x = self.preprocess(batch[0])  # (B, 1, 28, 28) in [0, 1]
        if model.training and self.aggressive:
            self._encoder_steps(model, x)
        out = model(x)
        weight, free_bits = (self.weight, self.variant.free_bits) if model.training else (1.0, 0.0)
        terms = vae.loss(out, x, kl_weight=weight, free_bits=free_bits)
        pixels = x[0].numel()
        metrics = {
            "recon": terms.recon, "kl": terms.kl, "kl_per_dim": terms.kl_per_dim,
            "mse_plus_kl": terms.recon + terms.kl,
            "neg_elbo_gaussian_nats": vae.neg_elbo_nats(terms.recon, terms.kl, pixels),
            "kl_weight": torch.tensor(weight),
        }
        return StepOutput(terms.total, metrics)

    def _encoder_steps(self, model: torch.nn.Module, x: torch.Tensor) -> None:
        """Update the encoder alone: decoder gradients stay None, so the optimizer skips them."""
        if self.optimizer is None:
            raise ValueError("aggressive encoder training needs the optimizer")
        encoder = unwrap(model).encoder_parameters()
        for _ in range(self.variant.aggressive_steps):
            terms = vae.loss(model(x), x, kl_weight=self.weight, free_bits=self.variant.free_bits)
            self.optimizer.zero_grad(set_to_none=True)
            terms.total.backward(inputs=encoder)
            sync_gradients(encoder)  # under torchrun: the all-reduce DDP would do
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
