"""Writes that never leave a half-written file: temp file in the same folder + rename.

A reader sees either the previous complete file or the new complete one (POSIX rename
is atomic within one file system). A failing write leaves the old file untouched and
raises an error naming the path.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import signal
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch


@functools.cache
def _file_mode() -> int:
    """The mode open() would give a new file; mkstemp's 0600 would hide reports from others."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _file_mode())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """Save atomically; Ctrl-C or SIGTERM during the write takes effect once the file is complete.

    torch's zip writer turns an exception raised inside its write callback into a bare
    RuntimeError, so an interruption mid-write would surface as a crash, not as a stop.
    """
    with _signals_deferred(), atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver the first to its own handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[signal.Signals] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signal.Signals(signum)))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        first = caught[0] if caught else None
        handler = previous[first] if first is not None else None
        if first is not None and callable(handler):
            handler(first, None)
        elif first is not None:
            signal.raise_signal(first)


def torch_load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu", *, mmap: bool = False) -> Any:
    """The only way atml reads a torch file: ``weights_only=True``, so no pickled code runs. ``mmap``: tensors
    over the file's pages (read as used, reclaimable), not copies in anonymous memory."""
    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def why_unreadable(path: str | os.PathLike[str]) -> str:
    """What a file that torch or safetensors refused to read is, in plain words (no library internals)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError as err:
        return f"it cannot be read ({err.strerror or err})"
    if size == 0:
        return "it is empty"
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return "it is a truncated or damaged zip archive (an incomplete download or copy?)"
        return "it is a zip archive that does not hold a torch state dict"
    if head[:1] == b"\x80":
        return ("it holds pickled data that is not a plain state dict of tensors (atml loads with weights_only=True "
                "and runs no pickled code), or it is truncated")
    if path.suffix == ".safetensors":
        return "it is not a valid safetensors file (bad header or truncated)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not in a format torch or safetensors can read"
    return "it is a text file"


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], None], suffix: str = "") -> None:
    """Let ``writer`` fill a temp path (e.g. matplotlib's savefig), then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, _file_mode())
        writer(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def sha256sum(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file, read in 1 MB chunks (weights files, dataset files and atml's own caches)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` while the block runs: processes (or torchrun ranks) that make the same
    file take turns, so it is made once. The kernel releases the lock when a holder dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
