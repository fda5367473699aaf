"""Checkpoints: model, optimizer, scheduler, epoch and RNG state, written atomically.

The data order needs no saved state: it is a function of the seed and the epoch.

Loaded with ``weights_only=True`` only: a checkpoint cannot run code when read.
"""

from __future__ import annotations

import copy
import pickle
import threading
import zipfile
from pathlib import Path
from typing import Any

import torch

from atml import storage, timemap
from atml.errors import RunDirError

FORMAT = "atml-checkpoint-1"


def _state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, scheduler: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _write(state: dict[str, Any], path: Path) -> None:
    """Write a complete checkpoint or nothing (temp file + rename)."""
    try:
        storage.torch_save(state, path)
    except OSError as err:
        raise RunDirError(f"could not write checkpoint {path}: {err.strerror or err}; "
                          "the previous checkpoint (if any) is intact") from err


class Writer:
    """Checkpoints written in a background thread while training goes on, one at a time.

    :meth:`save` copies the state at once (the next steps change the weights in place) and returns; the thread
    writes it (temp file + rename, so a killed process leaves the previous checkpoint whole). :meth:`wait` returns
    once the last write is on disk and raises its error if it failed; :meth:`settle` waits without raising (for a
    run that is stopping on another error). Saving waits for the previous write first.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @timemap.counted("writing")
    def save(self, path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
             scheduler: Any = None) -> None:
        self.wait()
        state = copy.deepcopy(_state(model, optimizer, epoch, scheduler))  # every tensor cloned
        self._thread = threading.Thread(target=self._run, args=(state, path), name="atml-checkpoint", daemon=True)
        self._thread.start()

    def _run(self, state: dict[str, Any], path: Path) -> None:
        try:
            _write(state, path)
        except BaseException as err:  # noqa: BLE001 - handed to the training thread by wait()
            self._error = err

    def settle(self) -> BaseException | None:
        """Wait for the pending write; its error, if it failed (not raised)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        return error

    def wait(self) -> None:
        if (error := self.settle()) is not None:
            raise error



def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely; a damaged or foreign file is a clear error, never code run."""
    try:
        state = storage.torch_load(path)
    except FileNotFoundError as err:
        raise RunDirError(f"checkpoint {path} does not exist") from err
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        raise RunDirError(f"checkpoint {path} is damaged or not an atml checkpoint ({storage.why_unreadable(path)}); "
                          "delete it to restart that stage from scratch") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RunDirError(f"{path} is not an atml checkpoint (format {FORMAT} expected)")
    return state


def restore(state: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any = None) -> int:
    """Load every state back; returns the number of completed epochs."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["epoch"])

