"""Every figure of every experiment, as the smoke preset draws it, checked for what a paper needs.

From matplotlib's own artists: no legend covers a data point of a line or scatter, axes of
epochs have whole-number ticks, and no two tick labels on an axis overlap.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.lines import Line2D

from atml import config as config_lib
from atml import figures as figure_style
from atml import runner
from atml.console import QUIET
from atml.suite import registry

pytestmark = pytest.mark.slow  # one module fixture runs every experiment's smoke preset (~35 s)


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``{experiment/figure name: Figure}`` for every experiment's smoke run."""
    drawn: dict[str, Any] = {}
    current = {"name": ""}

    def keep(fig, stem, *, relative_to):
        fig.canvas.draw()
        drawn[f"{current['name']}/{stem.name}"] = fig
        return [f"figures/{stem.name}.png", f"figures/{stem.name}.pdf"]

    out = tmp_path_factory.mktemp("figure-runs")
    mp = pytest.MonkeyPatch()
    mp.setattr(figure_style, "save", keep)
    mp.setattr(plt, "close", lambda *_a, **_k: None)  # keep the artists for inspection
    mp.setitem(plt.rcParams, "figure.max_open_warning", 0)  # held open on purpose, closed at teardown
    try:
        for exp in registry():
            current["name"] = exp.name
            cfg = config_lib.build(exp.config_cls, exp.presets, "smoke", ["device=cpu"])
            try:
                runner.execute(exp, cfg, preset="smoke", out=out, report=QUIET)
            except Exception:  # noqa: BLE001 - results.json needs the figure files we did not write
                pass
    finally:
        mp.undo()  # saving and closing work again for the module's other tests
    yield drawn
    for fig in drawn.values():
        plt.close(fig)


def _points(ax) -> np.ndarray:
    """Every plotted data point of lines and scatters, in display coordinates."""
    pts = []
    for line in ax.get_lines():
        if not isinstance(line, Line2D) or str(line.get_label()).startswith("_child") and not line.get_visible():
            continue
        xy = np.column_stack(line.get_data(orig=False)).astype(float)
        if len(xy) and line.get_marker() not in (None, "None", "") or line.get_linestyle() not in ("None", ""):
            pts.append(line.get_transform().transform(xy))
    for coll in ax.collections:
        if isinstance(coll, PathCollection) and np.asarray(coll.get_offsets()).size:
            pts.append(coll.get_offset_transform().transform(np.asarray(coll.get_offsets(), dtype=float)))
    pts = [p[np.isfinite(p).all(1)] for p in pts]
    return np.concatenate(pts) if pts else np.empty((0, 2))


def _legends(fig) -> list:
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]


@pytest.mark.slow
def test_every_experiment_drew_its_figures(figures):
    names = {key.split("/")[0] for key in figures}
    assert names == set(registry().names()), set(registry().names()) - names


def test_no_legend_covers_a_data_point(figures):
    bad = []
    for name, fig in figures.items():
        renderer = fig.canvas.get_renderer()
        for legend in _legends(fig):
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                pts = _points(ax)
                inside = ((pts[:, 0] >= box.x0) & (pts[:, 0] <= box.x1) & (pts[:, 1] >= box.y0)
                          & (pts[:, 1] <= box.y1))
                if inside.any():
                    bad.append(f"{name}: legend covers {int(inside.sum())} points of '{ax.get_title()}'")
    assert not bad, "\n".join(bad)


def test_epoch_axes_have_whole_number_ticks(figures):
    bad = []
    for name, fig in figures.items():
        for ax in fig.axes:
            if "epoch" not in ax.get_xlabel():
                continue
            lo, hi = sorted(ax.get_xlim())
            ticks = [t for t in ax.get_xticks() if lo - 1e-9 <= t <= hi + 1e-9]
            if any(not math.isclose(t, round(t)) for t in ticks):
                bad.append(f"{name} '{ax.get_title()}': {ticks}")
    assert not bad, "\n".join(bad)


def test_tick_labels_never_overlap(figures):
    bad = []
    for name, fig in figures.items():
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            for axis in ("x", "y"):
                labels = [t for t in getattr(ax, f"get_{axis}ticklabels")(which="both")
                          if t.get_visible() and t.get_text()]
                boxes = [t.get_window_extent(renderer) for t in labels]
                for i in range(len(boxes)):
                    for j in range(i + 1, len(boxes)):
                        if boxes[i].overlaps(boxes[j]):
                            bad.append(f"{name} '{ax.get_title()}' {axis}: '{labels[i].get_text()}' / "
                                       f"'{labels[j].get_text()}'")
    assert not bad, "\n".join(bad[:40])


def test_the_compute_figure_labels_its_log_axis_without_collisions():
    """Within a decade matplotlib labels minor log ticks, which collided (demo: 3 to 40 s)."""
    from atml.suite.resnet import transfer as resnet_transfer

    cells = [{"cell": f"{i}:{r}", "init": i, "regime": r, "time_s": t, "best_val_acc": a, "problem": None}
             for (i, r), t, a in zip([(i, r) for i in ("pretrained", "random") for r in ("head", "last", "full")],
                                     (3.1, 9.7, 41.0, 3.4, 10.2, 39.5), (0.83, 0.9, 0.98, 0.45, 0.8, 0.8))]
    fig = resnet_transfer.compute_figure(cells)
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t for t in ax.get_xticklabels(which="both") if t.get_visible() and t.get_text()]
    boxes = [t.get_window_extent(fig.canvas.get_renderer()) for t in labels]
    assert labels and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert all(t.get_text().replace(".", "").isdigit() for t in labels)  # plain numbers, not 3x10^0


def test_attention_figures_number_from_one_on_absolute_scales(figures):
    fig = figures["vit.attention/head_statistics"]
    heat, line = fig.axes[0], fig.axes[2]  # (entropy, distance, cosine, then the two colour bars)
    layers = len(line.get_lines()[0].get_xdata())
    assert list(heat.get_yticks()) == list(range(1, layers + 1))  # as the line plot and the table number them
    assert heat.images[0].get_clim() == (0.0, pytest.approx(math.log(14 ** 2)))  # 0 to uniform, not min to max
    assert line.get_ylim()[1] > 1.0  # a cosine of 1.0 is not clipped


def test_a_uniform_attention_map_is_drawn_transparent():
    import torch

    from atml.suite.vit import attention as exp

    grid = 8
    uniform = torch.full((grid * grid,), 1 / grid ** 2)
    assert exp._upsample(uniform + 1e-6 * torch.rand(grid * grid), grid, (32, 32)).max() < 0.01
    peaked = torch.zeros(grid * grid)
    peaked[0] = 1.0
    assert exp._upsample(peaked, grid, (32, 32)).max() == pytest.approx(1.0)


def test_the_skip_gradient_panels_share_one_axis_and_name_only_what_they_draw(figures):
    fig = figures["resnet.skip/gradient_flow"]
    left, right = fig.axes[:2]
    assert left.get_shared_y_axes().joined(left, right)
    drawn = {line.get_label() for ax in (left, right) for line in ax.get_lines()}
    assert {t.get_text() for t in fig.legends[0].get_texts()} <= drawn


def test_course_reference_points_only_on_the_courses_axes():
    from atml.results import Metric, Metrics
    from atml.suite.resnet import head

    records = Metrics([Metric(n, 0.5, condition={"resolution": r}) for n in ("val_acc", "best_val_acc") for r in (8,
                                                                                                                  16)])
    cfg = head.Config(resolutions=(8, 16), data="digits", arch="resnet-digits")
    labels = [line.get_label() for line in head.accuracy_vs_resolution(records, cfg).axes[0].get_lines()]
    assert not any("seed report" in label for label in labels)


def test_masking_fills_are_told_apart_by_marker(figures):
    fig = figures["vit.masking/masking_curves"]
    markers = {line.get_marker() for ax in fig.axes for line in ax.get_lines() if line.get_marker() not in ("None", "")}
    assert len(markers) >= 3


def test_latex_columns_have_one_number_of_decimals_and_text_left():
    from atml.reporting.build import latex_columns

    spec, cells = latex_columns([["intact", 0.4, 551.0, 3], ["removed", 0.4083, 388.8, 12]])
    assert spec == "lrrr"
    assert [r[1:] for r in cells] == [["0.4000", "551.0", "3"], ["0.4083", "388.8", "12"]]


def test_many_images_are_split_over_figures_of_at_most_eight(tmp_path):
    from PIL import Image

    from atml import cli

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(9):
        Image.fromarray(np.full((20, 24, 3), 20 * i, np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "runs"
    assert cli.main(["run", "vit.classify", "--preset", "smoke", "--set", f"images=[{folder}]", "--out", str(out)]) == 0
    names = sorted(p.name for p in next(out.iterdir()).joinpath("figures").glob("*.png"))
    assert names == ["predictions_photos_1.png", "predictions_photos_2.png"]


def test_no_figure_stays_open_after_a_run_in_one_process_saved_or_failed(tmp_path, monkeypatch):
    """A notebook, ``atml demo`` or a sweep controller runs many experiments in one process: every figure a run
    opened is closed when it ends, saved or not (a run that fails after drawing left its figures open)."""
    from atml import errors
    from atml.registry import Experiment

    mine = plt.figure()  # the user's own figure, opened before: left alone
    before = plt.get_fignums()  # mine, and any figures another test module holds open on purpose
    for name in ("vae.train", "compare.probe", "resnet.features"):
        exp = registry().get(name)
        cfg = config_lib.build(exp.config_cls, exp.presets, "smoke", ["device=cpu"])
        runner.execute(exp, cfg, preset="smoke", out=tmp_path, report=QUIET)
        assert plt.get_fignums() == before, name

    def draws_then_fails(cfg, ctx):
        figure_style.figure(2)
        raise errors.DataError("the data vanished after the first figure")

    exp = registry().get("vae.train")
    broken = Experiment(exp.name, exp.summary, exp.config_cls, exp.presets, draws_then_fails)
    cfg = config_lib.build(exp.config_cls, exp.presets, "smoke", ["device=cpu"])
    with pytest.raises(errors.DataError):
        runner.execute(broken, cfg, preset="smoke", out=tmp_path, report=QUIET)
    assert plt.get_fignums() == before
    plt.close(mine)
