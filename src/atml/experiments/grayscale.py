"""28x28 grayscale data for the generative experiments (VAE, GAN): FashionMNIST or its stand-ins.

* ``fashion-mnist``: the official IDX files (MD5-checked; downloaded when online);
* ``digits``: scikit-learn's 8x8 digits, all ten classes, upsampled to 28x28 (demo);
* ``generated-fashion-mnist``: small generated IDX files (smoke).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atml import runtime
from atml.data import ImageDataset, digits, fashion_mnist, rehearsal
from atml.runner import RunContext

DATA = ("fashion-mnist", "digits", "generated-fashion-mnist", "rehearsal-fashion-mnist")


def load_data(cfg: Any, ctx: RunContext) -> ImageDataset:
    """The dataset named by ``cfg.data``; ``cfg`` needs data, data_dir, seed and the two limits."""
    if cfg.data == "fashion-mnist":
        root = Path(cfg.data_dir) if cfg.data_dir else runtime.cache_dir() / "data"
        data = fashion_mnist.load(root, offline=ctx.offline)
    elif cfg.data == "generated-fashion-mnist":
        data = fashion_mnist.load_generated(fashion_mnist.write_idx(ctx.scratch("data"), seed=cfg.seed))
    elif cfg.data in rehearsal.NAMES:
        data = rehearsal.load(cfg.data, cfg.seed)
    else:
        data = digits.load(tuple(range(10)), val_fraction=0.2, seed=cfg.seed)
        data.train, data.val = data.train.resized(28), data.val.resized(28)
        data.source += "; bilinearly upsampled from 8x8 to 28x28"
    data.train = data.train.subset(cfg.train_limit, seed=cfg.seed)
    data.val = data.val.subset(cfg.val_limit, seed=cfg.seed + 1)
    ctx.record_source("data", {"name": data.name, "source": data.source, "train": len(data.train),
                               "val": len(data.val), "classes": data.train.classes})
    ctx.record_source("weights", {"spec": "random", "description": "trained from scratch (random init)",
                                  "pretrained": False})
    return data
