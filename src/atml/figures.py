"""Matplotlib figures in one consistent style, sized for a two-column paper.

Every figure is saved as PNG (for the HTML page) and PDF (for LaTeX), atomically. The
experiments draw with these helpers; this module sits below them (the report, which reads
the suite, is above both).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib

if "ipykernel" not in sys.modules:  # a notebook keeps its inline backend, so the user's own plots still show
    matplotlib.use("Agg")  # headless; set before pyplot is imported (atml closes each figure it saves)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402
from matplotlib.typing import RcKeyType  # noqa: E402

from atml import storage, timemap  # noqa: E402

P = ParamSpec("P")
R = TypeVar("R")
COLUMN_WIDTH_IN = 3.35  # one column of an ICML/NeurIPS two-column page
STYLE: dict[RcKeyType, Any] = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100, "savefig.bbox": "tight", "lines.linewidth": 1.2,
    "pdf.fonttype": 42,
}


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a figure-making function under the shared style (fonts, grid, spines)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with plt.rc_context(STYLE), timemap.span("figures"):
            result = fn(*args, **kwargs)
            interactive = matplotlib.is_interactive()  # set by a notebook's backend on its first figure
        matplotlib.interactive(interactive)  # not undone with the style, or the user's own plots stop showing
        return result

    return wrapper


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 2.0, height: float = 2.2,
           sharey: bool = False) -> tuple[Any, Any]:
    """A figure ``width`` columns wide (1 or 2); call it inside a :func:`styled` function."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH_IN * width, height), squeeze=False, sharey=sharey)
    return fig, axes


def _savefig(fig: Any, fmt: str, kwargs: dict[str, Any], path: Path) -> None:
    fig.savefig(path, format=fmt, **kwargs)


@timemap.counted("figures")
def save(fig: Any, stem: Path, *, relative_to: Path) -> list[str]:
    """Write ``stem.png`` and ``stem.pdf``; returns both paths relative to ``relative_to``."""
    paths = []
    with plt.rc_context(STYLE):
        for suffix, kwargs in ((".png", {"dpi": 200}), (".pdf", {})):
            path = stem.with_suffix(suffix)
            storage.write_with(path, functools.partial(_savefig, fig, suffix[1:], kwargs))
            paths.append(str(path.relative_to(relative_to)))
    plt.close(fig)
    return paths


def opened() -> set[int]:
    """The numbers of the pyplot figures open now (a run closes the ones it opens: :func:`close_since`)."""
    return set(plt.get_fignums())


def close_since(before: set[int]) -> None:
    """Close every figure opened since :func:`opened` returned ``before``: a run's figures, saved or left by a
    failure, never pile up in a notebook, ``atml demo`` or a sweep controller; the user's own stay open."""
    for number in set(plt.get_fignums()) - before:
        plt.close(number)


def close(fig: Any) -> None:
    """Drop a figure without saving it (a torchrun rank other than 0 draws but writes nothing)."""
    plt.close(fig)


def palette(i: int) -> Any:
    """The i-th colour of a qualitative palette (tab10): conditions must differ at a glance."""
    return plt.get_cmap("tab10")(i % 10)


def epoch_axis(ax: Any) -> None:
    """Whole-number ticks on an axis of epochs (never 1.5)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def phase_handles() -> list[Line2D]:
    """Legend entries for the line styles: train dashed, validation solid."""
    return [Line2D([], [], color="0.35", ls="--", label="train"),
            Line2D([], [], color="0.35", ls="-", label="validation")]


def legend_below(fig: Any, handles: Sequence[Any], ncol: int | None = None) -> Any:
    """One legend for the whole figure, under the axes, with room made for it: it never covers data."""
    ncol = ncol or min(len(handles), 4)
    fig.tight_layout()
    legend = fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False)
    fig.canvas.draw()
    height = legend.get_window_extent().height / fig.bbox.height
    fig.tight_layout(rect=(0, min(height + 0.02, 0.6), 1, 1))
    return legend


def log_axis(ax: Any, axis: str = "x") -> None:
    """A log axis labelled at 1, 2, 5 x 10^k only, in plain numbers (minor labels collided)."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    target.set_minor_formatter(NullFormatter())


@styled
def training_curves(records: Mapping[str, Sequence[Any]], *, title: str = "") -> Any:
    """Loss and accuracy per epoch of each stage's :class:`~atml.train.loop.EpochRecord` s; one colour per stage,
    train dashed, validation solid; legend below."""
    fig, axes = figure(2, width=2.0, height=2.6)
    for i, rows in enumerate(records.values()):
        for phase, style in (("train", "--"), ("val", "-")):
            pts = [r for r in rows if r.phase == phase]
            epochs = [r.epoch for r in pts]
            for ax, key in zip(axes[0], ("loss", "acc")):
                if pts and key in pts[0]:
                    ax.plot(epochs, [r[key] for r in pts], style, color=palette(i), marker="o", ms=2)
    for ax, name in zip(axes[0], ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        epoch_axis(ax)
    if title:
        fig.suptitle(title, fontsize=8)
    handles = [Line2D([], [], color=palette(i), label=stage) for i, stage in enumerate(records)]
    legend_below(fig, handles + phase_handles())
    return fig
