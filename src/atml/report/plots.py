"""Matplotlib figures in one consistent style, sized for a two-column paper.

Every figure is saved as PNG (for the HTML page) and PDF (for LaTeX), atomically.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")  # headless; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

from atml import storage  # noqa: E402

P = ParamSpec("P")
R = TypeVar("R")
COLUMN_WIDTH_IN = 3.35  # one column of an ICML/NeurIPS two-column page
STYLE = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100, "savefig.bbox": "tight", "lines.linewidth": 1.2,
    "pdf.fonttype": 42,
}


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a figure-making function under the shared style (fonts, grid, spines)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 2.0, height: float = 2.2) -> tuple[Any, Any]:
    """A figure ``width`` columns wide (1 or 2); call it inside a :func:`styled` function."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH_IN * width, height), squeeze=False)
    return fig, axes


def save(fig: Any, stem: Path, *, relative_to: Path) -> list[str]:
    """Write ``stem.png`` and ``stem.pdf``; returns both paths relative to ``relative_to``."""
    paths = []
    with plt.rc_context(STYLE):
        for suffix, kwargs in ((".png", {"dpi": 200}), (".pdf", {})):
            path = stem.with_suffix(suffix)
            storage.write_with(path, lambda tmp, k=kwargs, s=suffix: fig.savefig(tmp, format=s[1:], **k))
            paths.append(str(path.relative_to(relative_to)))
    plt.close(fig)
    return paths


@styled
def training_curves(records: Mapping[str, Sequence[Mapping[str, Any]]], *, title: str = "") -> Any:
    """Loss and accuracy per epoch; one colour per stage, train dashed, validation solid."""
    fig, axes = figure(2, width=2.0, height=2.2)
    colours = plt.get_cmap("viridis")
    for i, (stage, rows) in enumerate(records.items()):
        colour = colours(i / max(len(records) - 1, 1) * 0.9)
        for phase, style in (("train", "--"), ("val", "-")):
            pts = [r for r in rows if r.get("phase") == phase]
            epochs = [r["epoch"] for r in pts]
            for ax, key in zip(axes[0], ("loss", "acc")):
                if pts and key in pts[0]:
                    ax.plot(epochs, [r[key] for r in pts], style, color=colour,
                            label=f"{stage} {phase}" if phase == "val" or len(records) == 1 else None)
    for ax, name in zip(axes[0], ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
    axes[0][1].legend(loc="lower right", frameon=False)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig
