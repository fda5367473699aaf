"""``atml report``: run folders in, one self-contained HTML page (plus Markdown, LaTeX) out.

Results are data first: this module only reads ``results.json``, ``config.yaml`` and
``env.json`` and renders them; nothing is parsed back from rendered text.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import shutil
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from atml import references, storage
from atml.errors import RunDirError, UsageError
from atml.registry import Registry
from atml.run_dir import RunDir


FAMILIES = {"resnet": "ResNet internals", "vit": "Vision Transformer internals",
            "vae": "Variational autoencoder", "clip": "CLIP and the modality gap", "gan": "Generative adversarial network"}


@dataclasses.dataclass
class RunView:
    """Everything the templates show about one run."""

    path: Path
    slug: str
    results: dict[str, Any]
    config: dict[str, Any]
    env: dict[str, Any]
    discussion: list[str]
    figures: list[dict[str, str]]


@dataclasses.dataclass
class Group:
    """Runs of one experiment, preset and config that differ only in their seed."""

    views: list[RunView]
    spread: list[dict[str, Any]]
    """Per metric: mean, sample std, n, min, max over the seeds (empty for a single run)."""
    references: list[dict[str, Any]]
    """The published figures compared with the mean over seeds (with one run: that run's)."""

    @property
    def first(self) -> RunView:
        return self.views[0]

    @property
    def seeds(self) -> list[Any]:
        return [v.results.get("seed") for v in self.views]


def write_report(run_paths: Sequence[Path], out: Path, reg: Registry) -> Path:
    """Render the runs into ``out``; returns the path of ``report.html``."""
    if out.exists() and (out / "report.html").exists():
        raise UsageError(f"{out} already holds a report; pass another --out")
    views = [_load(Path(p), i, reg) for i, p in enumerate(run_paths)]
    groups = group_by_seed(views)
    out.mkdir(parents=True, exist_ok=True)
    for view in views:
        _copy_figures(view, out)
    context = {"views": views, "groups": groups, "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "fmt": fmt,
               "families": FAMILIES}
    env = _jinja()
    storage.write_text(out / "report.md", env.get_template("report.md.j2").render(**context))
    storage.write_text(out / "tables.tex", env.get_template("tables.tex.j2").render(**context))
    storage.write_text(out / "report.html", env.get_template("report.html.j2").render(**context))
    return out / "report.html"


def group_by_seed(views: list[RunView]) -> list[Group]:
    """Gather runs whose config is the same but for the seed, in first-seen order."""
    buckets: dict[str, list[RunView]] = {}
    for view in views:
        config = {k: v for k, v in view.config.items() if k != "seed"}
        ok = view.results.get("status") == "ok"
        key = json.dumps(config, sort_keys=True, default=str) + ("" if ok else f"#failed-{view.slug}")
        buckets.setdefault(key, []).append(view)
    return [_group(sorted(b, key=lambda v: v.results.get("seed", 0))) for b in buckets.values()]


def _group(views: list[RunView]) -> Group:
    first = views[0]
    if len(views) == 1:
        return Group(views, [], first.results.get("references", []))
    names = [k for k, v in first.results["metrics"].items()
             if isinstance(v, (int, float)) and all(k in w.results["metrics"] for w in views)]
    spread = []
    for name in names:
        values = np.array([float(w.results["metrics"][name]) for w in views])
        spread.append({"metric": name, "mean": float(values.mean()), "std": float(values.std(ddof=1)),
                       "n": len(values), "min": float(values.min()), "max": float(values.max())})
    means = {"preset": first.results["preset"], "metrics": {row["metric"]: row["mean"] for row in spread}}
    cfg = types.SimpleNamespace(**first.config)
    refs = [{**ref, "reason": f"mean of {len(views)} seeds; {ref['reason']}"}
            for ref in references.compare_all(first.results["experiment"], means, cfg)]
    return Group(views, spread, refs)


def _load(path: Path, index: int, reg: Registry) -> RunView:
    run = RunDir(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a folder; pass run folders printed by 'atml run'")
    results, config, env = run.read_results(), run.read_config(), run.read_env()
    exp = reg.get(results["experiment"]) if results.get("experiment") in reg.names() else None
    discussion = (exp.discuss(results) if exp and exp.discuss and results.get("status") == "ok"
                  and not results.get("rehearsal") else [])  # a rehearsal's numbers describe no model
    slug = f"run{index}-{results.get('experiment', 'run').replace('.', '-')}"
    figures = [{"name": Path(f).stem, "png": f, "data": _data_uri(path / f)}
               for f in results.get("figures", []) if f.endswith(".png")]
    return RunView(path, slug, results, config, env, discussion, figures)


def _data_uri(path: Path) -> str:
    if not path.is_file():
        raise RunDirError(f"figure {path} listed in results.json is missing; rerun the experiment")
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _copy_figures(view: RunView, out: Path) -> None:
    """PNG and PDF copies beside the page, for the paper (``figures/<slug>/...``)."""
    target = out / "figures" / view.slug
    target.mkdir(parents=True, exist_ok=True)
    for rel in view.results.get("figures", []):
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


def latex_escape(value: Any) -> str:
    text = fmt(value)
    for char, repl in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                       ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        text = text.replace(char, repl)
    return text


def markdown_cell(value: Any) -> str:
    """A value safe inside a Markdown table cell (no raw HTML, no column breaks)."""
    return html.escape(fmt(value), quote=False).replace("|", "\\|").replace("\n", " ")


def _jinja() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("atml.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html.j2"]), trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    env.filters["tex"] = latex_escape
    env.filters["md"] = markdown_cell
    return env
