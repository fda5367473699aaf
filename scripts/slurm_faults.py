"""Faults a cluster brings, injected into ``atml sweep --executor slurm --track mlflow`` on the real cluster of
``scripts/slurm_cluster.sh``; for each, the line the user saw and what was lost.

    bash scripts/slurm_cluster.sh start          # root; once
    python scripts/slurm_faults.py               # writes benchmarks/slurm-faults.json

Each fault runs a fresh 2-cell sweep of ``vae.train`` (smoke preset, 300 epochs: about 20 s a cell), injects the
fault while the cells run, then reruns the same command until the sweep completes (at most twice). Counted at the end:

- cells lost: cells without a complete results.json;
- cells run twice: cells that had two jobs in Slurm's queue at one moment (squeue sampled every 0.5 s throughout);
- MLflow runs missing: complete cells with no run under the sweep's parent run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "scripts" / "slurm_cluster.sh"
CELLS = ["latent_dim=2", "latent_dim=3"]


class Sampler(threading.Thread):
    """squeue every 0.5 s: the most jobs any one cell had at once."""

    def __init__(self, name: str) -> None:
        super().__init__(daemon=True)
        self.name_ = f"atml-{name}"
        self.jobs: dict[str, str] = {}  # job id -> cell
        self.most, self.stop = 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            out = subprocess.run(["squeue", "-h", "-r", "-n", self.name_, "-o", "%i"], capture_output=True,
                                 text=True).stdout.split()
            per_cell: dict[str, int] = {}
            for job in out:
                cell = self.jobs.get(job, job)
                per_cell[cell] = per_cell.get(cell, 0) + 1
            self.most = max([self.most, *per_cell.values()])
            time.sleep(0.5)


class Sweep:
    def __init__(self, work: Path, name: str, extra: list[str]) -> None:
        self.work, self.name = work, name
        self.command = [sys.executable, "-m", "atml", "sweep", "vae.train", "--preset", "smoke", "--grid",
                        "latent_dim=2,3", "--set",
                        "epochs=300", "--executor", "slurm", "--out", "out", "--name", name, "--track", "mlflow",
                        *extra]
        self.folder = work / "out" / f"sweep-{name}"
        self.sampler = Sampler(name)
        self.lines: list[str] = []

    def start(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(self.command, cwd=self.work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()
        return proc

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip())
            if match := re.match(r"atml: cell (\S+): job (\S+),", line):
                self.sampler.jobs[match[2]] = match[1]

    def job(self, cell: str) -> str:
        return json.loads((self.folder / "sweep.json").read_text())["cells"][cell]["job_id"]

    def wait_running(self, cell: str = CELLS[0], checkpoint: bool = False) -> None:
        deadline = time.monotonic() + 180
        want = self.folder / cell / ("checkpoints" if checkpoint else "config.yaml")
        while not (want.exists() and (not checkpoint or any(want.iterdir()))):
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name}: {cell} did not start\n" + "\n".join(self.lines))
            time.sleep(0.3)

    def finish(self, proc: subprocess.Popen[str], reruns: int = 2) -> int:
        proc.wait(timeout=600)
        time.sleep(0.5)
        for _ in range(reruns):
            if self._complete():
                break
            again = self.start()
            again.wait(timeout=600)
            time.sleep(0.5)
        return proc.returncode

    def _complete(self) -> bool:
        return all(_ok(self.folder / cell) for cell in CELLS)

    def counts(self, tracking: str) -> dict[str, int]:
        import mlflow

        lost = sum(not _ok(self.folder / cell) for cell in CELLS)
        client = mlflow.MlflowClient(tracking_uri=tracking)
        parent = json.loads((self.folder / "sweep.json").read_text())["tracking"]["mlflow_parent_run"]
        experiment = client.get_experiment_by_name("vae.train")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        logged = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
        missing = sum(_ok(self.folder / cell) and cell not in logged for cell in CELLS)
        return {"lost": lost, "twice": int(self.sampler.most > 1), "mlflow_missing": missing}


def _ok(cell: Path) -> bool:
    try:
        return json.loads((cell / "results.json").read_text())["status"] == "ok"
    except (OSError, ValueError, KeyError):
        return False


@contextlib.contextmanager
def configured(*options: str) -> Iterator[None]:
    subprocess.run(["bash", str(CLUSTER), "start", *options], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["bash", str(CLUSTER), "start"], check=True, capture_output=True)


def _first(lines: list[str], *needles: str) -> str:
    return next((line for line in lines if any(n in line for n in needles)), "(nothing)")


def scancel(s: Sweep) -> str:
    proc = s.start()
    s.wait_running()
    subprocess.run(["scancel", s.job(CELLS[0])], check=True)
    s.finish(proc)
    return _first(s.lines, "stopped: ")


def sighup(s: Sweep) -> str:
    proc = s.start()
    s.wait_running()
    proc.send_signal(signal.SIGHUP)
    s.finish(proc)
    return _first(s.lines, "go on running on Slurm") + " / rerun: " + _first(s.lines, "re-attached")


def ctrl_c(s: Sweep) -> str:
    proc = s.start()
    s.wait_running()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the foreground process group
    s.finish(proc)
    return _first(s.lines, "sweep interrupted")


def preempt(s: Sweep) -> str:
    proc = s.start()
    s.wait_running(checkpoint=True)
    subprocess.run(["scancel", "--signal=USR2", s.job(CELLS[0])], check=True)
    s.finish(proc)
    return _first(s.lines, "requeued by Slurm", f"cell {CELLS[0]}: done")


def node_crash(s: Sweep) -> str:
    """The node dies with its jobs (slurmd, the job steps and the cells killed at once); Slurm sets it DOWN, as
    slurmctld does once it stops answering; it boots again (slurmd restarted; ReturnToService=2 takes it back)."""
    proc = s.start()
    s.wait_running(checkpoint=True)
    for pattern in (["-x", "slurmd"], ["-x", "slurmstepd"], ["-x", "srun"], ["-f", "slurm_script"],
                    ["-f", "submitit.core._submit"]):  # everything a dead node no longer runs
        subprocess.run(["pkill", "-9", *pattern], check=False)
    subprocess.run(["scontrol", "update", "nodename=localhost", "state=down", "reason=atml-fault"], check=True)
    # slurmd's start first tries the dead job steps' sockets (MessageTimeout each): about 80 s here
    deadline = time.monotonic() + 300
    while subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit("the node did not come back in 5 minutes; see /var/log/atml-slurm")
    s.finish(proc)
    return _first(s.lines, "requeued by Slurm", "stopped: ")


def drained(s: Sweep) -> str:
    subprocess.run(["scontrol", "update", "nodename=localhost", "state=drain", "reason=atml-fault"], check=True)
    proc = s.start()
    try:
        deadline = time.monotonic() + 90
        while not any("pending in Slurm's queue" in line for line in s.lines) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        subprocess.run(["scontrol", "update", "nodename=localhost", "state=resume"], check=True)
    s.finish(proc)
    return _first(s.lines, "pending in Slurm's queue")


def refused(s: Sweep) -> str:
    done = subprocess.run([*s.command, "--partition", "gpu"], cwd=s.work, capture_output=True, text=True)
    line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "(nothing)"
    proc = s.start()  # then the same sweep without the bad flag
    s.finish(proc)
    return f"{line} (exit {done.returncode})"


FAULTS: list[tuple[str, str, Callable[[Sweep], str], tuple[str, ...]]] = [
    ("a cell cancelled", "scancel JOB", scancel, ()),
    ("a cell cancelled, no accounting", "scancel JOB (AccountingStorageType=none)", scancel, ("--accounting", "none")),
    ("the ssh session dropped", "SIGHUP to atml sweep, then the same command", sighup, ()),
    ("Ctrl-C", "SIGINT to the process group, then the same command", ctrl_c, ()),
    ("preemption on a JobRequeue=0 site", "scancel --signal=USR2 JOB (JobRequeue=0)", preempt,
     ("--job-requeue", "0")),
    ("a node crashed with its cells", "kill -9 slurmd, slurmstepd and the cells; scontrol update state=down; "
     "slurmd again", node_crash, ()),
    ("a drained node", "scontrol update state=drain, resume after the line", drained, ()),
    ("a refused submission", "--partition gpu, then without it", refused, ()),
]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "slurm-faults.json"))
    args = parser.parse_args(argv)
    if subprocess.run(["bash", str(CLUSTER), "status"]).returncode != 0:
        raise SystemExit("no Slurm cluster is up: bash scripts/slurm_cluster.sh start (as root)")
    work = Path(tempfile.mkdtemp(prefix="atml-slurm-faults-"))
    tracking = f"sqlite:///{work / 'mlflow.db'}"  # atml's default store, in the sweeps' folder
    rows = []
    for index, (fault, injected, inject, options) in enumerate(FAULTS):
        sweep = Sweep(work, f"fault{index}", [])
        sweep.sampler.start()
        with configured(*options) if options else contextlib.nullcontext():
            saw = inject(sweep)
        sweep.sampler.stop.set()
        saw = re.sub(str(work) + r"\S*", "…", saw).removeprefix("atml: ")
        rows.append({"fault": fault, "injected": injected, "saw": saw, **sweep.counts(tracking)})
        print(json.dumps(rows[-1]), flush=True)
    version = subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.strip()
    report = {"command": "python scripts/slurm_faults.py", "slurm": version,
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cells_per_fault": len(CELLS), "faults": rows}
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0 if all(r["lost"] == r["twice"] == r["mlflow_missing"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
