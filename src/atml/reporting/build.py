"""``atml report``: run folders in, one self-contained HTML page (plus Markdown, LaTeX) out.

Results are data first: this module only reads ``results.json``, ``config.yaml`` and
``env.json`` and renders them; nothing is parsed back from rendered text.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
import shutil
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2

from atml import figures, references, storage
from atml import results as results_lib
from atml.errors import Option, Resume, RunDirError, UsageError
from atml.registry import Experiment, Registry
from atml.reporting import interactive
from atml.results import Metrics, RunResults
from atml.run_dir import RunDir
from atml.suite import FAMILIES
from atml.sweeps import grid


@dataclasses.dataclass
class RunView:
    """Everything the templates show about one run."""

    path: Path
    slug: str
    results: RunResults
    config: dict[str, Any]
    env: dict[str, Any]
    discussion: list[str]
    figures: list[dict[str, str]]
    views: list[interactive.ViewBlock] = dataclasses.field(default_factory=list)
    """The run's interactive views (none in a ``--static`` report)."""


@dataclasses.dataclass
class Group:
    """Runs of one experiment, preset and config that differ only in their seed."""

    views: list[RunView]
    spread: list[dict[str, Any]]
    """Per metric: mean, sample std, n, min, max over the seeds (empty for a single run)."""
    references: list[dict[str, Any]]
    """The published figures compared with the mean over seeds (with one run: that run's)."""
    discussion: list[str]
    """The sentences, written from the mean over seeds (with one run: that run's)."""
    discussed: str = "the run"
    """What the discussion was written from, for the page (``the mean of 3 seeds``)."""

    @property
    def first(self) -> RunView:
        return self.views[0]

    @property
    def seeds(self) -> list[Any]:
        return [v.results.seed for v in self.views]


@dataclasses.dataclass
class Skipped:
    """A folder given to the report that it could not include, and why."""

    path: str
    reason: str


def write_report(run_paths: Sequence[Path], out: Path, reg: Registry, *, static: bool = False,
                 warn: Callable[[RunDirError], None] = lambda _err: None) -> Path:
    """Render the runs into ``out``; returns the path of ``report.html``.

    The page holds each run's interactive views (:mod:`atml.reporting.interactive`) beside its figures;
    ``static`` leaves them out, and with them every script.

    Folders that are not readable runs (not a run folder, a run that never finished) are
    listed under "Not included" with the reason; failed runs are shown with their status
    and error. The same folder given twice counts once. Only when nothing is readable is
    it an error. ``warn`` gets each folder left out, as the error that says why (naming the folder).
    """
    out = check_output_folder(out)
    views: list[RunView] = []
    skipped: list[Skipped] = []
    left_out: list[RunDirError] = []
    for path in unique_paths(run_paths):
        try:
            views.append(_load(path, len(views), reg, explore=not static))
        except RunDirError as err:
            named = err if str(err).startswith(str(path)) else RunDirError(f"{path}: ", *err.parts)
            skipped.append(Skipped(str(path), str(err)))
            left_out.append(named)
    if not views:  # said once, in the error
        joined = [part for error in left_out for part in ("; ", *error.parts)][1:]
        raise RunDirError("no run folder could be read: ", *joined)
    for error in left_out:
        warn(error)
    groups = group_by_seed(views, reg)
    _distinct_titles(views)
    thinned = interactive.fit([block for view in views for block in view.views])
    try:
        out.mkdir(parents=True, exist_ok=True)
        for view in views:
            _copy_figures(view, out)
        grids = _grids(run_paths, views, out)
        context = {"views": views, "groups": groups, "skipped": skipped, "fmt": fmt, "families": FAMILIES,
                   "grids": grids, "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "static": static,
                   "thinned": thinned,
                   "explore_head": "" if static or not any(v.views for v in views) else interactive.head()}
        env = _jinja()
        for name in ("report.md", "tables.tex", "report.html"):
            storage.write_text(out / name, env.get_template(f"{name}.j2").render(**context))
    except OSError as err:
        raise RunDirError(f"cannot write the report to {out}: {err.strerror or err}; pass a writable folder as ",
                          Option("out")) from err
    return out / "report.html"


def _distinct_titles(views: list[RunView]) -> None:
    """Views of two runs of one experiment share a title: each then says which run it is of."""
    import collections

    seen = collections.Counter(block.title for view in views for block in view.views)
    for view in views:
        for block in view.views:
            if seen[block.title] > 1:
                seed = f"seed {view.results.seed}, " if view.results.seed is not None else ""
                block.title = f"{block.title} ({seed}{view.path.name})"


def _grids(given: Sequence[Path], views: list[RunView], out: Path) -> list[grid.GridTable]:
    """Grid tables of the sweep folders among ``given`` (``atml report runs/sweep-NAME``), with a figure for each
    sweep's main metrics (PNG and PDF under ``figures/grids/``, the PNG inlined in the page)."""
    found: list[grid.GridTable] = []
    for folder in dict.fromkeys(Path(p).resolve() for p in given):
        sweep = grid.read_sweep(folder)
        if sweep is None:
            continue
        runs = {v.path.resolve().name: {"status": v.results.status, "records": [
                    {"name": m.name, "value": m.value, "unit": m.unit, "condition": dict(m.condition)}
                    for m in v.results.metrics]} for v in views if v.path.resolve().parent == folder}
        found += grid.tables(sweep, runs)
    for table in grid.main_tables(found):
        files = figures.save(grid.draw(table), out / "figures" / "grids" / grid.figure_name(table), relative_to=out)
        table.figure = [*files, _data_uri(out / files[0])]
    return found


def render_run(path: Path, reg: Registry) -> str:
    """One run as an HTML fragment, the way the report shows it (``Run._repr_html_`` in Jupyter)."""
    view = _load(Path(path), 0, reg)
    return _jinja().get_template("run.html.j2").render(g=_group([view]), v=view)


def check_output_folder(out: Path) -> Path:
    """``out`` must be a folder we may create or fill, and hold no report yet; checked before any work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(Option("out", out), " is a file, not a folder; pass a folder for the report")
    if (out / "report.html").exists():
        raise UsageError(f"{out} already holds a report; pass another ", Option("out"))
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(Option("out", out), f": {existing} is not writable; pass a folder you can write to")
    return out


def unique_paths(paths: Sequence[Path]) -> list[Path]:
    """The paths in order, each folder once (``runs/a`` and ``./runs/a/`` are the same run).

    A folder that is not a run but holds run folders (``runs``, an ``atml demo``'s folder)
    stands for the runs inside it, in name order.
    """
    if not paths:
        raise UsageError("there was nothing to read: pass one or more run folders (e.g. runs/*), or a folder "
                         "holding them")
    seen, out = set(), []
    for path in (run for given in map(Path, paths) for run in _runs_in(given)):
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def _runs_in(path: Path) -> list[Path]:
    if not path.is_dir() or (path / "config.yaml").is_file() or (path / "results.json").is_file():
        return [path]
    inside = sorted(p for p in path.rglob("config.yaml") if len(p.relative_to(path).parts) <= 3)
    return [p.parent for p in inside] or [path]


def group_by_seed(views: list[RunView], reg: Registry | None = None) -> list[Group]:
    """Gather runs whose config is the same but for the seed, in first-seen order.

    Runs with the same config and the same seed are repeats, not a spread: such a bucket is
    shown run by run.
    """
    buckets: dict[str, list[RunView]] = {}
    for view in views:
        config = {k: v for k, v in view.config.items() if k != "seed"}
        ok = view.results.status == "ok"
        key = json.dumps(config, sort_keys=True, default=str) + ("" if ok else f"#failed-{view.slug}")
        buckets.setdefault(key, []).append(view)
    groups = []
    for bucket in buckets.values():
        seeds = [v.results.seed for v in bucket]
        if len(set(seeds)) < len(seeds):
            groups += [_group([v]) for v in bucket]
        else:
            groups.append(_group(sorted(bucket, key=lambda v: v.results.seed or 0), reg))
    return groups


def _group(views: list[RunView], reg: Registry | None = None) -> Group:
    first = views[0]
    if len(views) == 1:
        return Group(views, [], first.results.references, first.discussion)
    summary = results_lib.spread([w.results.metrics for w in views])
    spread = [{"metric": m.metric, "mean": m.mean, "std": m.std, "n": m.n, "min": m.min, "max": m.max}
              for m in summary]
    by_key = {m.metric: m.mean for m in summary}
    means = [dataclasses.replace(r, value=by_key[r.key]) for r in first.results.metrics if r.key in by_key]
    mean_run = dataclasses.replace(first.results, metrics=Metrics(means))
    cfg = types.SimpleNamespace(**first.config)
    exp = reg.get(first.results.experiment) if reg and first.results.experiment in reg.names() else None
    refs = [{**ref, "reason": f"mean of {len(views)} seeds; {ref['reason']}"}
            for ref in references.compare_all(exp.references if exp else (), mean_run, cfg)]
    try:
        return Group(views, spread, refs, discuss(exp, mean_run), f"the mean of {len(views)} seeds")
    except (KeyError, ValueError, TypeError):  # a record some seeds lack: the sentences need every seed's numbers
        return Group(views, spread, refs, first.discussion, f"seed {first.results.seed} (the seeds do not share "
                                                               "every number the discussion needs)")


def _load(path: Path, index: int, reg: Registry, *, explore: bool = False) -> RunView:
    run = RunDir(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a folder; pass run folders printed by 'atml run'")
    if not (path / "config.yaml").is_file():
        raise RunDirError(f"{path} is not an atml run folder (no config.yaml)")
    if not (path / "results.json").is_file():
        experiment = (run.read_config() or {}).get("experiment", "EXPERIMENT")
        raise RunDirError(f"{path} has no results: the run did not finish. If it was interrupted, continue it with ",
                          Resume(experiment, path))
    config = run.read_config()
    results = RunResults.from_folder(run.read_results(), config, path)
    env = run.read_env() if (path / "env.json").is_file() else {}
    exp = reg.get(results.experiment) if results.experiment in reg.names() else None
    discussion = discuss(exp, results)
    slug = f"run{index}-{(results.experiment or 'run').replace('.', '-')}"
    figures = [{"name": f.name, "png": f.png, "data": _data_uri(path / f.png)} for f in results.figures if f.png]
    blocks = interactive.load(path, results.views, slug) if explore else []
    return RunView(path, slug, results, config, env, discussion, figures, blocks)


def discuss(exp: Experiment[Any] | None, results: RunResults) -> list[str]:
    """The experiment's sentences about this run; none for failed or rehearsal runs (their numbers describe no
    model), and none for a results.json from before schema 2, whose metrics carry no conditions."""
    if exp is None or exp.discuss is None or results.status != "ok" or results.rehearsal:
        return []
    if results.schema < 2:
        return [f"(This run was written by an older atml, results schema {results.schema}; its numbers are shown "
                "as they were saved, without the discussion.)"]
    return exp.discuss(results)


def _data_uri(path: Path) -> str:
    if not path.is_file():
        raise RunDirError(f"figure {path} listed in results.json is missing; rerun the experiment")
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _copy_figures(view: RunView, out: Path) -> None:
    """PNG and PDF copies beside the page, for the paper (``figures/<slug>/...``)."""
    target = out / "figures" / view.slug
    target.mkdir(parents=True, exist_ok=True)
    for rel in (f for figure in view.results.figures for f in figure.files):
        shutil.copy2(view.path / rel, target / Path(rel).name)


def fmt(value: Any) -> str:
    """Numbers to 4 significant digits; everything else as text."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_columns(rows: Sequence[Sequence[Any]]) -> tuple[str, list[list[str]]]:
    """A booktabs column spec and the cells: text columns left-aligned; number columns right-aligned with one
    number of decimals each, enough for 4 significant digits of the column's largest value (0.4000 / 0.4083,
    551.0 / 388.8); whole-number columns without decimals."""
    width = max((len(r) for r in rows), default=0)
    spec, formats = "", list[int | None]()
    for c in range(width):
        values = [r[c] for r in rows if c < len(r) and r[c] is not None]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) < len(values) or not numbers:
            spec, formats = spec + "l", formats + [None]
            continue
        spec += "r"
        if all(float(v).is_integer() for v in numbers):
            formats.append(0)
            continue
        top = max((abs(float(v)) for v in numbers if v), default=1.0)
        formats.append(max(0, min(6, 3 - math.floor(math.log10(top)))) if math.isfinite(top) else 4)
    cells = [[latex_escape(v if f is None or v is None or isinstance(v, bool) or not isinstance(v, (int, float))
                           else f"{float(v):.{f}f}") for v, f in zip(r, formats)] for r in rows]
    return spec, cells


def latex_escape(value: Any) -> str:
    """Text safe in LaTeX: each special character replaced once, in a single pass (a replacement's own
    braces are never escaped again)."""
    return "".join(LATEX_SPECIALS.get(char, char) for char in fmt(value))


def markdown_cell(value: Any) -> str:
    """A value safe inside a Markdown table cell (no raw HTML, no column breaks)."""
    return html.escape(fmt(value), quote=False).replace("|", "\\|").replace("\n", " ")


def _jinja() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("atml.reporting", "templates"),
                             autoescape=jinja2.select_autoescape(["html.j2"]), trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    env.filters["tex"] = latex_escape
    env.filters["md"] = markdown_cell
    env.globals["data_ready"] = data_ready
    env.globals["latex_columns"] = latex_columns
    return env


def data_ready(data: dict[str, Any]) -> str:
    """How a run had its data: ``1,000 images in 0.4 s, read from the dataset cache (PATH)``."""
    how = ("read from the dataset cache" if data.get("from_cache")
           else "decoded into the dataset cache" if data.get("cache") else "read from the files")
    where = f" ({', '.join(data['cache'])})" if data.get("cache") else ""
    return f"{data.get('images') or 0:,} images in {data.get('seconds') or 0:.1f} s, {how}{where}"
