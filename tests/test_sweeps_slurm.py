"""``atml sweep --executor slurm`` against a real one-node Slurm cluster (Debian's slurmctld, slurmd, munge, slurmdbd
+ MariaDB), started by ``scripts/slurm_cluster.sh`` (``.ci/run`` does). Each fault a cluster brings is injected the way
it happens: scancel, a dropped ssh session (SIGHUP), a drained node, a preemption signal on a ``JobRequeue=0`` site,
a cluster without accounting, a submission the cluster refuses.

Cells are ``vae.train`` at the smoke preset with one CPU each: ``epochs=1`` ends in seconds, ``epochs=150`` and
``epochs=300`` run long enough (about 13 s and 20 s) to be caught running. A cancelled cell needs the longer one:
submitit lets a job's SIGTERM pass, so a cell runs on for Slurm's KillWait (10 s here) after scancel.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atml import cli
from atml.console import Reporter
from atml.suite import registry
from atml.sweeps import dispatch
from atml.sweeps import spec as spec_lib

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CLUSTER = Path(__file__).resolve().parents[1] / "scripts" / "slurm_cluster.sh"
SWEEP = [sys.executable, "-m", "atml", "sweep", "vae.train", "--preset", "smoke", "--executor", "slurm", "--out", "out"]


@pytest.fixture(scope="module")
def slurm() -> None:
    """The cluster is up (CI starts it; elsewhere the tests skip saying how to start one)."""
    if shutil.which("sbatch") and subprocess.run(["bash", str(CLUSTER), "status"]).returncode == 0:
        return
    if os.environ.get("CI"):
        pytest.fail("no Slurm cluster is up: .ci/run starts one with 'bash scripts/slurm_cluster.sh start'")
    pytest.skip("no Slurm cluster here; start one with 'bash scripts/slurm_cluster.sh start' (root)")


@contextlib.contextmanager
def configured(*options: str) -> Iterator[None]:
    """The cluster restarted with other settings (``--accounting none``, ``--job-requeue 0``), then as before."""
    subprocess.run(["bash", str(CLUSTER), "start", *options], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["bash", str(CLUSTER), "start"], check=True, capture_output=True)


def _jobs(name: str) -> list[str]:
    """The sweep's jobs squeue lists (array tasks one by one)."""
    out = subprocess.run(["squeue", "-h", "-r", "-n", f"atml-{name}", "-o", "%i|%T"], capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*SWEEP, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _read_until(proc: subprocess.Popen[str], lines: list[str], needle: str, count: int = 1) -> None:
    assert proc.stdout is not None
    while sum(needle in line for line in lines) < count:
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _state(tmp_path: Path, name: str) -> dict[str, dict[str, str]]:
    return json.loads((tmp_path / "out" / f"sweep-{name}" / "sweep.json").read_text())["cells"]


def test_a_refused_submission_is_one_line_naming_the_flag_and_nothing_is_written(
        slurm: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    done = subprocess.run([*SWEEP, "--grid", "latent_dim=2,3", "--partition", "gpu", "--track", "mlflow"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "--partition" in line and "invalid partition specified: gpu" in line, line
    assert not (tmp_path / "out").exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("vae.train")
    assert experiment is None or not client.search_runs([experiment.experiment_id])  # no parent run left behind


def test_a_failing_cell_says_its_own_error_and_its_log_holds_the_traceback(slurm: None, tmp_path: Path) -> None:
    """Two tasks per cell (gloo ranks): the done cell reads both tasks' results; the diverging one says why."""
    done = subprocess.run([*SWEEP, "--grid", "lr=0.001,1e12", "--set", "epochs=1", "--tasks-per-node", "2",
                           "--name", "fails"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    cells = _state(tmp_path, "fails")
    assert cells["lr=0.001"]["state"] == "done"
    bad = cells["lr=1000000000000.0"]
    assert bad["state"] == "failed" and "loss became nan" in bad["reason"], bad
    assert f"failed: lr=1000000000000.0: {bad['reason']}" in done.stdout
    assert "results()" not in done.stdout
    log = Path(bad["log"]).read_text()
    assert "Traceback" in log and "DivergedError" in log, log[-2000:]


def test_a_cancelled_cell_without_accounting_is_reported_then_resumed_and_tracked_once(
        slurm: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No accounting (sacct fails): scancel of a running cell is seen through squeue/scontrol, MLflow keeps the
    controller alive, and the rerun resumes the cell (no --retry-failed) and logs it once."""
    import mlflow

    args = ["--grid", "epochs=1,300", "--name", "cancel", "--track", "mlflow"]
    with configured("--accounting", "none"):
        proc = _start(args, tmp_path)
        lines: list[str] = []
        _read_until(proc, lines, "atml: watching Slurm")
        assert "scontrol show job (no accounting" in lines[-1]
        long = tmp_path / "out" / "sweep-cancel" / "epochs=300"
        _wait(lambda: (long / "config.yaml").is_file(), 120, "the long cell to start")
        job = _state(tmp_path, "cancel")["epochs=300"]["job_id"]
        subprocess.run(["scancel", job], check=True)
        started = time.monotonic()
        out, _ = proc.communicate(timeout=150)
        seen_after = time.monotonic() - started
    out = "".join(lines) + out
    assert proc.returncode == 1, out
    assert "stopped: epochs=300: Slurm: CANCELLED" in out, out
    assert "1 done, 0 failed, 1 stopped" in out and "the same command resumes them" in out
    assert seen_after < 60, seen_after
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent_id = json.loads((tmp_path / "out" / "sweep-cancel" / "sweep.json").read_text())["tracking"][
        "mlflow_parent_run"]

    def children() -> list[mlflow.entities.Run]:
        experiment = client.get_experiment_by_name("vae.train")
        assert experiment is not None
        return [r for r in client.search_runs([experiment.experiment_id])
                if r.data.tags.get("mlflow.parentRunId") == parent_id]

    assert client.get_run(parent_id).info.status == "FAILED"
    assert [r.info.run_name for r in children()] == ["epochs=1"]

    again = subprocess.run([*SWEEP, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 done, 0 failed, 0 stopped, 1 skipped" in again.stdout
    env = json.loads((long / "results.json").read_text())
    assert env["status"] == "ok"
    assert sorted(r.info.run_name for r in children()) == ["epochs=1", "epochs=300"]  # each cell exactly once
    assert client.get_run(parent_id).info.status == "FINISHED"


def test_sighup_leaves_the_jobs_running_and_the_rerun_reattaches_to_them(slurm: None, tmp_path: Path) -> None:
    """A dropped ssh session: the jobs go on; the same command watches them again and submits nothing: squeue never
    lists more than one job per cell."""
    args = ["--grid", "latent_dim=2,3", "--set", "epochs=300", "--name", "hup", "--timeout-min", "30", "--mem-gb",
            "1", "--cpus-per-task", "1"]
    proc = _start(args, tmp_path)
    lines: list[str] = []
    _read_until(proc, lines, ": job ", 2)
    _wait(lambda: sum("RUNNING" in j for j in _jobs("hup")) == 2, 120, "both cells to run")
    job = _state(tmp_path, "hup")["latent_dim=2"]["job_id"]
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=True).stdout
    assert "Requeue=1" in shown  # asked for with --requeue, whatever the site's JobRequeue
    assert "TimeLimit=00:30:00" in shown and "MinMemoryNode=1G" in shown and "NumCPUs=1" in shown, shown
    script = subprocess.run(["scontrol", "write", "batch_script", job, "-"], capture_output=True, text=True,
                            check=True).stdout
    for line in ("#SBATCH --requeue", "#SBATCH --job-name=atml-hup", "#SBATCH --time=30", "#SBATCH --mem=1GB",
                 "#SBATCH --array=0-1%2"):
        assert line in script, script
    assert "submitit.core._submit" in script
    proc.send_signal(signal.SIGHUP)
    out, _ = proc.communicate(timeout=60)
    out = "".join(lines) + out
    assert proc.returncode == 129, out
    assert "go on running on Slurm" in out and "re-attaches" in out, out
    assert len(_jobs("hup")) == 2

    again = _start(args, tmp_path)
    most = 0
    while again.poll() is None:
        most = max(most, len(_jobs("hup")))
        time.sleep(0.5)
    rerun = again.communicate()[0]
    assert again.returncode == 0, rerun
    assert "re-attached to 2 cell(s)" in rerun and ": job " not in rerun, rerun
    assert most <= 2 and "2 done, 0 failed" in rerun
    for cell in _state(tmp_path, "hup").values():
        assert cell["state"] == "done" and cell["tracked" if "tracked" in cell else "state"]


def test_cells_waiting_behind_a_drained_node_print_slurm_s_reason(slurm: None, tmp_path: Path) -> None:
    sweep = spec_lib.expand(spec_lib.Request("vae.train", "smoke", seeds=2, fixed=[("epochs", 1)]), registry())
    opts = dispatch.Options(out=tmp_path / "out", executor="slurm", pending_every_s=3)
    said: list[str] = []
    subprocess.run(["scontrol", "update", "nodename=localhost", "state=drain", "reason=atml-test"], check=True)
    try:
        result: list[dispatch.Summary] = []
        worker = threading.Thread(target=lambda: result.append(dispatch.run(sweep, opts, report=Reporter(said.append))))
        worker.start()
        _wait(lambda: any("pending in Slurm's queue" in line for line in said), 60, "a pending line")
    finally:
        subprocess.run(["scontrol", "update", "nodename=localhost", "state=resume"], check=True)
    worker.join(timeout=180)
    pending = next(line for line in said if "pending in Slurm's queue" in line)
    assert "2 cell(s)" in pending and "seed=0" in pending and "DRAINED" in pending, pending
    assert result and result[0].count("done") == 2


def test_a_preempted_cell_requeues_and_resumes_on_a_site_with_job_requeue_0(slurm: None, tmp_path: Path) -> None:
    """Preemption and time limits reach a cell as USR2: submitit checkpoints it and asks Slurm to requeue it, which
    a JobRequeue=0 site refuses unless the job was submitted with --requeue."""
    with configured("--job-requeue", "0"):
        proc = _start(["--grid", "latent_dim=2,3", "--set", "epochs=150", "--name", "preempt"], tmp_path)
        lines: list[str] = []
        _read_until(proc, lines, ": job ", 2)
        cell = tmp_path / "out" / "sweep-preempt" / "latent_dim=2"
        _wait(lambda: any(cell.glob("checkpoints/*")), 120, "a first checkpoint")
        job = _state(tmp_path, "preempt")["latent_dim=2"]["job_id"]
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        out, _ = proc.communicate(timeout=400)
    out = "".join(lines) + out
    assert proc.returncode == 0, out
    assert "2 done, 0 failed" in out
    log = Path(_state(tmp_path, "preempt")["latent_dim=2"]["log"]).read_text()
    assert "Requeued job" in log, log[-3000:]


def test_no_slurm_on_this_machine_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH without Slurm's commands (as on a laptop), whatever this machine has."""
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    argv = ["sweep", "vae.train", "--preset", "smoke", "--grid", "latent_dim=2,3", "--out", str(tmp_path / "out"),
            "--executor", "slurm"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "no Slurm here" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
