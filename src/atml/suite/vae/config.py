"""The VAE experiments' configs and presets, importable without torch (the CLI checks ``--set`` values with them
before it imports an experiment)."""

from __future__ import annotations

import dataclasses
from typing import Any

from atml.config import require_positive, require_unit_interval
from atml.errors import UsageError
from atml.suite.grayscale_config import GrayscaleConfig


@dataclasses.dataclass
class VAEConfig(GrayscaleConfig):
    data: str = "fashion-mnist"
    """fashion-mnist (official IDX files) | digits (scikit-learn, upsampled to 28 px) | folder (--data-dir DIR,
    grey at 28 px) | generated-fashion-mnist | rehearsal-fashion-mnist (generated at the real counts: timing only)."""
    latent_dim: int = 20
    hidden: int = 400
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    """Adam learning rate."""
    kl_weight: float = 1.0
    """The baseline's KL weight (1: the ELBO, as in the course)."""
    contrast_kl_weight: float = 8.0
    """A KL-heavy setting that collapses the posterior; vae.mitigate's variants all use it."""
    free_bits: float = 0.5
    """Nats per latent dimension for the free-bits variant."""
    warmup_fraction: float = 0.5
    """Share of training over which the warm-up variant raises the KL weight from 0."""
    cycles: int = 4
    """Cycles of the cyclical schedule."""
    aggressive_fraction: float = 0.5
    """Share of epochs with extra encoder updates (aggressive variant)."""
    aggressive_steps: int = 5
    """Encoder-only updates per batch in the aggressive phase."""
    diag_samples: int = 1000
    """Validation images used for active units and mutual information (MI <= log of this)."""
    train_limit: int = 0
    val_limit: int = 0

    def check_values(self) -> None:
        super().check_values()
        if self.weights != "random":
            raise UsageError("the VAE experiments train from scratch: use weights=random")
        require_positive(self, "latent_dim", "hidden", "epochs", "batch_size", "cycles", "diag_samples")
        require_unit_interval(self, "warmup_fraction", "aggressive_fraction")
        if not self.lr > 0 or self.kl_weight < 0 or self.contrast_kl_weight < 0 or self.free_bits < 0:
            raise UsageError("lr must be > 0; kl_weight, contrast_kl_weight and free_bits must be >= 0")
        if self.aggressive_steps < 0 or self.train_limit < 0 or self.val_limit < 0:
            raise UsageError("aggressive_steps, train_limit and val_limit must be >= 0")


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"data": "generated-fashion-mnist", "epochs": 2, "batch_size": 64, "diag_samples": 100},
    "demo": {"offline": True, "data": "digits", "epochs": 20, "batch_size": 64},
    "full": {},
    "rehearsal": {"data": "rehearsal-fashion-mnist"},
}
