"""A sweep's results as grid tables and figures: per metric, rows and columns from the varying keys, each entry the
mean, sample standard deviation and n over the cells that differ only in their seed.

Read from the cells' ``results.json`` (and the sweep's ``sweep.json`` for the keys); only
cells whose run completed count, and the report lists the rest as failed runs.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from atml.sweeps.dispatch import STATE
from atml.sweeps.spec import Sweep, slug

OVERHEAD = ("time_s", "peak_memory_mb")
"""Metrics every run records (shown in the run's own section, not as grid tables)."""
FIGURES = 2
"""Grid figures per sweep: the first metrics the experiment records (its main ones)."""


@dataclasses.dataclass
class Entry:
    values: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        if len(self.values) == 1:
            return f"{_num(self.mean)} (n=1)"
        return f"{_num(self.mean)} ± {_num(self.std)} (n={len(self.values)})"


def _num(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


@dataclasses.dataclass
class GridTable:
    """One metric over a sweep's grid."""

    sweep: str
    experiment: str
    preset: str
    metric: str
    unit: str
    row_keys: list[str]
    column_key: str
    columns: list[str]
    rows: list[tuple[list[str], list[Entry | None]]]
    figure: list[str] = dataclasses.field(default_factory=list)
    """The figure's paths relative to the report (PNG, PDF) when this metric has one."""

    @property
    def title(self) -> str:
        return (f"{self.metric}{f' ({self.unit})' if self.unit else ''} over sweep {self.sweep} ({self.experiment}, "
                f"{self.preset} preset): mean ± sample std over seeds (n)")

    @property
    def header(self) -> list[str]:
        return [*self.row_keys, *(f"{self.column_key}={c}" if self.column_key else c for c in self.columns)]

    def cells(self) -> list[list[str]]:
        return [[*labels, *(e.text() if e else "-" for e in entries)] for labels, entries in self.rows]


def read_sweep(folder: Path) -> Sweep | None:
    """The sweep a folder holds (its ``sweep.json``), or None."""
    path = Path(folder) / STATE
    if not path.is_file():
        return None
    try:
        return Sweep.from_json(json.loads(path.read_text())["spec"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def tables(sweep: Sweep, runs: Mapping[str, Mapping[str, Any]]) -> list[GridTable]:
    """Grid tables of ``sweep`` from the completed cells' results (by cell name)."""
    keys = [k for k in sweep.keys if k != "seed" and len({_label(c.values.get(k)) for c in sweep.cells}) > 1]
    column_key = sweep.column if sweep.column in keys else (keys[-1] if keys else "")
    row_keys = [k for k in keys if k != column_key]
    done = {c.name: c for c in sweep.cells if runs.get(c.name, {}).get("status") == "ok"}
    order: list[str] = []
    units: dict[str, str] = {}
    cond_keys: dict[str, list[str]] = {}
    data: dict[str, dict[tuple[tuple[str, ...], str], list[float]]] = {}
    for name, cell in done.items():
        for record in runs[name].get("records", []):
            metric, value = record["name"], record.get("value")
            if metric in OVERHEAD or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if metric not in data:
                order.append(metric)
                data[metric] = {}
                units[metric] = record.get("unit", "")
                cond_keys[metric] = []
            condition = record.get("condition") or {}
            cond_keys[metric] += [k for k in condition if k not in cond_keys[metric]]
            row = tuple(_label(cell.values.get(k)) for k in row_keys) + tuple(
                f"{k}={_label(v)}" for k, v in condition.items())
            column = _label(cell.values.get(column_key)) if column_key else "all cells"
            data[metric].setdefault((row, column), []).append(float(value))
    columns = [] if not column_key else list(dict.fromkeys(_label(c.values.get(column_key)) for c in sweep.cells))
    out = []
    for metric in order:
        cols = columns or ["all cells"]
        rows = list(dict.fromkeys(r for r, _ in data[metric]))
        out.append(GridTable(sweep.name, sweep.experiment, sweep.preset, metric, units[metric],
                             [*row_keys, *(["condition"] if cond_keys[metric] else [])], column_key, cols,
                             [(_row_labels(r, len(row_keys)), [_entry(data[metric].get((r, c))) for c in cols])
                              for r in rows]))
    return out


def _row_labels(row: tuple[str, ...], n_keys: int) -> list[str]:
    return [*row[:n_keys], *([", ".join(row[n_keys:])] if len(row) > n_keys else [])]


def _entry(values: list[float] | None) -> Entry | None:
    return Entry(values) if values else None


def _label(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "+".join(_label(v) for v in value)
    return str(value)


def figure_name(table: GridTable) -> str:
    return f"grid-{slug(table.sweep)}-{slug(table.metric)}".replace(".", "-")  # figures.save adds the suffix


def draw(table: GridTable) -> Any:
    """Grouped bars: one group per row, one bar per column value, the sample std as error bars."""
    from atml import figures

    @figures.styled
    def plot() -> Any:
        groups = [_short(labels) for labels, _ in table.rows]
        width = 2.0 if len(groups) * len(table.columns) > 8 else 1.0
        fig, axes = figures.figure(width=width, height=2.4)
        ax = axes[0][0]
        bar = 0.8 / max(1, len(table.columns))
        for j, column in enumerate(table.columns):
            entries = [entries[j] for _, entries in table.rows]
            xs = [i + (j - (len(table.columns) - 1) / 2) * bar for i in range(len(groups))]
            ax.bar(xs, [e.mean if e else 0.0 for e in entries], bar, yerr=[e.std if e else 0.0 for e in entries],
                   capsize=2, color=figures.palette(j), label=f"{table.column_key}={column}" if table.column_key
                   else column)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, rotation=20 if max(map(len, groups)) > 12 else 0, ha="right")
        ax.set_ylabel(table.metric + (f" ({table.unit})" if table.unit else ""))
        if table.row_keys:  # a tick reads "1 / 16": the axis says which keys, in that order
            ax.set_xlabel(" / ".join(table.row_keys))
        if table.column_key:
            figures.legend_below(fig, ax.get_legend_handles_labels()[0], ncol=min(3, len(table.columns)))
        return fig

    return plot()


def _short(labels: Sequence[str]) -> str:
    """A row's label for the figure: its values once each (``vit-digits``, not ``vit-digits / model=vit-digits``)."""
    parts = [p.split("=", 1)[-1] for label in labels for p in label.split(", ")]
    return " / ".join(dict.fromkeys(parts)) or "all"


def main_tables(found: Sequence[GridTable]) -> list[GridTable]:
    """The tables that get a figure: the first :data:`FIGURES` metrics of each sweep."""
    seen: dict[str, int] = {}
    out = []
    for table in found:
        seen[table.sweep] = seen.get(table.sweep, 0) + 1
        if seen[table.sweep] <= FIGURES:
            out.append(table)
    return out
