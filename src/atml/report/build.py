"""``atml report``: run folders in, one self-contained HTML page (plus Markdown, LaTeX) out.

Results are data first: this module only reads ``results.json``, ``config.yaml`` and
``env.json`` and renders them; nothing is parsed back from rendered text.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from atml import storage
from atml.errors import RunDirError, UsageError
from atml.registry import Registry
from atml.run_dir import RunDir


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


def write_report(run_paths: Sequence[Path], out: Path, reg: Registry) -> Path:
    """Render the runs into ``out``; returns the path of ``report.html``."""
    if out.exists() and (out / "report.html").exists():
        raise UsageError(f"{out} already holds a report; pass another --out")
    views = [_load(Path(p), i, reg) for i, p in enumerate(run_paths)]
    out.mkdir(parents=True, exist_ok=True)
    for view in views:
        _copy_figures(view, out)
    context = {"views": views, "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "fmt": fmt}
    env = _jinja()
    storage.write_text(out / "report.md", env.get_template("report.md.j2").render(**context))
    storage.write_text(out / "tables.tex", env.get_template("tables.tex.j2").render(**context))
    storage.write_text(out / "report.html", env.get_template("report.html.j2").render(**context))
    return out / "report.html"


def _load(path: Path, index: int, reg: Registry) -> RunView:
    run = RunDir(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a folder; pass run folders printed by 'atml run'")
    results, config, env = run.read_results(), run.read_config(), run.read_env()
    exp = reg.get(results["experiment"]) if results.get("experiment") in reg.names() else None
    discussion = exp.discuss(results) if exp and exp.discuss and results.get("status") == "ok" else []
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
