"""How atml trains a DCGAN inside the shared loop.

One Adam optimizer holds two parameter groups (discriminator, generator), so one
checkpoint resumes the whole game; each update back-propagates into one network only
(``backward(inputs=...)``), leaving the other's gradients None, which Adam skips.
Losses: the standard discriminator BCE and the non-saturating generator loss.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from atml.distributed import sync_gradients
from atml.errors import DivergedError
from atml.models.gan import DCGAN
from atml.train.loop import Batch, Callback, EpochRecord, StepOutput


def optimizer(model: DCGAN, lr: float, beta1: float, g_lr_scale: float = 1.0) -> torch.optim.Adam:
    """Adam over both networks; the generator's rate is ``lr * g_lr_scale`` (two time-scale updates)."""
    groups: list[dict[str, Any]] = [{"params": list(model.discriminator.parameters()), "name": "discriminator"},
              {"params": list(model.generator.parameters()), "name": "generator", "lr": lr * g_lr_scale}]
    return torch.optim.Adam(groups, lr=lr, betas=(beta1, 0.999))


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    result: torch.Tensor = torch.stack([p.grad.norm() for p in params if p.grad is not None]).norm()
    return result


class GANStep:
    """``step(model, batch)``: one discriminator and one generator update per batch."""

    def __init__(self, optim: torch.optim.Optimizer, preprocess: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """``preprocess``: the DCGAN's own (``Built.preprocess``, on the training device): uint8 -> [-1, 1]."""
        self.optim = optim
        self.preprocess = preprocess

    def __call__(self, model: Any, batch: Batch) -> StepOutput:
        real = self.preprocess(batch[0])  # uint8 -> [-1, 1], the generator's range
        z = torch.randn(len(real), model.generator.latent_dim, device=real.device)
        fake = model.generator(z)
        d_real, d_fake = model.discriminator(real), model.discriminator(fake.detach())
        loss_d = _bce(d_real, 1.0) + _bce(d_fake, 0.0)
        metrics = {"loss_d": loss_d.detach(), "d_real": torch.sigmoid(d_real).mean().detach(),
                   "d_fake": torch.sigmoid(d_fake).mean().detach()}
        if model.training:
            metrics.update(self._update(loss_d, list(model.discriminator.parameters()), "grad_norm_d"))
        loss_g = _bce(model.discriminator(fake), 1.0)  # non-saturating, against the updated discriminator
        if model.training:
            metrics.update(self._update(loss_g, list(model.generator.parameters()), "grad_norm_g"))
        return StepOutput(loss_g.detach(), metrics, optimized=True)

    def _update(self, loss: torch.Tensor, params: list[torch.nn.Parameter], name: str) -> dict[str, torch.Tensor]:
        self.optim.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        sync_gradients(params)  # under torchrun: the all-reduce DDP would do
        norm = _grad_norm(params)
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        return {name: norm.detach()}


class DiscriminatorWinsGuard(Callback):
    """Stops a run whose discriminator wins outright (the generator then gets no gradient).

    Raised before the epoch's checkpoint is written, so the last good checkpoint stays.
    """

    def __init__(self, threshold: float = 0.02, patience: int = 2) -> None:
        self.threshold = threshold
        self.patience = patience
        self.strikes = 0

    def on_epoch_end(self, epoch: int, records: dict[str, EpochRecord]) -> None:
        train = records["train"]
        won = train["d_fake"] < self.threshold and train["d_real"] > 1 - self.threshold
        self.strikes = self.strikes + 1 if won else 0
        if self.strikes >= self.patience:
            raise DivergedError(
                f"the discriminator won outright at epoch {epoch} (D(x)={train['d_real']:.3f}, "
                f"D(G(z))={train['d_fake']:.4f} for {self.strikes} epochs): the generator gets no useful gradient. "
                "The last good checkpoint is kept; lower the discriminator's learning rate or add noise.")


class FixedNoiseSamples(Callback):
    """Generator samples from one fixed noise batch at chosen epochs, saved as they happen."""

    def __init__(self, model: DCGAN, epochs: set[int], save: Any, n: int = 64, seed: int = 0) -> None:
        self.model = model
        self.epochs = epochs
        self.save = save
        self.noise = torch.randn(n, model.generator.latent_dim, generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def on_epoch_end(self, epoch: int, records: dict[str, EpochRecord]) -> None:
        if epoch in self.epochs:
            was_training = self.model.training
            self.model.eval()
            device = next(self.model.parameters()).device
            self.save(epoch, self.model.generator(self.noise.to(device)).cpu())
            self.model.train(was_training)


def sample_paths(figures: Path) -> list[Path]:
    return sorted(figures.glob("samples_epoch_*.png"))
