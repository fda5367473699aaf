"""The Python API: run experiments from a notebook or a script and get typed results back.

    import atml

    atml.experiments()                                   # name, summary, presets, config fields
    run = atml.run("resnet.head", "smoke", epochs=1)     # the same keys as --set, typed values
    run.metrics.by("val_acc", "resolution")              # {16: 0.23, 32: 0.22}
    run                                                  # in Jupyter: the run as the report shows it
    again = atml.run("resnet.head", "smoke", epochs=2)
    atml.report([run, again], "reports/epochs")          # one page from both

The command line is a thin layer over these functions (``atml run`` = :func:`run`,
``atml report`` = :func:`report`); both write the same run folders.
"""

from __future__ import annotations

import ast
import dataclasses
import html
import inspect
import json
import sys
import time
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from atml import storage
from atml.errors import Resume, UsageError
from atml.results import Bench as Bench
from atml.results import Figure, Metrics, RunResults, Spread, Table, pandas_or_error, spread
from atml.results import Speed as Speed

if typing.TYPE_CHECKING:
    import pandas

    from atml.console import Reporter
    from atml.models import registry as registry_lib


@dataclasses.dataclass(frozen=True)
class Field:
    """One config option: its type, default and what it means (the field's docstring)."""

    name: str
    type: str
    default: Any
    doc: str


@dataclasses.dataclass(frozen=True)
class ExperimentInfo:
    """What :func:`experiments` tells about one experiment."""

    name: str
    summary: str
    presets: tuple[str, ...]
    config: type
    fields: tuple[Field, ...]
    benchmark: bool
    """Whether ``atml bench NAME`` has a comparison for it."""

    def preset(self, name: str) -> dict[str, Any]:
        """The values a preset sets (the rest are the config's defaults)."""
        from atml.suite import registry

        return dict(registry().get(self.name).presets[name])


def experiments() -> list[ExperimentInfo]:
    """Every registered experiment, in the order ``atml demo`` runs them."""
    from atml.suite import registry

    return [ExperimentInfo(e.name, e.summary, tuple(e.presets), e.config_cls, config_fields(e.config_cls),
                           e.bench is not None) for e in registry()]


def config_fields(cls: type) -> tuple[Field, ...]:
    """The config's fields with their types, defaults and docstrings (read from the class source)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_field_docs(klass))
    hints = typing.get_type_hints(cls)
    return tuple(Field(f.name, _type_name(hints.get(f.name, f.type)), f.default, docs.get(f.name, ""))
                 for f in dataclasses.fields(cls))


def _field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` for the string literals that follow annotated fields in the class body."""
    try:
        tree = ast.parse(inspect.getsource(cls).lstrip())
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    out = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str)):
            out[node.target.id] = " ".join(following.value.value.split())
    return out


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


class Run:
    """One run folder: its config, environment and typed results.

    ``metrics`` (:class:`~atml.results.Metrics`: look numbers up by name and condition),
    ``tables``, ``figures``, ``notes``, ``references``, ``config``, ``path``, ``status``; in
    Jupyter a ``Run`` displays itself as the report shows it (summary, numbers against their
    references, figures inline).
    """

    def __init__(self, path: str | Path) -> None:
        from atml.run_dir import read_json, read_yaml

        self.path = Path(path)
        _check_finished(self.path)
        self.config: dict[str, Any] = read_yaml(self.path / "config.yaml") if (self.path / "config.yaml").is_file() \
            else {}
        self.results = RunResults.from_folder(read_json(self.path / "results.json"), self.config, self.path)
        env = self.path / "env.json"
        self.env: dict[str, Any] = read_json(env) if env.is_file() else {}
        self.grid: dict[str, Any] = {}
        """A sweep cell's values of the keys the sweep varies (empty for a run outside a sweep)."""

    @property
    def experiment(self) -> str:
        return self.results.experiment

    @property
    def preset(self) -> str:
        return self.results.preset

    @property
    def status(self) -> str:
        return self.results.status

    @property
    def seed(self) -> int | None:
        return self.results.seed

    @property
    def metrics(self) -> Metrics:
        return self.results.metrics

    @property
    def tables(self) -> list[Table]:
        return self.results.tables

    @property
    def figures(self) -> list[Figure]:
        return self.results.figures

    @property
    def notes(self) -> list[str]:
        return self.results.notes

    @property
    def references(self) -> list[dict[str, Any]]:
        return self.results.references

    @property
    def data(self) -> dict[str, Any]:
        """Experiment-specific structured results (e.g. ``resnet.transfer``'s cells)."""
        return self.results.data

    def to_frame(self) -> pandas.DataFrame:
        """The run's records as a tidy DataFrame (see :meth:`atml.results.Metrics.to_frame`), with ``run`` and
        ``seed`` columns, so that frames of several runs concatenate."""
        frame = self.metrics.to_frame(run=str(self.path), seed=self.seed)
        for key, value in self.grid.items():
            if key != "seed":
                frame[key] = "+".join(map(str, value)) if isinstance(value, list) else value
        return frame

    def figure_path(self, name: str, kind: str = "png") -> Path:
        """The file of the figure called ``name`` (``kind``: png or pdf)."""
        figure = next((f for f in self.figures if f.name == name), None)
        if figure is None:
            raise KeyError(f"no figure {name!r}; this run has {', '.join(f.name for f in self.figures)}")
        file = figure.png if kind == "png" else figure.pdf
        if file is None:
            raise KeyError(f"figure {name!r} has no {kind} file in this run")
        return self.path / file

    def discussion(self) -> list[str]:
        """The sentences the report writes under "What the numbers show"."""
        from atml.reporting import build
        from atml.suite import registry

        reg = registry()
        return build.discuss(reg.get(self.experiment) if self.experiment in reg.names() else None, self.results)

    def __repr__(self) -> str:
        return f"Run({self.experiment}, preset={self.preset}, status={self.status}, path={str(self.path)!r})"

    def _repr_html_(self) -> str:
        from atml.reporting import build
        from atml.suite import registry

        return build.render_run(self.path, registry())

    def explore(self) -> Explorer:
        """This run's interactive views (the report's, from the same code): shown in a notebook as a frame that
        runs its own script, or written to a file with ``save``."""
        from atml.reporting import interactive

        blocks = interactive.load(self.path, self.results.views, "view")
        return Explorer(interactive.page(blocks, f"{self.experiment} ({self.preset} preset): {self.path.name}"),
                        [b.id for b in blocks])


@dataclasses.dataclass
class Explorer:
    """A run's interactive views as one self-contained page (``Run.explore()``)."""

    page: str
    """The whole HTML page: its script and data inline, nothing fetched."""
    ids: list[str]
    """The views' element ids in the page."""

    def _repr_html_(self) -> str:
        """The page in a sandboxed frame: notebook front ends run a frame's scripts, not those in an output."""
        return (f'<iframe srcdoc="{html.escape(self.page, quote=True)}" sandbox="allow-scripts" '
                'style="width: 100%; height: 760px; border: 1px solid #d9dee7;"></iframe>')

    def save(self, path: str | Path) -> Path:
        """Write the page; returns its path."""
        storage.write_text(Path(path), self.page)
        return Path(path)


class Runs(Sequence[Run]):
    """Runs of one experiment: seeds of one config (``atml.run(..., seeds=N)``) or a sweep's cells (``atml.sweep``).

    A sequence of :class:`Run`; :meth:`summary` gives each metric's mean, sample standard
    deviation and n over the seeds, as the report's seed table does; :meth:`to_frame` one
    tidy DataFrame of every run's records; :func:`report` takes it as it is.
    """

    def __init__(self, runs: Iterable[Run]) -> None:
        self._runs = list(runs)

    @typing.overload
    def __getitem__(self, index: int) -> Run: ...

    @typing.overload
    def __getitem__(self, index: slice) -> Runs: ...

    def __getitem__(self, index: int | slice) -> Run | Runs:
        return Runs(self._runs[index]) if isinstance(index, slice) else self._runs[index]

    def __len__(self) -> int:
        return len(self._runs)

    def summary(self) -> list[Spread]:
        """Every metric all the runs have: mean, sample std (0 for one run), n, min and max over the seeds."""
        return spread([r.metrics for r in self._runs])

    def mean(self, name: str, **condition: Any) -> float:
        """The mean over the runs of one metric (looked up as :meth:`atml.results.Metrics.value` does)."""
        values = [r.metrics.value(name, **condition) for r in self._runs]
        return sum(values) / len(values)

    def to_frame(self) -> pandas.DataFrame:
        """Every run's records in one tidy DataFrame (columns ``run``, ``seed``, ``name``, ``value``, ``unit``,
        ``key``, then one per condition key): ``df.groupby(["name", "resolution"]).value.agg(["mean", "std"])``."""
        pd = pandas_or_error()
        frames = [r.to_frame() for r in self._runs]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def __repr__(self) -> str:
        seeds = [r.seed for r in self._runs]
        name = self._runs[0].experiment if self._runs else "-"
        return f"Runs({name}, {len(self._runs)} run(s), seeds {seeds})"


@typing.overload
def run(name: str, preset: str | None = ..., *, seeds: None = ..., out: str | Path | None = ...,
        device: str = ..., seed: int = ..., data_dir: str | Path | None = ..., weights: str | Path | None = ...,
        offline: bool | None = ..., tensorboard: bool = ..., resume: str | Path | None = ...,
        progress: bool | None = ..., quiet: bool = ..., **overrides: Any) -> Run: ...


@typing.overload
def run(name: str, preset: str | None = ..., *, seeds: int, out: str | Path | None = ...,
        device: str = ..., seed: int = ..., data_dir: str | Path | None = ..., weights: str | Path | None = ...,
        offline: bool | None = ..., tensorboard: bool = ..., resume: str | Path | None = ...,
        progress: bool | None = ..., quiet: bool = ..., **overrides: Any) -> Runs: ...


def run(name: str, preset: str | None = None, *, seeds: int | None = None, out: str | Path | None = None,
        device: str = "auto", seed: int = 0, data_dir: str | Path | None = None, weights: str | Path | None = None,
        offline: bool | None = None, tensorboard: bool = False, resume: str | Path | None = None,
        progress: bool | None = None, quiet: bool = False, **overrides: Any) -> Run | Runs:
    """Run experiment ``name`` at ``preset`` (default ``full``, as ``atml run``) into a new run folder under ``out``
    (default ``runs``); the same code path as ``atml run``.

    - ``overrides`` are the keys ``--set`` takes, with Python values (``epochs=2``,
      ``resolutions=[16, 32]``), checked as the command line checks them: a bad one raises
      :class:`~atml.errors.UsageError` naming the valid keys or range.
    - ``data_dir`` (``--data-dir``: the folder of ``data=folder``/``imagenet`` or of the
      official dataset files), ``weights`` (``--weights``: a registry tag such as
      ``imagenet``, ``random``, or a .pth/.safetensors file), ``device`` (auto, cpu, cuda,
      mps), ``seed``, ``offline`` (never use the network) are the command line's flags.
    - ``seeds=N``: N runs with seeds ``seed ... seed+N-1``, returned as :class:`Runs`
      (without it, one :class:`Run`).
    - ``tensorboard``: also write TensorBoard event files in the run folder.
    - ``resume=PATH``: continue that interrupted run instead (as :func:`resume`; ``name``
      must be its experiment and ``overrides`` may only raise ``epochs`` or change ``device``).

    Ctrl-C keeps the checkpoints, says the :func:`resume` call that continues, and raises
    ``KeyboardInterrupt``. Long steps show progress bars (notebook bars in Jupyter);
    ``quiet`` silences the per-epoch lines.
    """
    from atml import config as config_lib
    from atml import runner
    from atml.suite import registry

    flags = {"data_dir": data_dir, "weights": weights, "offline": offline}
    values = {**overrides, **{k: str(v) if isinstance(v, Path) else v for k, v in flags.items() if v is not None}}
    if resume is not None:
        if seeds is not None or out is not None:
            raise UsageError("seeds and out start new runs; they cannot be combined with resume=")
        return resume_run(resume, name=name, preset=preset, tensorboard=tensorboard, progress=progress,
                          quiet=quiet, **({"device": device} if device != "auto" else {}), **values)
    exp = registry().get(name)
    folders = runner.start(exp, preset or config_lib.DEFAULT_PRESET, values={"device": device, "seed": seed,
                                                                              **values},
                           seeds=1 if seeds is None else seeds, out=out, tensorboard=tensorboard,
                           report=_reporter(progress, quiet))
    runs = [Run(folder.path) for folder in folders]
    return runs[0] if seeds is None else Runs(runs)


def sweep(spec: str | Path, preset: str | None = None, *, grid: Mapping[str, Sequence[Any]] | None = None,
          cells: Sequence[Mapping[str, Any]] = (), seeds: int | None = None, out: str | Path = "runs",
          name: str | None = None, executor: str = "local", parallel: int | None = None, retry_failed: bool = False,
          track: str | None = None, progress: bool | None = None, quiet: bool = False, **fixed: Any) -> Runs:
    """Run a grid of one experiment's configs through submitit, as ``atml sweep`` does; the completed and failed
    cells as :class:`Runs`, each :class:`Run` with its ``grid`` values (columns of :meth:`Runs.to_frame`).

    ``spec``: an experiment name, or a spec file (``grid``/``cells``/``seeds``/``preset`` here add to it).
    ``grid``: ``{"data": ["digits", "generated-cifar10"], "models": [["a"], ["b"]]}`` (the cartesian
    product); ``cells``: explicit extra cells; ``fixed``: config values for every cell. Rerunning
    skips complete cells and resumes interrupted ones; failed ones rerun with ``retry_failed``.
    Slurm options (partition, GPUs, job arrays) are the command line's (``atml sweep --help``).
    """
    from atml.suite import registry
    from atml.sweeps import dispatch
    from atml.sweeps import spec as spec_lib

    path = Path(spec)
    request = spec_lib.read_spec(path) if path.suffix in (".yaml", ".yml") else spec_lib.Request(str(spec))
    for key, values in (grid or {}).items():
        request.vary(key, list(values))
    request.cells += [dict(c) for c in cells]
    request.fixed += list(fixed.items())
    request.given(preset, seeds, name)
    request.source = "atml.sweep(...)" if request.source == "the command line" else request.source
    checked = spec_lib.expand(request, registry())
    opts = dispatch.Options(out=Path(out), executor=executor, parallel=parallel, retry_failed=retry_failed,
                            track=track, command="")
    summary = dispatch.run(checked, opts, report=_reporter(progress, quiet))
    runs = []
    for cell in checked.cells:
        folder = summary.folder / cell.name
        if (folder / "results.json").is_file():
            run = Run(folder)
            run.grid = dict(cell.values)
            runs.append(run)
    return Runs(runs)


def resume(path: str | Path, *, tensorboard: bool = False, progress: bool | None = None, quiet: bool = False,
           **changes: Any) -> Run:
    """Continue the interrupted run in ``path`` from its last checkpoint (``atml run NAME --resume PATH``).

    ``changes`` may raise ``epochs`` (train further) or set another ``device``; both are
    recorded in the run's ``env.json``. Any other change is refused with the command line's
    message, since it would mix two experiments in one folder. A finished run is left as it
    is (and says so).
    """
    return resume_run(path, tensorboard=tensorboard, progress=progress, quiet=quiet, **changes)


def resume_run(path: str | Path, *, name: str | None = None, preset: str | None = None, tensorboard: bool = False,
               progress: bool | None = None, quiet: bool = False, **changes: Any) -> Run:
    from atml import runner
    from atml.suite import registry

    folder = runner.resume(registry().get, path, name=name, values=changes, preset=preset,
                           tensorboard=tensorboard, report=_reporter(progress, quiet))
    return Run(folder.path)


def _reporter(progress: bool | None, quiet: bool) -> Reporter:
    """What a notebook or script sees: notebook bars in Jupyter (unless ``progress`` says), nothing printed when
    ``quiet``, what to do next as Python calls."""
    from atml.console import QUIET, Reporter

    return Reporter(QUIET.say if quiet else print, _in_notebook() if progress is None else progress)


def load(path: str | Path) -> Run:
    """The :class:`Run` of an existing run folder (one written by ``atml run`` or :func:`run`).

    Raises :class:`~atml.errors.RunDirError` naming the file and what is wrong: a folder that
    is not a run, an interrupted run (the epoch it reached and the :func:`resume` call), or a
    damaged ``results.json``/``env.json``/``config.yaml`` (line and column).
    """
    return Run(path)


def _check_finished(path: Path) -> None:
    """Raise a RunDirError saying why ``path`` is not a finished run folder; nothing when it is one."""
    from atml.errors import RunDirError
    from atml.run_dir import read_yaml

    if not path.is_dir():
        raise RunDirError(f"{path} does not exist or is not a folder; pass a run folder (atml run prints its path)")
    if (path / "results.json").is_file():
        return
    if not (path / "config.yaml").is_file():
        raise RunDirError(f"{path} is not an atml run folder (no results.json, no config.yaml); pass the folder a run "
                          "printed, e.g. runs/resnet.head-smoke-...")
    saved = read_yaml(path / "config.yaml")
    reached = ""
    rows = []
    if (path / "metrics.jsonl").is_file():
        for line in (path / "metrics.jsonl").read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by the interruption
                break
    if rows:
        last = rows[-1]
        reached = f" It stopped after epoch {last.get('epoch')} of stage {last.get('stage', 'main')}"
        reached += " (checkpoints kept)." if any((path / "checkpoints").glob("*.pt")) else "."
    raise RunDirError(f"{path} is an unfinished run of {saved.get('experiment', '?')} ({saved.get('preset', '?')}): "
                      f"it has no results.json.{reached} Continue it with ",
                      Resume(str(saved.get("experiment", "EXPERIMENT")), path))


def report(runs: Iterable[Run | str | Path], out: str | Path | None = None, *, static: bool = False) -> Path:
    """One report (HTML, Markdown, LaTeX tables, figures) from runs or run folders; returns report.html's path.
    ``static``: no interactive views and no scripts in the page (``atml report --static``)."""
    from atml.reporting import build
    from atml.suite import registry

    paths: Sequence[Path] = [r.path if isinstance(r, Run) else Path(r) for r in runs]
    target = Path(out) if out else Path("reports") / f"report-{time.strftime('%Y%m%d-%H%M%S')}"
    return build.write_report(paths, target, registry(), static=static,
                              warn=lambda err: print(f"not included: {err}", file=sys.stderr))


@typing.overload
def model_info(name: None = ..., family: str | None = ...) -> list[registry_lib.Model]: ...


@typing.overload
def model_info(name: str, family: str | None = ...) -> registry_lib.Model: ...


def model_info(name: str | None = None, family: str | None = None) -> list[registry_lib.Model] | registry_lib.Model:
    """The model registry (``atml models``): atml's own entries (of ``family``: cnn, vit or clip), or, with
    ``name``, the entry of any model atml can build (``resnet152``, ``timm/convnext_tiny``, ``ViT-B-16``) with its
    weights tags, sources, checks and preprocessing. (Not ``atml.models``: that name is atml's models package.)"""
    from atml.models import factory
    from atml.models import registry as models_registry

    if family is not None and family not in models_registry.FAMILIES:
        raise UsageError(f"family={family!r} is not valid; choose one of {', '.join(models_registry.FAMILIES)}")
    if name is not None:
        return factory.find(name, family)
    return [m for m in models_registry.MODELS.values() if family in (None, m.family)]


def bench(name: str, preset: str = "demo", *, device: str = "auto", seed: int = 0,
          **overrides: Any) -> Bench:
    """``atml bench NAME``: time atml's path against the naive one (prints the table, returns the figures)."""
    from atml import config as config_lib
    from atml.suite import registry

    exp = registry().get(name)
    if exp.bench is None:
        raise UsageError(f"{exp.name} has no benchmark; these have one: "
                        + ", ".join(e.name for e in registry() if e.bench is not None))
    cfg = config_lib.build(exp.config_cls, exp.presets, preset, [], name=exp.name)
    cfg = config_lib.apply_values(cfg, {"device": device, "seed": seed, **overrides}, name=exp.name)
    return dataclasses.replace(exp.bench(cfg), experiment=exp.name)


def speed(device: str = "auto", *, models: Sequence[str] = ("resnet152", "deit_small_patch16_224"),
          compile: str = "off", quick: bool = False) -> Speed:
    """``atml speed``: random-weight ResNet-152 and DeiT-S through atml's paths and timm's loops (prints a line
    per pair; ``quick`` runs tiny batches that check the paths, not the speed)."""
    from atml import speedtest as speed_module

    speed_module.check_options(device, compile, tuple(models))
    return speed_module.run(device, quick=quick, compile=compile, models=tuple(models))


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (progress bars then render as widgets)."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"
