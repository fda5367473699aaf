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
import inspect
import json
import sys
import time
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from atml.errors import AtmlError
from atml.results import Figure, Metrics, RunResults, Table


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
        from atml.experiments import registry

        return dict(registry().get(self.name).presets[name])


def experiments() -> list[ExperimentInfo]:
    """Every registered experiment, in the order ``atml demo`` runs them."""
    from atml.experiments import registry

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
        from atml.errors import RunDirError

        self.path = Path(path)
        if not (self.path / "results.json").is_file():
            raise RunDirError(f"{self.path} has no results.json: not a finished atml run folder")
        self.results = RunResults.from_json(json.loads((self.path / "results.json").read_text()))
        import yaml

        self.config: dict[str, Any] = yaml.safe_load((self.path / "config.yaml").read_text()) or {}
        env = self.path / "env.json"
        self.env: dict[str, Any] = json.loads(env.read_text()) if env.is_file() else {}

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

    def figure_path(self, name: str, kind: str = "png") -> Path:
        """The file of the figure called ``name`` (``kind``: png or pdf)."""
        figure = next((f for f in self.figures if f.name == name), None)
        if figure is None:
            raise KeyError(f"no figure {name!r}; this run has {', '.join(f.name for f in self.figures)}")
        return self.path / (figure.png if kind == "png" else figure.pdf)

    def discussion(self) -> list[str]:
        """The sentences the report writes under "What the numbers show"."""
        from atml.experiments import registry
        from atml.report import build

        reg = registry()
        return build.discuss(reg.get(self.experiment) if self.experiment in reg.names() else None, self.results)

    def __repr__(self) -> str:
        return f"Run({self.experiment}, preset={self.preset}, status={self.status}, path={str(self.path)!r})"

    def _repr_html_(self) -> str:
        from atml.experiments import registry
        from atml.report import build

        return build.render_run(self.path, registry())


def run(name: str, preset: str = "full", *, out: str | Path | None = None, device: str = "auto", seed: int = 0,
        progress: bool | None = None, quiet: bool = False, **overrides: Any) -> Run:
    """Run experiment ``name`` at ``preset`` (default ``full``, as ``atml run``) into a new run folder under ``out``
    (default ``runs``).

    ``overrides`` are the keys ``--set`` takes, with Python values (``epochs=2``,
    ``resolutions=[16, 32]``); they are checked as the command line checks them and a bad
    one raises :class:`~atml.errors.UsageError` naming the valid keys or range. Long steps
    show progress bars (notebook bars in Jupyter); ``quiet`` silences the per-epoch lines.
    """
    from atml import config as config_lib
    from atml import runner
    from atml.experiments import registry

    try:
        exp = registry().get(name)
        cfg = config_lib.build(exp.config_cls, exp.presets, preset, [])
        cfg = config_lib.apply_values(cfg, {"device": device, "seed": seed, **overrides}, name=exp.name)
        say = (lambda _m: None) if quiet else print
        folder = runner.execute(exp, cfg, preset=preset, out=out,
                                progress=_in_notebook() if progress is None else progress, say=say)
    except AtmlError as err:  # the same checks as the command line, in Python's words
        err.args = (pythonic(str(err)),)
        raise
    return Run(folder.path)


_FLAGS = {"--data-dir ": "data_dir=", "--weights ": "weights=", "--device ": "device=", "--seed ": "seed=",
          "--out ": "out=", "--set ": "", "--data-dir": "data_dir=", "--weights": "weights="}


def pythonic(message: str) -> str:
    """A message written for the command line with its options as :func:`run`'s keyword arguments
    (``--data-dir DIR`` -> ``data_dir=DIR``, ``--set epochs=3`` -> ``epochs=3``)."""
    for flag, keyword in _FLAGS.items():
        message = message.replace(flag, keyword)
    return message


def load(path: str | Path) -> Run:
    """The :class:`Run` of an existing run folder (one written by ``atml run`` or :func:`run`)."""
    return Run(path)


def report(runs: Iterable[Run | str | Path], out: str | Path | None = None) -> Path:
    """One report (HTML, Markdown, LaTeX tables, figures) from runs or run folders; returns report.html's path."""
    from atml.experiments import registry
    from atml.report import build

    paths: Sequence[Path] = [r.path if isinstance(r, Run) else Path(r) for r in runs]
    target = Path(out) if out else Path("reports") / f"report-{time.strftime('%Y%m%d-%H%M%S')}"
    return build.write_report(paths, target, registry(), warn=lambda line: print(f"not included: {line}",
                                                                                 file=sys.stderr))


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (progress bars then render as widgets)."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"
