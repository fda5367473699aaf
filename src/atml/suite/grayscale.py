"""28x28 grayscale data for the generative experiments (VAE, GAN), through the dataset factory.

* ``fashion-mnist``: the official IDX files (MD5-checked; downloaded when online);
* ``digits``: scikit-learn's 8x8 digits, all ten classes, upsampled to 28x28 (demo);
* ``folder``: any labelled image folder (``--data-dir``), converted to grey at 28x28;
* ``generated-fashion-mnist``: small generated IDX files (smoke).
"""

from __future__ import annotations

from typing import Any

from atml.context import RunContext
from atml.data import ImageDataset
from atml.models import registry
from atml.provenance import WeightsInfo
from atml.suite import datasets
from atml.suite.grayscale_config import SIZE

PIXELS = registry.MODELS[("vae", "mlp-vae")].preprocessing
"""What the VAE and the DCGAN take: one grey channel at 28 px (the same for both)."""


def load_data(cfg: Any, ctx: RunContext) -> ImageDataset:
    """The dataset named by ``cfg.data``; ``cfg`` needs data, data_dir, seed and the two limits."""
    data = datasets.load(cfg, ctx, (PIXELS,), limits=(cfg.train_limit, cfg.val_limit), generated=(200, 100),
                         digit_classes=tuple(range(10)), digit_size=SIZE, digit_val_fraction=0.2, grayscale=True)
    ctx.record_source("weights", WeightsInfo("random", "trained from scratch (random init)", pretrained=False))
    return data
