"""How every experiment reads its data: the dataset factory, with the run's options, recorded in env.json.

Image files (``data=folder``, ``data=imagenet``, ``--set images=...``) are decoded at the size
the models' weights expect (:func:`decode_plan`): the short side their evaluation transform
resizes to, with their filter, placed for their centre crop, so the pixels are the ones
timm's, torchvision's or open_clip's own pipeline would feed. ``image_size`` overrides it,
and the notes say what that means for the model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atml.context import RunContext
from atml.data import ImageDataset, factory
from atml.data.decode import Square
from atml.errors import Option, Part, Placeholder, UsageError
from atml.models.preprocess import resize_size
from atml.models.registry import Preprocessing
from atml.provenance import DataSource


@dataclasses.dataclass(frozen=True)
class Decode(Square):
    """How image files are decoded for the run's models (a :class:`~atml.data.decode.Square`), and ``why`` in words
    (notes, env.json)."""

    why: str = ""

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def decode_plan(image_size: int | None, pixels: Sequence[Preprocessing]) -> Decode:
    """The decode for models expecting ``pixels`` (their weights' preprocessing), or at the user's ``image_size``.

    One geometry (every model resizes to the same short side, crops the same input, with the same filter): decoded
    at that short side and placed for that crop, exactly the weights' pipeline. Several: decoded once at the
    largest short side (its filter), and each model resizes it down on the device by its own rule.
    """
    if not pixels:
        raise ValueError("decode_plan needs the preprocessing of at least one model")
    shapes = sorted({(resize_size(p), p.input_size, p.interpolation, p.crop_pct) for p in pixels}, reverse=True)
    size, crop, interpolation, crop_pct = shapes[0]
    own = ", ".join(f"short side {r} px, crop {c} ({i})" for r, c, i, _ in shapes)
    if image_size is None and len(shapes) == 1:
        return Decode(size, crop, interpolation,
                      f"decoded at the weights' own resize size: short side {size} px ({crop} / crop_pct "
                      f"{crop_pct:g}, {interpolation}), placed so the model's centre crop of {crop} px keeps the "
                      "pixels its own evaluation transform (Resize + CenterCrop) keeps")
    if image_size is None:
        return Decode(size, None, interpolation,
                      f"decoded once at the largest resize size of the models' weights, short side {size} px "
                      f"({interpolation}); each model resizes that square to its own short side with its own filter "
                      f"and crops its input on the device (the models' own: {own})")
    placed = crop if len(shapes) == 1 and image_size == size else None
    smallest = min(c for _, c, _, _ in shapes)
    if image_size < smallest:
        effect = (f"upsampled to {smallest} px by the model's preprocessing" if len(shapes) == 1 else
                  "upsampled to each model's input by its preprocessing")
    elif placed:
        effect = f"the weights' own resize size; the model's centre crop of {crop} px keeps what its own pipeline keeps"
    else:
        effect = f"each model resizes and crops it by its own rule ({own})"
    return Decode(image_size, placed, interpolation, f"decoded at {image_size} px (image_size={image_size}), {effect}")


def check(cfg: Any, names: tuple[str, ...]) -> None:
    """Refuse a ``data`` name the family does not take (``names``: its ``DATA``), naming the ones it does."""
    if cfg.data not in names:
        raise UsageError(f"data={cfg.data!r} is not valid; choose one of {', '.join(names)}")
    files = factory.describe(cfg.data).files  # image files, decoded by decode_plan; the others come at a fixed size
    if cfg.image_size is not None and not files and not getattr(cfg, "images", ()):
        raise UsageError(f"image_size={cfg.image_size} sets the size image files are decoded at (data=folder, "
                         f"data=imagenet, images=[...]); data={cfg.data} comes at its own size. Leave image_size "
                         "out, or read image files")
    if files and not (cfg.data_dir and Path(cfg.data_dir).expanduser().is_dir()):
        where: tuple[Part, ...] = (Option("data_dir", cfg.data_dir), " is not a folder") if cfg.data_dir else \
            ("no ", Option("data_dir"), " was given")
        layout = ("DIR/val/<wnid>/*.JPEG (ImageNet's validation layout)" if factory.describe(cfg.data).imagenet_labels
                  else
                  "DIR/train/CLASS/*.jpg (and DIR/val/CLASS/*.jpg) or DIR/CLASS/*.jpg")
        raise UsageError(f"data={cfg.data} reads an image folder, but ", *where, "; pass ",
                         Option("data_dir", Placeholder("DIR")), f" with {layout}")


def load(cfg: Any, ctx: RunContext, pixels: Sequence[Preprocessing], *, limits: tuple[int, int] = (0, 0),
         record: bool = True, **spec: Any) -> ImageDataset:
    """``cfg.data`` through :func:`atml.data.factory.create`, subsampled to ``limits`` (train, val; 0: all); image
    files decoded for the models whose weights expect ``pixels`` (:func:`decode_plan`).

    What was read (and any unreadable files left out) goes to env.json's ``data`` entry, and
    from there to the run's notes.
    """
    described = factory.describe(cfg.data)
    plan = decode_plan(cfg.image_size, pixels) if described.files else None
    options: dict[str, Any] = {"skip_bad_images": cfg.skip_bad_images, "progress": ctx.progress, **spec}
    if plan is not None:
        options |= {"image_size": plan.size, "crop": plan.crop, "interpolation": plan.interpolation}
    start = time.perf_counter()
    loaded = factory.create(factory.Spec(cfg.data, root=cfg.data_dir, seed=cfg.seed, offline=ctx.offline,
                                         scratch=ctx.scratch("data") if described.generated else None, **options))
    data, ready = loaded.data, loaded.readiness
    images = ready.images if ready else len(data.train) + len(data.val)  # what was had, before the limits
    data.train = data.train.subset(limits[0], seed=cfg.seed)
    data.val = data.val.subset(limits[1], seed=cfg.seed + 1)
    if record:
        source = DataSource(
            data.name, data.source, len(data.train), len(data.val), list(data.train.classes), list(loaded.skipped),
            images=images,
            seconds=round(ready.seconds if ready else time.perf_counter() - start, 3),
            from_cache=bool(ready and ready.from_cache), cache=ready.cache if ready else None,
            notes=(ready.notes if ready else []) + ([f"{data.name}: {plan.why}."] if plan else []),
            decode=plan.as_json() if plan is not None else None, subset=data.subset)
        ctx.record_source("data", source)
        ctx.record_env("data", {"images": source.images, "seconds": source.seconds, "from_cache": source.from_cache,
                                "cache": source.cache, **({"decode": source.decode} if source.decode else {})})
    return data
