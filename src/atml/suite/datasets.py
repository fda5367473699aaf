"""How every experiment reads its data: the dataset factory, with the run's options, recorded in env.json."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from atml.data import ImageDataset, factory
from atml.errors import UsageError
from atml.runner import RunContext


def check(cfg: Any, names: tuple[str, ...]) -> None:
    """Refuse a ``data`` name the family does not take (``names``: its ``DATA``), naming the ones it does."""
    if cfg.data not in names:
        raise UsageError(f"data={cfg.data!r} is not valid; choose one of {', '.join(names)}")
    if cfg.data in ("folder", "imagenet") and not (cfg.data_dir and Path(cfg.data_dir).expanduser().is_dir()):
        where = f"--data-dir {cfg.data_dir} is not a folder" if cfg.data_dir else "no --data-dir was given"
        layout = ("DIR/val/<wnid>/*.JPEG (ImageNet's validation layout)" if cfg.data == "imagenet" else
                  "DIR/train/CLASS/*.jpg (and DIR/val/CLASS/*.jpg) or DIR/CLASS/*.jpg")
        raise UsageError(f"data={cfg.data} reads an image folder, but {where}; pass --data-dir DIR with {layout}")


def load(cfg: Any, ctx: RunContext, *, limits: tuple[int, int] = (0, 0), record: bool = True,
         **spec: Any) -> ImageDataset:
    """``cfg.data`` through :func:`atml.data.factory.create`, subsampled to ``limits`` (train, val; 0: all).

    What was read (and any unreadable files left out) goes to env.json's ``data`` entry, and
    from there to the run's notes.
    """
    options = {"image_size": cfg.image_size, "skip_bad_images": cfg.skip_bad_images, "progress": ctx.progress, **spec}
    start = time.perf_counter()
    loaded = factory.create(factory.Spec(cfg.data, root=cfg.data_dir, seed=cfg.seed, offline=ctx.offline,
                                         scratch=ctx.scratch("data") if cfg.data.startswith("generated-") else None,
                                         **options))
    data = loaded.data
    ready = loaded.readiness
    readiness = {"images": ready.images if ready else len(data.train) + len(data.val),
                 "seconds": round(ready.seconds if ready else time.perf_counter() - start, 3),
                 "from_cache": bool(ready and ready.from_cache), "cache": ready.cache if ready else None,
                 "notes": ready.notes if ready else []}
    data.train = data.train.subset(limits[0], seed=cfg.seed)
    data.val = data.val.subset(limits[1], seed=cfg.seed + 1)
    if record:
        ctx.record_source("data", {"name": data.name, "source": data.source, "train": len(data.train),
                                   "val": len(data.val), "classes": data.train.classes, "skipped": loaded.skipped,
                                   **readiness})
        ctx.record_env("data", {k: readiness[k] for k in ("images", "seconds", "from_cache", "cache")})
    return data
