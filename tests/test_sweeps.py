"""``atml sweep``: the spec checked before anything runs, cells through submitit's real executors, resume after a
SIGKILL, --retry-failed, the Slurm array's sbatch script as submitted, the grid report, and the trackers."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from atml import cli
from atml.errors import UsageError
from atml.suite import registry
from atml.sweeps import dispatch, grid
from atml.sweeps import spec as spec_lib

GRID = ["compare.probe", "--preset", "smoke", "--grid", "models=[digits-resnet-small]|[vit-digits]",
        "--grid", "data=generated-cifar10,digits"]


def test_grid_values_split_outside_brackets() -> None:
    assert spec_lib.parse_grid("models=[a,b]|[c,d]") == ("models", ["[a,b]", "[c,d]"])
    assert spec_lib.parse_grid("data=digits,generated-cifar10") == ("data", ["digits", "generated-cifar10"])
    assert spec_lib.parse_grid("resolutions=[16,32],[64]") == ("resolutions", ["[16,32]", "[64]"])


def test_cells_are_the_product_named_from_the_varying_keys() -> None:
    request = spec_lib.Request("compare.probe", "smoke", seeds=2, grid=[
        ("models", [spec_lib.Text("[digits-resnet-small]"), spec_lib.Text("[vit-digits]")]),
        ("data", [spec_lib.Text("digits")])])
    sweep = spec_lib.expand(request, registry())
    assert [c.name for c in sweep.cells] == ["models=digits-resnet-small_seed=0", "models=digits-resnet-small_seed=1",
                                             "models=vit-digits_seed=0", "models=vit-digits_seed=1"]
    assert sweep.cells[3].values == {"models": ["vit-digits"], "data": "digits", "seed": 1}
    # the same grid in YAML values is the same sweep
    same = spec_lib.expand(spec_lib.Request("compare.probe", "smoke", seeds=2, grid=[
        ("models", [["digits-resnet-small"], ["vit-digits"]]), ("data", ["digits"])]), registry())
    assert same.same_grid(sweep)


@pytest.mark.parametrize(("argv", "message"), [
    (["no.such", "--grid", "epochs=1,2"], "no.such"),
    (["compare.probe", "--grid", "epochz=1,2"], "unknown config key 'epochz'"),
    (["compare.probe", "--grid", "batch_size=8,-1"], "batch_size=-1"),
    (["compare.probe", "--grid", "data=digits,nope"], "data='nope'"),
    (["compare.probe"], "the grid is empty"),
    (["compare.probe", "--grid", "data="], "empty value"),
    (["compare.probe", "--grid", "data=digits,digits"], "same config"),
    (["compare.probe", "--grid", "data=digits,generated-cifar10", "--partition", "gpu"], "--partition"),
    (["vae.train", "--grid", "epochs=1,2", "--set", "epochs=3"], "epochs is both fixed (a set value) and varied"),
    (["vae.train", "--grid", "seed=0,1", "--seeds", "2"], "--seeds 2 and a grid over seed both choose seeds"),
])
def test_a_bad_spec_is_one_line_exit_2_and_nothing_is_written(argv: list[str], message: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["sweep", *argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_seeds_alone_are_the_cells_and_set_is_checked_with_each_cell_s_values(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sweep", "vae.train", "--preset", "smoke", "--seeds", "3", "--out", str(tmp_path),
                     "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "3 cell(s) to submit" in text and "  seed=2" in text
    photos = [tmp_path / "a", tmp_path / "b"]
    for folder in photos:
        (folder / "cat").mkdir(parents=True)
    # data=folder needs a data_dir: the grid gives it, cell by cell
    assert cli.main(["sweep", "resnet.head", "--preset", "smoke", "--set", "data=folder", "--grid",
                     f"data_dir={photos[0]},{photos[1]}",
                     "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "2 cell(s) to submit" in capsys.readouterr().out


def test_the_grid_figure_names_its_row_keys() -> None:
    sweep = spec_lib.Sweep("x", "smoke", "s", {}, ["epochs", "batch_size", "lr"], [
        spec_lib.Cell(f"c{e}{b}{lr}", {"epochs": e, "batch_size": b, "lr": lr})
        for e in (1, 2) for b in (16, 32) for lr in (0.1, 0.01)])
    runs = {c.name: {"status": "ok", "records": [{"name": "acc", "value": 0.5, "unit": "", "condition": {}}]}
            for c in sweep.cells}
    (table,) = grid.tables(sweep, runs)
    figure = grid.draw(table)
    ax = figure.axes[0]
    assert ax.get_xlabel() == "epochs / batch_size"
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["1 / 16", "1 / 32"]


@pytest.mark.parametrize(("said", "flag"), [
    ("sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job submission failed: Invalid partition "
     "name specified", "--partition"),
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
     "--account"),
    ("sbatch: error: Memory specification can not be satisfied\nsbatch: error: Batch job submission failed: "
     "Requested node configuration is not available", "--mem-gb"),
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
     "controller does not answer"),
])
def test_a_refused_submission_names_what_to_fix(said: str, flag: str) -> None:
    from atml.errors import words
    from atml.sweeps import watch

    line = words(watch.rejection(RuntimeError(said), dispatch.Options()), cli.TERMINAL)
    assert flag in line and "\n" not in line and said.splitlines()[0] in line, line


def test_a_bad_spec_file_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "grid.yaml"
    spec.write_text("experiment: compare.probe\ngird: {data: [digits]}\n")
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert f"{spec}: unknown key(s) gird" in capsys.readouterr().err
    spec.write_text("experiment: compare.probe\ngrid: {data: []}\n")
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert "grid key 'data' has no values" in capsys.readouterr().err
    spec.write_text("experiment: compare.probe\nseed: 2\ngrid: {data: [digits]}\n")
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert "unknown key(s) seed (did you mean seeds?)" in capsys.readouterr().err
    spec.write_text("experiment: compare.probe\ngrid: {data: [digits]\nseeds: 2\n")
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert f"{spec} is not valid YAML (line 3, column 1: expected ',' or '}}'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_dry_run_shows_the_executor_parameters_and_writes_nothing(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """What ``AutoExecutor.update_parameters`` would get for the grid's job array (the sbatch script as Slurm holds
    it is read back from the real cluster in tests/test_sweeps_slurm.py)."""
    out = tmp_path / "out"
    code = cli.main(["sweep", *GRID, "--seeds", "2", "--out", str(out), "--executor", "slurm", "--dry-run",
                     "--partition", "gpu", "--account", "lab", "--gpus-per-node", "4", "--tasks-per-node", "4",
                     "--cpus-per-task", "8", "--mem-gb", "64", "--timeout-min", "120", "--array-parallelism", "3",
                     "--slurm-setup", "module load cuda"])
    text = capsys.readouterr().out
    assert code == 0
    assert "one Slurm job array of 8 cell(s) through submitit.AutoExecutor(cluster='slurm')" in text
    for line in ["name='atml-compare.probe-smoke'", "timeout_min=120", "tasks_per_node=4", "gpus_per_node=4",
                 "cpus_per_task=8", "mem_gb=64.0", "slurm_partition='gpu'", "slurm_account='lab'",
                 "slurm_array_parallelism=3", "slurm_setup=['module load cuda']",
                 "slurm_additional_parameters={'requeue': True}"]:
        assert f"    {line}," in text, line
    assert text.count("models=") >= 8
    assert not out.exists()  # a dry run writes nothing


def test_cells_run_in_process_through_the_debug_executor(tmp_path: Path) -> None:
    """submitit's DebugExecutor: the same CellJob as on Slurm, in this process (what a cluster job runs)."""
    runs = __import__("atml").sweep("vae.train", "smoke", grid={"latent_dim": [2, 3]}, out=tmp_path,
                                    executor="debug", quiet=True, epochs=1)
    assert [r.grid for r in runs] == [{"latent_dim": 2}, {"latent_dim": 3}]
    assert all(r.status == "ok" for r in runs)
    frame = runs.to_frame()
    assert set(frame["latent_dim"]) == {2, 3}
    state = json.loads((tmp_path / "sweep-vae.train-smoke" / "sweep.json").read_text())
    assert {c["state"] for c in state["cells"].values()} == {"done"}


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text()
    except OSError:
        return False


def _digest(folder: Path) -> dict[str, str]:
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*/results.json")}


@pytest.mark.slow
def test_a_grid_with_a_failing_cell_completes_the_rest_then_retries_it(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """2 x 2 x 2 cells through submitit's LocalExecutor, plus one cell whose image folder is empty."""
    monkeypatch.chdir(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    spec = tmp_path / "grid.yaml"
    spec.write_text(json.dumps({
        "experiment": "compare.probe", "preset": "smoke",
        "grid": {"models": [["digits-resnet-small"], ["vit-digits"]], "data": ["generated-cifar10", "digits"],
                 "seed": [0, 1]},
        "cells": [{"models": ["vit-digits"], "data": "folder", "data_dir": str(photos), "seed": 0}]}))
    argv = ["sweep", str(spec), "--out", "out", "--parallel", "2", "--track", "mlflow"]
    assert cli.main(argv) == 1
    text = capsys.readouterr().out
    folder = tmp_path / "out" / "sweep-compare.probe-smoke"
    state = json.loads((folder / "sweep.json").read_text())
    states = {name: c["state"] for name, c in state["cells"].items()}
    bad = next(n for n in states if "data=folder" in n)
    assert states.pop(bad) == "failed" and set(states.values()) == {"done"} and len(states) == 8
    assert "photos holds 0 class folder(s)" in state["cells"][bad]["reason"]
    assert f"failed: {bad}" in text and "8 done, 1 failed" in text and "--retry-failed" in text
    assert all(Path(c["log"]).is_file() for c in state["cells"].values())
    assert not (folder / "logs" / "%j").exists()  # submitit's folder template, not a folder of the sweep's
    done = _digest(folder)

    # MLflow's default store, ./mlflow.db: one parent run, the nine cells nested under it, records = results.json
    import mlflow

    from atml import tracking

    mlflow.set_tracking_uri(tracking.mlflow_uri())
    found = mlflow.search_runs(experiment_names=["compare.probe"], output_format="list")
    parent = state["tracking"]["mlflow_parent_run"]
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(children) == 9 and any(r.info.run_id == parent for r in found)
    for child in children:
        assert child.data.metrics == tracking.metrics(tracking.read_run(Path(child.data.tags["atml.run_folder"]))[1])

    # the grid report: one table per metric, rows and columns from the varying keys, mean +- std over 2 seeds
    assert cli.main(["report", str(folder), "--out", "report"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Grid: probe_acc over sweep compare.probe-smoke" in md
    assert "| models | data_dir | condition | data=generated-cifar10 | data=digits | data=folder |" in md
    assert md.count("(n=2)") >= 4
    assert (tmp_path / "report" / "figures" / "grids" / "grid-compare-probe-smoke-probe_acc.pdf").is_file()
    assert "data=generated-cifar10" in (tmp_path / "report" / "tables.tex").read_text()

    # rerun: nothing to do, the failed cell is not retried
    assert cli.main(argv) == 1
    assert "8 skipped (complete before), 1 failed before (not retried)" in capsys.readouterr().out
    # fill the folder, --retry-failed: only that cell runs, and now completes
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in (0, 1):
        (photos / str(label)).mkdir()
        for i, image in enumerate(digits.images[digits.target == label][:30]):
            Image.fromarray((image * 15).astype(np.uint8)).resize((32, 32)).save(photos / str(label) / f"{i}.png")
    assert cli.main([*argv, "--retry-failed"]) == 0
    assert "1 done, 0 failed, 0 stopped, 8 skipped" in capsys.readouterr().out
    # the retried cell's run replaced its failed one: still one tracked run per cell, the parent FINISHED
    found = mlflow.search_runs(experiment_names=["compare.probe"], output_format="list")
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(children) == 9 and all(r.info.status == "FINISHED" for r in children)
    assert next(r for r in found if r.info.run_id == parent).info.status == "FINISHED"
    assert {k: v for k, v in _digest(folder).items() if k != bad} == {k: v for k, v in done.items() if k != bad}


@pytest.mark.slow
def test_a_killed_sweep_reruns_only_the_missing_cells(tmp_path: Path) -> None:
    """SIGKILL of the sweep and its jobs mid-way; the same command again runs what is missing and leaves the
    finished cells byte for byte."""
    command = [sys.executable, "-m", "atml", "sweep", *GRID, "--out", "out", "--parallel", "2"]
    folder = tmp_path / "out" / "sweep-compare.probe-smoke"
    proc = subprocess.Popen(command, cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(folder.glob("*/results.json"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _digest(folder)
    assert 2 <= len(before) < 4, "the sweep ended before it could be killed mid-way"
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(before)} skipped (complete before)" in again.stdout
    assert f"{4 - len(before)} done" in again.stdout
    after = _digest(folder)
    assert len(after) == 4 and all(after[name] == digest for name, digest in before.items())
    submitted = [line for line in again.stdout.splitlines() if ": job " in line]
    assert len(submitted) == 4 - len(before)
    assert not any(name in line for line in submitted for name in before)


def test_a_folder_holding_another_sweep_is_refused(tmp_path: Path) -> None:
    first = spec_lib.expand(spec_lib.Request("vae.train", "smoke", grid=[("latent_dim", [2, 3])]), registry())
    other = spec_lib.expand(spec_lib.Request("vae.train", "smoke", grid=[("latent_dim", [2, 4])]), registry())
    opts = dispatch.Options(out=tmp_path)
    folder = dispatch.sweep_folder(first, opts)
    folder.mkdir(parents=True)
    dispatch.State(folder, first, opts).save()
    with pytest.raises(UsageError, match="holds another sweep"):
        dispatch.State(folder, other, opts)


def test_grid_tables_hold_mean_sample_std_and_n() -> None:
    sweep = spec_lib.Sweep("x", "smoke", "s", {}, ["data", "seed"], [
        spec_lib.Cell("a0", {"data": "a", "seed": 0}), spec_lib.Cell("a1", {"data": "a", "seed": 1}),
        spec_lib.Cell("b0", {"data": "b", "seed": 0})])
    runs = {name: {"status": "ok", "records": [{"name": "acc", "value": v, "unit": "", "condition": {}}]}
            for name, v in (("a0", 0.5), ("a1", 0.7), ("b0", 0.9))}
    (table,) = grid.tables(sweep, runs)
    assert table.header == ["data=a", "data=b"]
    assert table.cells() == [["0.6 ± 0.141 (n=2)", "0.9 (n=1)"]]


@pytest.mark.slow
def test_a_cell_with_several_tasks_runs_as_torchrun_ranks(tmp_path: Path) -> None:
    """``--tasks-per-node 2``: submitit starts two processes per cell; atml's DDP path joins them (gloo here)."""
    assert cli.main(["sweep", "vae.train", "--preset", "smoke", "--grid", "latent_dim=2,3", "--set", "epochs=1",
                     "--tasks-per-node", "2",
                     "--parallel", "1", "--out", str(tmp_path)]) == 0
    envs = [json.loads(p.read_text()) for p in (tmp_path / "sweep-vae.train-smoke").glob("*/env.json")]
    assert len(envs) == 2 and all(e["distributed"] == {"backend": "gloo", "world": 2} for e in envs)


@pytest.mark.slow
def test_ctrl_c_cancels_the_running_cells_and_says_how_to_continue(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "atml", "sweep", *GRID, "--out", "out", "--parallel", "2"]
    folder = tmp_path / "out" / "sweep-compare.probe-smoke"
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    submitted: list[str] = []
    lines: list[str] = []
    while len(submitted) < 3:  # the third cell starts when the first ends: it has seconds left to run
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        if ": job " in line:
            submitted.append(line.split("atml: cell ")[1].split(":")[0])
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal sends it: to the whole foreground process group
    out, err = proc.communicate(timeout=120)
    out = "".join(lines) + out
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err, out + err  # submitit's local controllers' tracebacks stay in their file
    assert "Continue with: atml sweep compare.probe" in out, out
    state = json.loads((folder / "sweep.json").read_text())
    assert state["cells"][submitted[2]]["state"] == "cancelled"
    time.sleep(10)  # longer than a smoke cell takes: a job left running would have finished by now
    third = state["cells"][submitted[2]]
    assert not _alive(int(third["job_id"]))
    log = Path(third["log"]).read_text() if Path(third["log"]).is_file() else "(no log)"
    assert not (folder / submitted[2] / "results.json").exists(), out + err + log
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 failed" in again.stdout, again.stdout + again.stderr
    assert len(list(folder.glob("*/results.json"))) == 4


@pytest.mark.slow
def test_a_failing_tracker_never_stops_the_sweep_and_the_next_run_logs_what_it_missed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow refuses one cell's run: the sweep completes, says so in one line, and the rerun logs that cell once
    (and no other twice)."""
    import mlflow

    from atml import tracking

    monkeypatch.chdir(tmp_path)
    real = tracking.MlflowSink.log_run
    refused: list[str] = []

    def flaky(self: tracking.MlflowSink, folder: Path, cell: object = None, replaces: str | None = None) -> str:
        if not refused:
            refused.append(folder.name)
            raise OSError("No space left on device")
        return real(self, folder, cell, replaces)

    monkeypatch.setattr(tracking.MlflowSink, "log_run", flaky)
    argv = ["sweep", "vae.train", "--preset", "smoke", "--grid", "latent_dim=2,3", "--set", "epochs=1", "--executor",
            "debug",
            "--track", "mlflow", "--out", "out"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"--track mlflow: logging cell {refused[0]} failed (No space left on device); the sweep goes on" in out
    assert "2 done, 0 failed" in out
    state = json.loads((tmp_path / "out" / "sweep-vae.train-smoke" / "sweep.json").read_text())
    parent = state["tracking"]["mlflow_parent_run"]
    mlflow.set_tracking_uri(tracking.mlflow_uri())

    def children() -> list[str]:
        found = mlflow.search_runs(experiment_names=["vae.train"], output_format="list")
        return sorted(r.info.run_name for r in found if r.data.tags.get("mlflow.parentRunId") == parent)

    assert children() == sorted({"latent_dim=2", "latent_dim=3"} - {refused[0]})
    assert cli.main(argv) == 0
    assert "2 skipped (complete before)" in capsys.readouterr().out
    assert children() == ["latent_dim=2", "latent_dim=3"]  # the missed one now, the other not again
    assert mlflow.get_run(parent).info.status == "FINISHED"


def test_an_exit_during_a_checkpoint_write_is_not_a_failed_cell(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit's preemption handler calls sys.exit wherever the cell is; inside torch.save that surfaces as the
    writer's RuntimeError. The cell exits (to be requeued): no failed results.json (found on the real cluster)."""
    from atml.sweeps.cell import CellJob

    sweep = spec_lib.expand(spec_lib.Request("vae.train", "smoke", seeds=2), registry())
    job = CellJob(sweep, sweep.cells[0], tmp_path / "cell", None)

    def preempted_mid_write() -> None:
        (tmp_path / "cell").mkdir()
        try:
            raise SystemExit(-1)  # what submitit's USR2 handler does after requeueing
        except SystemExit:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4084 vs 4054") from None

    monkeypatch.setattr(job, "_run", preempted_mid_write)
    with pytest.raises(SystemExit):
        job()
    assert not (tmp_path / "cell" / "results.json").exists()

    def bug() -> None:
        raise RuntimeError("a real bug")

    monkeypatch.setattr(job, "_run", bug)
    with pytest.raises(RuntimeError):
        job()
    assert json.loads((tmp_path / "cell" / "results.json").read_text())["error"] == "RuntimeError: a real bug"
