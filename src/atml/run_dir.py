"""The run folder: config, environment, metrics, results, figures and checkpoints.

Layout::

    <run>/config.yaml     the resolved config (with the experiment and preset)
    <run>/env.json        versions, device, seed, commit, where data and weights came from
    <run>/metrics.jsonl   one JSON object per epoch and phase, flushed as written
    <run>/results.json    headline numbers, figures, references (written last)
    <run>/figures/        PNG and PDF
    <run>/views/          interactive views (JSON) and the run's thumbnail sheet, for the report
    <run>/checkpoints/    atomic torch files, loaded with weights_only=True

A run folder is created with an exclusive ``mkdir`` so two runs never share one, and an
existing run is only ever reopened explicitly to resume it, under a lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from atml import storage, timemap
from atml.errors import Option, Resume, RunDirError, UsageError
from atml.train.loop import MemoryRecorder


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._tensorboard: Any = None

    # -- creation -----------------------------------------------------------------
    @classmethod
    def create(cls, parent: str | os.PathLike[str], experiment: str, preset: str) -> RunDir:
        """Make a fresh folder ``<parent>/<experiment>-<preset>-<time>[-n]``; never reuse one."""
        parent = Path(parent)
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            what = "is a file, not a folder" if parent.exists() and not parent.is_dir() else \
                f"cannot create the folder ({err.strerror})"
            raise UsageError(Option("out", parent), f" {what}; pass another ", Option("out")) from err
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            name = f"{experiment}-{preset}-{stamp}" + (f"-{n}" if n > 1 else "")
            try:
                (parent / name).mkdir()
            except FileExistsError:
                continue
            except OSError as err:
                raise UsageError(Option("out", parent), f": cannot create a run folder there ({err.strerror}); "
                                 "pass another ", Option("out")) from err
            run = cls(parent / name)
            run.lock()
            return run
        raise RunDirError(f"could not find a free run folder name in {parent}")

    @classmethod
    def create_at(cls, path: str | os.PathLike[str]) -> RunDir:
        """Make the run folder ``path`` itself (a sweep's cell), with the same exclusive ``mkdir``; refuse one that
        exists."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
        except FileExistsError as err:
            raise RunDirError(f"{path} already exists; a new run never reuses a folder (resume it instead)") from err
        except OSError as err:
            raise UsageError(f"cannot create the run folder {path} ({err.strerror}); pass another ",
                             Option("out")) from err
        run = cls(path)
        run.lock()
        return run

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """Reopen an existing run (to resume it); refuse one that another process holds."""
        run = cls(Path(path))
        if not (run.path / "config.yaml").is_file():
            raise RunDirError(f"{run.path} is not an atml run folder (no config.yaml); pass the folder a run printed")
        run.lock()
        return run

    def lock(self) -> None:
        fd = os.open(self.path / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise RunDirError(f"{self.path} is in use by another atml process; wait for it or use another run") from err
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- paths ----------------------------------------------------------------------
    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def views(self) -> Path:
        return self.path / "views"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    # -- files ----------------------------------------------------------------------
    @timemap.counted("writing")
    def write_config(self, data: dict[str, Any]) -> None:
        storage.write_text(self.path / "config.yaml", yaml.safe_dump(data, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        return read_yaml(self.path / "config.yaml")

    @timemap.counted("writing")
    def write_env(self, env: dict[str, Any]) -> None:
        storage.write_json(self.path / "env.json", env)

    def read_env(self) -> dict[str, Any]:
        return read_json(self.path / "env.json")

    @timemap.counted("writing")
    def write_results(self, results: dict[str, Any]) -> None:
        path = self.path / "results.json"
        try:
            storage.write_json(path, results)
        except OSError as err:
            raise RunDirError(f"could not write {path}: {err.strerror or err}; the previous results.json "
                              "(if any) is intact and the checkpoints are kept") from err

    def read_results(self) -> dict[str, Any]:
        return read_json(self.path / "results.json")

    @timemap.counted("writing")
    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line and flush it to disk before returning (and to TensorBoard if on)."""
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if self._tensorboard is not None:
            self._write_scalars(record)

    def enable_tensorboard(self) -> None:
        """Also write every scalar metric as TensorBoard events under ``<run>/tensorboard``."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise UsageError(Option("tensorboard", True), " needs the tensorboard package: pip install "
                             "'atml[tensorboard]'") from err
        self._tensorboard = SummaryWriter(log_dir=str(self.path / "tensorboard"))

    def close_tensorboard(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def _write_scalars(self, record: dict[str, Any]) -> None:
        prefix = f"{record.get('stage', 'main')}/{record.get('phase', 'train')}"
        for name, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "epoch":
                self._tensorboard.add_scalar(f"{prefix}/{name}", value, global_step=record.get("epoch", 0))
        self._tensorboard.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        lines = self.metrics_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def prune_metrics(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Drop records past the checkpoint a resumed run restarts from (no duplicates)."""
        kept = [r for r in self.read_metrics() if keep(r)]
        storage.write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def iter_figures(self) -> Iterator[Path]:
        return iter(sorted(self.figures.glob("*.png")))


def read_json(path: Path) -> dict[str, Any]:
    """A run folder's JSON object, or a RunDirError naming the file and what is wrong (line and column)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise RunDirError(f"{path} is missing: the run did not finish; resume it with ",
                          Resume(_experiment_of(path.parent), path.parent)) from err
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); the file is "
                          "damaged (a run stopped while writing it?): run the experiment again") from None
    except OSError as err:
        raise RunDirError(f"cannot read {path}: {err.strerror or err}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} holds a JSON {type(data).__name__}, not the object atml writes; the file is damaged")
    return data


def _experiment_of(folder: Path) -> str:
    """The experiment a run folder's config.yaml names (``EXPERIMENT`` when it cannot be read)."""
    try:
        return str((yaml.safe_load((folder / "config.yaml").read_text()) or {}).get("experiment", "EXPERIMENT"))
    except (OSError, yaml.YAMLError, AttributeError):
        return "EXPERIMENT"


def read_yaml(path: Path) -> dict[str, Any]:
    """A run folder's config.yaml as a mapping, or a RunDirError naming the file (line and column)."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise RunDirError(f"{path} is not valid YAML{where}; the file is damaged") from None
    except OSError as err:
        raise RunDirError(f"cannot read {path}: {err.strerror or err}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} does not hold a config (a YAML mapping); the file is damaged")
    return data


class FollowerRunDir(RunDir):
    """The view of a run folder from a torchrun rank other than 0: reads shared, writes nothing.

    Rank 0 owns the folder (config, env, metrics, checkpoints, results); the other ranks
    keep their metric records in memory, which the loop reduces across ranks anyway.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._memory = MemoryRecorder()

    def lock(self) -> None: ...

    def unlock(self) -> None: ...

    def write_config(self, data: dict[str, Any]) -> None: ...

    def write_env(self, env: dict[str, Any]) -> None: ...

    def read_env(self) -> dict[str, Any]:
        return {}

    def write_results(self, results: dict[str, Any]) -> None: ...

    def log_metrics(self, record: dict[str, Any]) -> None:
        self._memory.log_metrics(record)

    def read_metrics(self) -> list[dict[str, Any]]:
        return self._memory.read_metrics()

    def prune_metrics(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        self._memory.prune_metrics(keep)
