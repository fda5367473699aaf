"""One sweep cell as a submitit job, and what its run folder says of it.

A cell's state is read from its folder, never trusted from memory: ``results.json`` with status
ok is done, one with status failed is failed (its run raised an error: it reruns only with
``--retry-failed``), a ``config.yaml`` without results is interrupted (a job stopped from
outside: cancelled, out of time, a node lost, preempted, out of memory; the next run of the
same command resumes it from its checkpoints), nothing is new.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from atml.errors import AtmlError, RunDirError
from atml.run_dir import read_json
from atml.sweeps.spec import Cell, Sweep


def cell_state(folder: Path) -> str:
    """new | interrupted | failed | done, from what the cell's run folder holds."""
    results = folder / "results.json"
    if results.is_file():
        try:
            status = read_json(results).get("status")
        except RunDirError:
            return "interrupted"
        return "done" if status == "ok" else "failed"
    return "interrupted" if (folder / "config.yaml").is_file() else "new"


def failure(folder: Path) -> str:
    """Why the cell's run failed, as its results.json says."""
    try:
        return str(read_json(folder / "results.json").get("error") or "failed")
    except RunDirError as err:
        return str(err)


class CellJob(Checkpointable):
    """One cell, run in the job's process: a fresh run into its folder, or the resume of what is there.

    On a Slurm preemption or timeout submitit calls :meth:`checkpoint`, which requeues this same
    call; it finds the cell's ``config.yaml`` and resumes from the run's checkpoints. Whatever
    error ends the run, its traceback goes to the job's log and its message to the cell's
    failed ``results.json``.
    """

    def __init__(self, sweep: Sweep, cell: Cell, folder: Path, threads: int | None) -> None:
        self.experiment, self.preset, self.fixed = sweep.experiment, sweep.preset, sweep.fixed
        self.values, self.folder, self.threads = cell.values, folder, threads

    def __call__(self) -> dict[str, str]:
        threads = self.threads or _slurm_cpus()
        if threads:
            import torch

            torch.set_num_threads(threads)
        _stop_with_parent()
        _join_tasks()
        try:
            self._run()
        except AtmlError as err:  # the run wrote a failed results.json saying why (when it got that far)
            traceback.print_exc(file=sys.stdout)  # into the log atml points to (stdout)
            self._record_failure(err)
            return {"status": "failed", "reason": str(err)}
        except Exception as err:  # a bug: the traceback in the log (submitit's too), the message in results.json
            exiting = _exit_within(err)
            if exiting is not None:  # submitit's preemption handler exited mid-write: requeued, not failed
                raise exiting from None
            traceback.print_exc(file=sys.stdout)
            self._record_failure(err)
            raise
        return {"status": cell_state(self.folder)}

    def _run(self) -> None:
        from atml import config as config_lib
        from atml import runner
        from atml.console import Reporter
        from atml.suite import registry

        reg = registry()
        if (self.folder / "config.yaml").is_file():
            runner.resume(reg.get, self.folder, report=Reporter(progress=False))
            return
        if self.folder.exists():  # made, then stopped before its config was written: nothing to keep
            shutil.rmtree(self.folder)
        exp = reg.get(self.experiment)
        cfg = config_lib.build(exp.config_cls, exp.presets, self.preset, name=exp.name)
        cfg = config_lib.apply_values(cfg, {**self.fixed, **self.values}, name=exp.name)
        runner.execute(exp, cfg, preset=self.preset, folder=self.folder, report=Reporter(progress=False))

    def _record_failure(self, err: Exception) -> None:
        """A failed results.json when the run did not get to write one (so the cell counts as failed, not
        interrupted); rank 0 only."""
        if os.environ.get("RANK", "0") != "0" or (self.folder / "results.json").is_file():
            return
        from atml import storage
        from atml.results import Results, to_json

        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        self.folder.mkdir(parents=True, exist_ok=True)
        storage.write_json(self.folder / "results.json", to_json(
            Results(notes=[f"The run stopped: {reason}"]), experiment=self.experiment, preset=self.preset,
            status="failed", error=reason, error_kind=type(err).__name__, traceback=traceback.format_exc(),
            references=[]))

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Requeue the same call: it resumes the cell from its run folder."""
        return DelayedSubmission(self, *args, **kwargs)


def _exit_within(err: BaseException) -> BaseException | None:
    """The SystemExit or KeyboardInterrupt an error was raised while handling, if any.

    submitit answers a preemption or time-limit signal (USR2) by requeueing the job and calling ``sys.exit`` from
    the signal handler, wherever the cell is; inside ``torch.save`` that exit surfaces as the writer's RuntimeError
    ("unexpected pos"), with the SystemExit as its context. It is an exit, not the cell's failure.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not isinstance(current, Exception):
            return current
        current = current.__context__
    return None


def _slurm_cpus() -> int | None:
    """In a Slurm job, the CPUs Slurm gave each task (``--cpus-per-task``, 1 unless asked): torch's threads, so that
    cells sharing a node do not oversubscribe it."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    return int(os.environ.get("SLURM_CPUS_PER_TASK", "1"))


def _stop_with_parent() -> None:
    """Linux: SIGINT this cell (checkpoints kept) when the process that started it dies, so that a job controller
    stopped at an unlucky moment never leaves a cell running on its own."""
    if sys.platform != "linux" or os.environ.get("SUBMITIT_EXECUTOR") != "local":  # Slurm stops its own steps
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


def _join_tasks() -> None:
    """A multi-task cell (``--tasks-per-node``): export submitit's ranks the way torchrun does, so atml's
    :func:`atml.distributed.init_distributed` joins them."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not in a submitit job (DebugExecutor runs in this process)
        return
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
