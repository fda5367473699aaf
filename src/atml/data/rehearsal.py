"""Generated data of the full preset's real shapes and counts, to time a course-scale run without the files.

The ``rehearsal`` preset of every experiment reads these instead of CIFAR-10, FashionMNIST
and STL-10, and uses random weights of the real architectures, so the whole full-scale
suite can be timed on a GPU (``scripts/suite_timing.py``) with nothing downloaded. The
files are written once in the official on-disk formats (so the real loaders read them)
under ``$ATML_CACHE/rehearsal`` and checked by their manifest on every read. Every run
on them says so: its numbers measure time and memory, not a model.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from atml import runtime
from atml.data import ImageDataset, cifar10, fashion_mnist, stl10

SIZES = {"cifar10": (50_000, 10_000), "fashion-mnist": (60_000, 10_000), "stl10": (5_000, 8_000)}
"""Train and test images of the real datasets."""
NAMES = tuple(f"rehearsal-{name}" for name in SIZES)
NOTE = ("REHEARSAL: generated files of the real dataset's format, shapes and counts, and random weights of the "
        "real architecture. The numbers measure time and memory only; they say nothing about any model.")

_FORMATS: dict[str, tuple[Callable[..., Path], Callable[[Path], ImageDataset], str]] = {
    "cifar10": (cifar10.write_batches, cifar10.load_generated, cifar10.FOLDER),
    "fashion-mnist": (fashion_mnist.write_idx, fashion_mnist.load_generated, "FashionMNIST/raw"),
    "stl10": (stl10.write_binaries, stl10.load_generated, stl10.FOLDER),
}


def is_rehearsal(preset: str, cfg: object) -> bool:
    """A run on rehearsal data (the rehearsal preset, or a rehearsal dataset named by hand)."""
    return preset == "rehearsal" or getattr(cfg, "data", None) in NAMES


def load(name: str, seed: int = 0) -> ImageDataset:
    """``rehearsal-cifar10`` | ``rehearsal-fashion-mnist`` | ``rehearsal-stl10``, written on first use."""
    dataset = name.removeprefix("rehearsal-")
    write, read, inner = _FORMATS[dataset]
    root = runtime.cache_dir() / "rehearsal" / f"{dataset}-seed{seed}"
    if not (root / inner / "atml-generated.json").is_file():
        _write_once(root, lambda tmp: write(tmp, n_train=SIZES[dataset][0], n_test=SIZES[dataset][1], seed=seed))
    data = read(root)
    n_train, n_test = SIZES[dataset]
    data.name = name
    data.source = (f"REHEARSAL data: generated {dataset}-format files at {root}, {n_train:,} train / {n_test:,} "
                   f"test images like the real set; NOT real {dataset}")
    return data


def _write_once(root: Path, write: Callable[[Path], Path]) -> None:
    """Write into a temporary sibling, then rename: concurrent writers (torchrun ranks) never see half a set."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write(tmp)
        try:
            tmp.rename(root)
        except OSError:  # another process finished first: keep its copy
            if not root.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
