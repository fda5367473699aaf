"""The DCGAN's configs and presets, importable without torch (the CLI checks ``--set`` values with them before it
imports an experiment)."""

from __future__ import annotations

import dataclasses
from typing import Any

from atml.config import require_positive
from atml.errors import UsageError
from atml.suite.grayscale_config import GrayscaleConfig


@dataclasses.dataclass
class DCGANConfig(GrayscaleConfig):
    data: str = "fashion-mnist"
    """fashion-mnist | digits (scikit-learn, upsampled to 28 px) | folder (--data-dir DIR, grey at 28 px) |
    generated-fashion-mnist | rehearsal-fashion-mnist."""
    epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-4
    """Adam learning rate of both networks (DCGAN recipe)."""
    beta1: float = 0.5
    g_lr_scale: float = 1.0
    """Generator learning rate = lr x this (two time-scale update rule; 0 freezes the generator)."""
    latent_dim: int = 100
    width: int = 64
    """Channels of the first discriminator / last generator layer."""
    sample_every: int = 5
    """Save a fixed-noise sample grid every this many epochs (and after the first and last)."""
    eval_samples: int = 10000
    """Generated images scored against as many validation images (at most the split's size)."""
    classifier_epochs: int = 5
    """Epochs of the feature classifier behind the Frechet distance."""
    inception: str = "auto"
    """Inception FID/KID weights: auto (torch hub cache, or download when online) | off | path to the file."""
    d_win_threshold: float = 0.02
    """Stop when D(G(z)) < this and D(x) > 1 - this for two epochs: the discriminator has won."""
    train_limit: int = 0
    val_limit: int = 0

    def check_values(self) -> None:
        super().check_values()
        if self.weights != "random":
            raise UsageError("gan.dcgan trains from scratch: use weights=random")
        require_positive(self, "epochs", "batch_size", "latent_dim", "width", "sample_every", "eval_samples",
                         "classifier_epochs")
        if not self.lr > 0 or not 0 <= self.beta1 < 1 or not 0 < self.d_win_threshold < 0.5 or self.g_lr_scale < 0:
            raise UsageError("lr must be > 0, beta1 in [0, 1), g_lr_scale >= 0 and d_win_threshold in (0, 0.5)")


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"data": "generated-fashion-mnist", "epochs": 2, "batch_size": 32, "width": 16, "sample_every": 1,
              "eval_samples": 100, "classifier_epochs": 2, "inception": "off"},
    "demo": {"offline": True, "data": "digits", "epochs": 15, "batch_size": 64, "width": 32, "eval_samples": 1000,
             "classifier_epochs": 8, "inception": "off"},
    "full": {},
    "rehearsal": {"data": "rehearsal-fashion-mnist", "inception": "off"},
}
