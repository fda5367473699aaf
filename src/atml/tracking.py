"""Runs sent to the experiment trackers users already run: MLflow and Weights & Biases (``--track``).

Each run becomes one tracked run: its config as parameters, every metric record as a metric
(named ``name/key:value`` after its condition, e.g. ``probe_acc/model:vit-digits``, by
:func:`metric_key`), ``results.json``, ``config.yaml`` and the figures as artifacts. A sweep
is one parent run (MLflow) or one group (W&B) with its cells as children.

- MLflow: ``MLFLOW_TRACKING_URI`` when set, else the SQLite database ``./mlflow.db`` (the backend
  MLflow 3 recommends, and its own default; the artifacts go to ``./mlruns``), which
  ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` opens as it is. The store is opened
  before a run starts: one that MLflow refuses is a usage error, not a traceback after the run.
- W&B: offline unless ``WANDB_MODE`` says otherwise (this machine has no network); ``wandb sync
  wandb/offline-run-*`` uploads later. ``WANDB_PROJECT`` names the project (default ``atml``).

Tracking reads the run folder after the run: it never changes what the run computes.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from atml.errors import Option, UsageError
from atml.results import Metric, RunResults

SINKS = ("mlflow", "wandb")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /:]+")


def check(kind: str) -> None:
    """``--track KIND``: a known sink whose library is installed (and, for MLflow, a store it opens)."""
    if kind not in SINKS:
        raise UsageError(Option("track", kind), f" is not known; choose {' or '.join(SINKS)}")
    try:
        __import__(kind)
    except ImportError as err:
        raise UsageError(Option("track", kind), f" needs the {kind} package: pip install 'atml[{kind}]'") from err
    if kind == "mlflow":
        mlflow_client()


def mlflow_client() -> Any:
    """An MlflowClient on :func:`mlflow_uri`, checked by reading one experiment; a store MLflow cannot open (a
    deprecated file store, a server that does not answer, a bad URI) is one line naming it and what to do."""
    import logging

    from mlflow import MlflowClient

    uri = mlflow_uri()
    quiet = [logging.getLogger(n) for n in ("mlflow.store.db.utils", "alembic.runtime.migration")]
    levels = [q.level for q in quiet]
    for q in quiet:  # "Creating initial MLflow database tables..." on a new database
        q.setLevel(logging.WARNING)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - MLflow raises many kinds; each becomes the same one line
        why = str(err).strip().split(". ")[0].splitlines()[0][:200]
        raise UsageError(Option("track", "mlflow"), f": MLflow cannot open the tracking store {uri} ({why}); point "
                         "MLFLOW_TRACKING_URI at a store it opens (sqlite:///mlflow.db, http://HOST:5000), or unset "
                         "it for atml's default ./mlflow.db") from None
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    return client


def metric_key(record: Metric) -> str:
    """A metric record's name in the trackers: ``name`` then its condition, ``name/key:value/...``."""
    parts = [record.name, *(f"{k}:{v}" for k, v in record.condition.items())]
    return _KEY_UNSAFE.sub("-", "/".join(parts))[:250]


def params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A config as flat text parameters (nested keys dotted, lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


def metrics(results: RunResults) -> dict[str, float]:
    """Every finite record of a run's results by :func:`metric_key`."""
    return {metric_key(record): float(record.value) for record in results.metrics if math.isfinite(record.value)}


class Sink(Protocol):
    def log_run(self, folder: Path, cell: Any = None, replaces: str | None = None) -> str: ...

    def parent_ids(self) -> dict[str, str]: ...

    def close(self, status: str = "FINISHED") -> None: ...

    def discard(self) -> None: ...


def open_sink(kind: str, sweep: Any = None, saved: Mapping[str, str] | None = None) -> Sink:
    """A sink for one ``atml run`` (``sweep`` None) or one sweep (a parent run, reused when ``saved`` names it)."""
    check(kind)
    if kind == "mlflow":
        return MlflowSink(sweep, saved or {})
    return WandbSink(sweep)


def read_run(folder: Path) -> tuple[dict[str, Any], RunResults]:
    """A run folder's config (as plain data, the trackers' parameters) and its typed results."""
    from atml.run_dir import read_json, read_yaml

    config = folder / "config.yaml"  # a cell that failed before its run began has results.json alone
    return (read_yaml(config) if config.is_file() else {}), RunResults.from_json(read_json(folder / "results.json"))


def _artifacts(folder: Path, results: RunResults) -> list[Path]:
    files = [folder / "results.json", folder / "config.yaml", folder / "env.json"]
    files += [folder / f for figure in results.figures for f in figure.files]
    return [f for f in files if f.is_file()]


def mlflow_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the SQLite database ``./mlflow.db`` (an absolute path: a sweep's cells and its
    controller agree on it wherever they run)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


class MlflowSink:
    """Runs into MLflow through its client: an experiment per atml experiment, a parent run per sweep."""

    def __init__(self, sweep: Any, saved: Mapping[str, str]) -> None:
        self.client = mlflow_client()
        self.sweep, self.parent = sweep, saved.get("mlflow_parent_run")
        self.experiments: dict[str, str] = {}
        if self.parent is not None:  # a resumed sweep: its parent runs again until this controller ends it
            self.client.update_run(self.parent, status="RUNNING")
        elif sweep is not None:
            run = self.client.create_run(self._experiment(sweep.experiment), run_name=f"sweep-{sweep.name}",
                                         tags={"atml.sweep": sweep.name, "atml.preset": sweep.preset})
            self.parent = run.info.run_id
            self.client.log_batch(self.parent, params=_mlflow_params({"preset": sweep.preset, **sweep.fixed,
                                                                      "grid_keys": sweep.keys}))

    def _experiment(self, name: str) -> str:
        if name not in self.experiments:
            found = self.client.get_experiment_by_name(name)
            self.experiments[name] = found.experiment_id if found else self.client.create_experiment(name)
        return self.experiments[name]

    def log_run(self, folder: Path, cell: Any = None, replaces: str | None = None) -> str:
        """One run (a sweep's cell nested under the parent); ``replaces``: the cell's earlier run (a failed try),
        deleted once this one is logged."""
        from mlflow.entities import Metric

        config, results = read_run(folder)
        tags = {"atml.run_folder": str(folder.resolve()), "atml.status": results.status,
                "atml.preset": results.preset}
        if self.parent:
            tags["mlflow.parentRunId"] = self.parent
        run = self.client.create_run(self._experiment(results.experiment), run_name=folder.name, tags=tags)
        run_id = run.info.run_id
        now = int(time.time() * 1000)  # MLflow's timestamps are milliseconds
        values = metrics(results)
        batch = [Metric(key, value, now, 0) for key, value in values.items()]
        for start in range(0, max(len(batch), 1), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(run_id, metrics=batch[start:start + 1000],
                                  params=_mlflow_params(config) if start == 0 else [])
        for path in _artifacts(folder, results):
            self.client.log_artifact(run_id, str(path), "figures" if path.parent.name == "figures" else None)
        self.client.set_terminated(run_id, "FINISHED" if results.status == "ok" else "FAILED")
        if replaces:
            self.client.delete_run(replaces)
        result: str = run_id
        return result

    def parent_ids(self) -> dict[str, str]:
        return {"mlflow_parent_run": self.parent} if self.parent else {}

    def close(self, status: str = "FINISHED") -> None:
        """End the sweep's parent run: FINISHED, FAILED or KILLED."""
        if self.parent:
            self.client.set_terminated(self.parent, status)

    def discard(self) -> None:
        """Delete the sweep's parent run (a sweep the cluster refused before any cell ran)."""
        if self.parent:
            self.client.delete_run(self.parent)


def _mlflow_params(config: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, v[:6000]) for k, v in params(config).items()]


class WandbSink:
    """Runs into W&B, offline without a network: a sweep is a group, each cell a run in it."""

    def __init__(self, sweep: Any) -> None:
        self.sweep = sweep

    def log_run(self, folder: Path, cell: Any = None, replaces: str | None = None) -> str:
        """One offline run in the sweep's group (an offline run cannot be deleted: a retried cell's earlier run
        stays, tagged with its status)."""
        import wandb

        config, results = read_run(folder)
        settings = wandb.Settings(silent=True, console="off")
        mode = os.environ.get("WANDB_MODE", "offline")
        run = wandb.init(mode=mode, dir=str(folder), project=os.environ.get("WANDB_PROJECT", "atml"),  # type: ignore[arg-type]
                         group=f"sweep-{self.sweep.name}" if self.sweep else None, name=folder.name,
                         job_type=results.experiment, config=config, settings=settings,
                         tags=[results.preset, results.status], reinit="create_new")
        try:
            values = metrics(results)
            run.log(values)
            for key, value in values.items():
                run.summary[key] = value
            for path in _artifacts(folder, results):  # files in the run's folder are sent at finish (run.save
                target = Path(run.dir) / path.relative_to(folder)  # would print a symlink warning per file)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
            return str(run.id)
        finally:
            run.finish(exit_code=0 if results.status == "ok" else 1)

    def parent_ids(self) -> dict[str, str]:
        return {"wandb_group": f"sweep-{self.sweep.name}"} if self.sweep else {}

    def close(self, status: str = "FINISHED") -> None:
        pass

    def discard(self) -> None:
        pass


def wandb_offline_records(run_file: Path) -> Iterator[Any]:
    """The records of a W&B offline run file (``run-ID.wandb``), as ``wandb_internal_pb2.Record`` messages.

    The file is W&B's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0),
    then LevelDB-log blocks of 32 KiB whose chunks carry a CRC, a length and a type (full,
    first, middle, last); atml reads it back to check what a run sent.
    """
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{run_file} is not a W&B run file")
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            record.ParseFromString(pending)
            yield record
            pending = b""


def wandb_offline_history(run_dir: Path) -> dict[str, Any]:
    """The values an offline W&B run logged (its history rows, merged), read back from its run file."""
    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise ValueError(f"{run_dir} holds no W&B run file")
    out: dict[str, Any] = {}
    for record in wandb_offline_records(files[0]):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or ".".join(item.nested_key)
                if not key.startswith("_"):
                    out[key] = json.loads(item.value_json)
    return out
