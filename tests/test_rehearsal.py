"""The rehearsal preset: the full suite at its real sizes on generated data, loudly marked, timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atml import config as config_lib
from atml import runner
from atml.console import QUIET
from atml.data import rehearsal
from atml.reporting import build
from atml.suite import registry
from atml.train.loop import Batches, Fit, MemoryRecorder, epoch_budget, fit

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"data", "weights", "inception"}  # what a rehearsal may change: no real files, no downloads


@pytest.mark.parametrize("name", registry().names())
def test_every_experiment_rehearses_its_full_preset(name):
    exp = registry().get(name)
    full = config_lib.build(exp.config_cls, exp.presets, "full")
    rehearse = config_lib.build(exp.config_cls, exp.presets, "rehearsal")
    changed = {f for f in config_lib.field_names(exp.config_cls) if getattr(full, f) != getattr(rehearse, f)}
    assert changed <= ALLOWED, f"{name}: the rehearsal must run the full preset's sizes and epochs, not {changed}"
    assert rehearse.data in rehearsal.NAMES


@pytest.mark.slow
def test_rehearsal_data_has_the_real_counts_and_formats():
    data = rehearsal.load("rehearsal-fashion-mnist")
    assert data.train.images.shape == (60_000, 1, 28, 28) and data.val.images.shape == (10_000, 1, 28, 28)
    assert data.train.images.dtype == torch.uint8 and "NOT real" in data.source
    assert len(data.train.classes) == 10
    again = rehearsal.load("rehearsal-fashion-mnist")  # written once, read back through the manifest check
    assert torch.equal(again.val.images[:100], data.val.images[:100])


@pytest.mark.slow
def test_a_rehearsal_run_says_so_everywhere_and_is_never_compared(tmp_path):
    exp = registry().get("vae.train")
    cfg = config_lib.build(exp.config_cls, exp.presets, "rehearsal",
                           ["epochs=1", "train_limit=256", "val_limit=128", "diag_samples=64", "device=cpu"])
    run = runner.execute(exp, cfg, preset="rehearsal", out=tmp_path, report=QUIET)
    results = json.loads((run.path / "results.json").read_text())
    assert results["rehearsal"] is True and results["notes"][0] == rehearsal.NOTE
    assert "NOT real" in results["sources"]["data"]["source"]
    compared = [r for r in results["references"] if r["metric"]]
    assert compared and all(r["status"] == "not comparable" and "rehearsal" in r["reason"] for r in compared)
    page = build.write_report([run.path], tmp_path / "report", registry())
    html = page.read_text()
    assert "rehearsal: timing only, not a result" in html
    assert "rehearsal: timing only" in (tmp_path / "report" / "report.md").read_text()
    assert "What the numbers show" not in html  # a rehearsal's numbers describe no model


def test_an_epoch_budget_runs_the_first_epochs_and_records_the_plan():
    model = torch.nn.Linear(4, 2)
    data = Batches((torch.randn(32, 4), torch.arange(32) % 2), 8)
    with epoch_budget(2) as budget:
        rows = fit(Fit(model, torch.optim.SGD(model.parameters(), lr=0.1), data, None, 7, torch.device("cpu"),
                       MemoryRecorder(), stage="s", say=lambda _m: None))
    assert [r.epoch for r in rows] == [1, 2]
    (stage,) = budget.stages
    assert stage["stage"] == "s" and stage["planned_epochs"] == 7 and stage["run_epochs"] == 2 and stage["seconds"] > 0
    rows = fit(Fit(model, torch.optim.SGD(model.parameters(), lr=0.1), data, None, 3, torch.device("cpu"),
                   MemoryRecorder(), stage="t", say=lambda _m: None))
    assert len(rows) == 3  # outside the block, no budget


@pytest.mark.slow
def test_suite_timing_script_estimates_the_full_epochs(tmp_path):
    out = tmp_path / "timing.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "suite_timing.py"), "--device", "cpu",
                           "--experiments", "vae.train", "--train-limit", "128", "--eval-limit", "32", "--json",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "whole suite at the full preset's epochs" in done.stdout
    report = json.loads(out.read_text())
    (row,) = report["experiments"]
    (stage,) = row["stages"]
    assert stage["planned_epochs"] == 20 and stage["run_epochs"] == 1  # the full preset's 20 epochs, one run
    assert row["how"] == "estimated" and row["full_epochs_s"] == pytest.approx(
        row["wall_s"] + 19 * stage["s_per_epoch"])
    assert report["suite_s"] == row["full_epochs_s"]


def _suite_timing_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("suite_timing", ROOT / "scripts" / "suite_timing.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_suite_timing_keeps_going_after_a_crash_and_writes_every_row_as_it_goes(tmp_path, monkeypatch):
    timing = _suite_timing_module()
    written = []

    def fake(name, *_args):
        if name == "bad":
            raise RuntimeError("CUDA error: an illegal memory access\nmore")
        written.append(json.loads(out.read_text())["experiments"] if out.is_file() else [])
        return {"experiment": name, "status": "ok", "wall_s": 1.0, "full_epochs_s": 2.0, "how": "estimated",
                "stages": []}

    out = tmp_path / "t.json"
    monkeypatch.setattr(timing, "time_experiment", fake)
    rows = [timing.guarded_time_experiment(n, torch.device("cpu"), 1, [], tmp_path) for n in ("a", "bad")]
    assert rows[1]["status"] == "crashed" and rows[1]["error"] == "RuntimeError: CUDA error: an illegal memory access"
    timing.write_report(out, {"card": "x"}, rows, finished=False)
    report = json.loads(out.read_text())
    assert report["crashed"] == ["bad"] and report["suite_s"] == 2.0 and report["finished"] is False
    assert timing.guarded_time_experiment("c", torch.device("cpu"), 1, [], tmp_path)["status"] == "ok"
    assert [r["experiment"] for r in written[-1]] == ["a", "bad"]  # rows already on disk before the next one
