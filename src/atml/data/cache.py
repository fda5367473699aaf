"""Decoded datasets on disk: decoded once by every core, memory-mapped by every later run.

    $ATML_CACHE/datasets/<name>-<key>/
        images.u8       (N, C, S, S) uint8, C-contiguous: read back with numpy's memmap
        labels.npy      (N,) int64
        manifest.json   the key's inputs, the shape, unreadable files, checksums of sampled blocks

The key is a SHA-256 of everything that decides the pixels: each file's path relative to
the dataset's root, its size and modification time, its label, the class names, the image
size and the crop it is placed for, grey or RGB, and the decoder's version (atml's and
Pillow's). Another file, another size or another decoder is another cache; the same folder
twice is the same one.

Written atomically: a build writes into ``<dir>.building-<pid>`` and renames it into place
when complete, so a killed build leaves nothing that is read as whole (the next run removes
it and builds again). Builders take an exclusive lock on ``<dir>.lock`` first, so two
processes (or torchrun ranks) asking for the same cache build it once: the second waits and
reads. Every read checks the files' sizes and the checksums of 64 blocks spread over the
images (a full check of 7.5 GB would cost seconds on every run); a cache that fails is
rebuilt, and the run's notes say so.

Why numpy's memmap (measured in ``benchmarks/data-scale-cpu.json``'s storage rows): a batch of
random rows is one fancy-index into page cache, with no decompression or deserialisation,
and the pages are the kernel's to reclaim (file-backed, not anonymous memory).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import sys
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from atml import storage
from atml.data.decode import DECODER_VERSION, decode_into
from atml.errors import DataError

FORMAT = 1
"""The on-disk layout's version; part of every key."""
CHECK_BLOCKS = 64
CHECK_BLOCK_BYTES = 1 << 16
IMAGES, LABELS, MANIFEST = "images.u8", "labels.npy", "manifest.json"


@dataclasses.dataclass(frozen=True)
class Request:
    """The files of one split, in order, with their labels, and how to decode them."""

    name: str
    """A readable prefix for the cache folder (``folder-photos-train``)."""
    root: Path
    files: Sequence[Path]
    labels: Sequence[int]
    classes: Sequence[str]
    size: int
    grayscale: bool = False
    interpolation: str = "bilinear"
    """Pillow's filter for the resize: ``bilinear`` (atml's default) or ``bicubic`` (timm's ViTs)."""
    crop: int | None = None
    """The centre crop the model takes of each ``size`` square later; it places the square
    (:func:`atml.data.decode.square_box`). None: the square is the resized image's own centre crop."""

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3


@dataclasses.dataclass
class Split:
    """A cached split: memory-mapped images, labels, and what it took to have them."""

    images: np.ndarray
    """``(N, C, S, S)`` uint8, a copy-on-write memory map of ``images.u8``."""
    labels: np.ndarray
    bad: list[str]
    """Files that could not be decoded, each ``"path (why)"``."""
    path: Path
    from_cache: bool
    seconds: float
    """Time to have the split ready: the build, or the checks and the mapping."""
    notes: list[str] = dataclasses.field(default_factory=list)


def root() -> Path:
    from atml import runtime

    return runtime.cache_dir() / "datasets"


def key(request: Request) -> str:
    """SHA-256 of every input that decides the cached pixels (see the module's docstring)."""
    import PIL

    digest = hashlib.sha256()
    head = {"format": FORMAT, "decoder": DECODER_VERSION, "pillow": PIL.__version__, "size": request.size,
            "grayscale": request.grayscale, "interpolation": request.interpolation, "crop": request.crop,
            "classes": list(request.classes)}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for path, label in zip(request.files, request.labels, strict=True):
        stat = path.stat()
        digest.update(f"\n{path.relative_to(request.root).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\t{label}"
                      .encode())
    return digest.hexdigest()


def load(request: Request, *, workers: int | None = None, progress: bool = True) -> Split:
    """The split, from the cache when it is there and intact, else decoded (in parallel) and cached."""
    start = time.perf_counter()
    folder = root() / f"{_slug(request.name)}-{key(request)[:20]}"
    notes: list[str] = []
    with storage.locked(folder):
        if folder.is_dir():
            problem = _check(folder)
            if problem is None:
                return _open(folder, from_cache=True, seconds=time.perf_counter() - start)
            notes.append(f"the dataset cache {folder} failed its check ({problem}) and was rebuilt")
            shutil.rmtree(folder)
        _build(request, folder, workers=workers, progress=progress)
    split = _open(folder, from_cache=False, seconds=time.perf_counter() - start)
    split.notes = notes
    return split


def _build(request: Request, folder: Path, *, workers: int | None, progress: bool) -> None:
    for stale in folder.parent.glob(folder.name + ".building-*"):  # a killed build's leftovers (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    count, per_image = len(request.files), request.channels * request.size * request.size
    _check_space(folder.parent, count * per_image)
    partial = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    partial.mkdir()
    try:
        kept, bad = _decode_all(request, partial / IMAGES, workers=workers, progress=progress)
        labels = np.asarray(request.labels, dtype=np.int64)[kept]
        np.save(partial / LABELS, labels)
        shape = (len(kept), request.channels, request.size, request.size)
        manifest = {"format": FORMAT, "name": request.name, "root": str(request.root), "shape": shape,
                    "classes": list(request.classes), "bad": bad, "files": len(request.files),
                    "bytes": {IMAGES: int(np.prod(shape)), LABELS: (partial / LABELS).stat().st_size},
                    "checks": _checksums(partial / IMAGES), "built": time.strftime("%Y-%m-%d %H:%M:%S")}
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1))
        partial.rename(folder)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise DataError(f"cannot write the dataset cache at {partial}: {os.strerror(err.errno)}. Free space there "
                            "or point ATML_CACHE at a disk with room; earlier caches are untouched") from err
        raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _check_space(where: Path, needed: int) -> None:
    free = shutil.disk_usage(where).free
    if free < needed * 1.02 + (64 << 20):
        raise DataError(f"the dataset cache needs {needed / 1e9:.2f} GB at {where} but {free / 1e9:.2f} GB is free; "
                        "free space there or point ATML_CACHE at a disk with room")


PROCESSES_FROM = 200
"""Folders of at least this many images are decoded by worker processes on Linux, fewer by threads."""


def _decode_all(request: Request, out: Path, *, workers: int | None, progress: bool) -> tuple[list[int], list[str]]:
    """Decode every file into ``out`` with one worker per core; returns the indices kept and the unreadable files.

    Each worker writes its image straight to its place in the file (``pwrite`` at ``index x
    bytes per image``) and sends back only a status, so nothing large crosses between
    processes and the parent holds no image. Pillow keeps the GIL while it decodes a JPEG, so
    on Linux, from :data:`PROCESSES_FROM` images, the workers are processes started by
    ``fork`` (as torch's DataLoader does; ``spawn`` and ``forkserver`` would import the
    user's main script again, and the workers use only Pillow and numpy); otherwise threads.
    Plain writes, not a memory map: a full disk is an error here, where a map dies of SIGBUS.
    Unreadable files leave holes, closed afterwards by moving the later images down.
    """
    from tqdm.auto import tqdm

    workers = workers or len(os.sched_getaffinity(0))
    count, nbytes = len(request.files), request.channels * request.size * request.size
    with open(out, "wb") as handle:
        os.ftruncate(handle.fileno(), count * nbytes)  # a file too large for the disk or limits fails here
    jobs = [(i, str(path), request.size, request.grayscale, request.interpolation, request.crop, str(out), nbytes)
            for i, path in enumerate(request.files)]
    if workers > 1 and count >= PROCESSES_FROM and sys.platform.startswith("linux"):
        import multiprocessing

        pool: Executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        results = pool.map(decode_into, jobs, chunksize=16)
    else:
        pool = ThreadPoolExecutor(workers)
        results = pool.map(decode_into, jobs)
    bad: dict[int, str] = {}
    bar = tqdm(total=count, desc=f"decoding {request.name}", unit="img", disable=not progress, leave=False,
               mininterval=1.0)
    try:
        for index, problem, code in results:
            if code:  # the write failed: the disk is full, or a limit was hit
                raise OSError(code, problem)
            if problem:
                bad[index] = problem
            bar.update(1)
    finally:
        bar.close()
        pool.shutdown(cancel_futures=True)
    if bad:
        _close_holes(out, nbytes, count, set(bad))
    return [i for i in range(count) if i not in bad], [bad[i] for i in sorted(bad)]


def _close_holes(out: Path, nbytes: int, count: int, holes: set[int]) -> None:
    """Move every image after a hole down to the next free place; truncate what is left."""
    with open(out, "r+b") as handle:
        free = 0
        for index in range(count):
            if index in holes:
                continue
            if free != index:
                handle.seek(index * nbytes)
                data = handle.read(nbytes)
                handle.seek(free * nbytes)
                handle.write(data)
            free += 1
        handle.truncate(free * nbytes)


def _checksums(path: Path) -> dict[str, list[int]]:
    size = path.stat().st_size
    offsets = sorted({int(o) for o in np.linspace(0, max(0, size - CHECK_BLOCK_BYTES), CHECK_BLOCKS)}) if size else []
    crcs = []
    with open(path, "rb") as handle:
        for offset in offsets:
            handle.seek(offset)
            crcs.append(zlib.crc32(handle.read(CHECK_BLOCK_BYTES)))
    return {"offsets": offsets, "crc32": crcs}


def _check(folder: Path) -> str | None:
    """None when the cache is intact by its manifest; else what is wrong."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as err:
        return f"manifest unreadable: {err}"
    if manifest.get("format") != FORMAT:
        return f"format {manifest.get('format')}, expected {FORMAT}"
    for name, expected in manifest["bytes"].items():
        actual = (folder / name).stat().st_size if (folder / name).is_file() else None
        if actual != expected:
            return f"{name} is {actual} bytes, expected {expected}"
    if _checksums(folder / IMAGES) != manifest["checks"]:
        return f"{IMAGES} does not match its checksums"
    return None


def _open(folder: Path, *, from_cache: bool, seconds: float) -> Split:
    manifest = json.loads((folder / MANIFEST).read_text())
    shape = tuple(manifest["shape"])
    images = (np.memmap(folder / IMAGES, dtype=np.uint8, mode="c", shape=shape) if shape[0]
              else np.empty(shape, dtype=np.uint8))
    labels = np.load(folder / LABELS)
    return Split(images, labels, list(manifest["bad"]), folder, from_cache, seconds)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:60]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One cached item, for ``atml cache``."""

    kind: str
    path: Path
    bytes: int
    detail: str


def entries() -> list[Entry]:
    """Every cached dataset under ``$ATML_CACHE/datasets``, and the other cached artefacts, with their sizes."""
    from atml import runtime

    base = runtime.cache_dir()
    found: list[Entry] = []
    for folder in sorted(root().glob("*")) if root().is_dir() else []:
        if not folder.is_dir():
            continue
        detail = "incomplete build" if ".building-" in folder.name else _describe(folder)
        found.append(Entry("dataset", folder, _size(folder), detail))
    for folder in sorted(base.glob("*")) if base.is_dir() else []:
        if folder.is_dir() and folder.name != "datasets":
            found.append(Entry(_KINDS.get(folder.name, "other"), folder, _size(folder), ""))
    return found


_KINDS = {"pretrained": "models (demo)", "clip-embeddings": "embeddings", "rehearsal": "dataset (generated)",
          "data": "dataset (downloaded)", "generated": "dataset (generated)"}


def _describe(folder: Path) -> str:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return "no readable manifest"
    n, c, s, _ = manifest["shape"]
    return f"{n:,} images, {c} x {s} x {s}, from {manifest['root']} (built {manifest['built']})"


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def clear(kind: str = "datasets") -> list[Path]:
    """Remove cached datasets (``datasets``) or everything in ``$ATML_CACHE`` (``all``); returns what went."""
    from atml import runtime

    targets = [root()] if kind == "datasets" else sorted(runtime.cache_dir().glob("*"))
    gone = []
    for target in targets:
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
            gone.append(target)
    return gone
