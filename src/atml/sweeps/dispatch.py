"""``atml sweep``: a grid's cells as submitit jobs, one ordinary run folder each, resumable.

The engine is submitit (as DINOv2, detectron2 and fairseq use it): its LocalExecutor runs
``--parallel`` cells at a time as processes on this machine, its SlurmExecutor submits the
whole grid as one job array, its DebugExecutor runs cells in this process. atml only decides
which cells to submit and reads what they left; waiting is submitit's ``as_completed``.

``OUT/sweep-NAME/`` holds ``sweep.json`` (the spec, each cell's state, job id and log,
written atomically), one run folder per cell, and ``logs/`` (submitit's pickles and each
job's stdout/stderr). A cell's state is read from its folder, never trusted from memory:
``results.json`` with status ok is done, one with status failed is failed, a ``config.yaml``
without results is interrupted (resumed through atml's resume), nothing is new.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from atml import storage
from atml.errors import AtmlError, RunDirError, UsageError
from atml.run_dir import read_json
from atml.sweeps.spec import Cell, Sweep

STATE = "sweep.json"
EXECUTORS = ("local", "slurm", "debug")
CELL_MEMORY_GB = 2.0
"""What one smoke/demo cell's process holds at its peak on a CPU (about 1.1 GB measured), with room: the default
``--parallel`` keeps this many GB per cell free."""


@dataclasses.dataclass
class Options:
    """How to dispatch: the executor and its resources, and what to do with cells that already ran."""

    out: Path = Path("runs")
    executor: str = "local"
    parallel: int | None = None
    """Cells at a time on this machine (local); Slurm's ``--array-parallelism`` limits a cluster array."""
    retry_failed: bool = False
    track: str | None = None
    dry_run: bool = False
    partition: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 24 * 60
    array_parallelism: int | None = None
    tasks_per_node: int = 1
    account: str | None = None
    slurm_setup: list[str] = dataclasses.field(default_factory=list)
    command: str = ""
    """The command that continues this sweep (printed on Ctrl-C and with failures)."""


@dataclasses.dataclass
class Outcome:
    """What became of one cell in this invocation."""

    cell: str
    state: str
    """done | failed | skipped (complete before) | skipped-failed (failed before, no --retry-failed) | cancelled"""
    reason: str = ""
    log: str = ""
    job_id: str = ""


@dataclasses.dataclass
class Summary:
    folder: Path
    outcomes: list[Outcome]

    def count(self, *states: str) -> int:
        return sum(o.state in states for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.state in ("failed", "skipped-failed")]


def default_parallel(tasks_per_node: int = 1) -> int:
    """Cells at a time on this machine: one per core, fewer when memory would not hold them (2 GB each); GPUs, one
    cell per GPU."""
    import torch

    if torch.cuda.is_available():
        return max(1, torch.cuda.device_count() // max(1, tasks_per_node))
    cores = os.cpu_count() or 1
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return max(1, min(cores, int(memory_gb // CELL_MEMORY_GB)))


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


class CellJob(Checkpointable):
    """One cell, run in the job's process: a fresh run into its folder, or the resume of what is there.

    On a Slurm preemption or timeout submitit calls :meth:`checkpoint`, which requeues this same
    call; it finds the cell's ``config.yaml`` and resumes from the run's checkpoints.
    """

    def __init__(self, sweep: Sweep, cell: Cell, folder: Path, threads: int | None) -> None:
        self.experiment, self.preset, self.fixed = sweep.experiment, sweep.preset, sweep.fixed
        self.values, self.folder, self.threads = cell.values, folder, threads

    def __call__(self) -> dict[str, str]:
        from atml import config as config_lib
        from atml import runner
        from atml.suite import registry

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        _stop_with_parent()
        _join_tasks()
        reg = registry()
        try:
            if (self.folder / "config.yaml").is_file():
                runner.resume(reg.get, self.folder, progress=False)
            else:
                if self.folder.exists():  # made, then stopped before its config was written: nothing to keep
                    shutil.rmtree(self.folder)
                exp = reg.get(self.experiment)
                cfg = config_lib.build(exp.config_cls, exp.presets, self.preset, name=exp.name)
                cfg = config_lib.apply_values(cfg, {**self.fixed, **self.values}, name=exp.name)
                runner.execute(exp, cfg, preset=self.preset, folder=self.folder, progress=False)
        except AtmlError as err:  # the run wrote a failed results.json saying why (when it got that far)
            return {"status": "failed", "reason": str(err)}
        return {"status": cell_state(self.folder)}

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Requeue the same call: it resumes the cell from its run folder."""
        return DelayedSubmission(self, *args, **kwargs)


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


def slurm_parameters(sweep: Sweep, opts: Options, cells: int) -> dict[str, Any]:
    """The SlurmExecutor's parameters in Slurm's own names: the job array's resources, one set for every cell."""
    params: dict[str, Any] = {"job_name": f"atml-{sweep.name}", "time": opts.timeout_min,
                              "ntasks_per_node": opts.tasks_per_node, "nodes": 1,
                              "array_parallelism": opts.array_parallelism or cells}
    optional = {"partition": opts.partition, "gpus_per_node": opts.gpus_per_node,
                "cpus_per_task": opts.cpus_per_task, "account": opts.account,
                "mem": f"{opts.mem_gb:g}GB" if opts.mem_gb else None, "setup": opts.slurm_setup or None}
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def sbatch_script(sweep: Sweep, opts: Options, cells: int) -> str:
    """The sbatch file submitit writes for the grid's job array (``map_count`` cells), as submitted."""
    from submitit.slurm.slurm import _make_sbatch_string

    logs = sweep_folder(sweep, opts) / "logs" / "%j"
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(logs))])
    return _make_sbatch_string(command=command, folder=logs, map_count=cells, **slurm_parameters(sweep, opts, cells))


def sweep_folder(sweep: Sweep, opts: Options) -> Path:
    return Path(opts.out).resolve() / f"sweep-{sweep.name}"  # absolute: a cluster job may start elsewhere


def _executor(sweep: Sweep, opts: Options, logs: Path, cells: int, parallel: int) -> submitit.Executor:
    if opts.executor == "debug":
        return submitit.DebugExecutor(folder=logs)
    if opts.executor == "slurm":
        if shutil.which("srun") is None or shutil.which("sbatch") is None:
            raise UsageError("--executor slurm: no Slurm here (srun/sbatch not found on PATH); run on the cluster's "
                             "login node, or add --dry-run to see the sbatch script it would submit")
        slurm = submitit.SlurmExecutor(folder=logs / "%j")
        slurm.update_parameters(**slurm_parameters(sweep, opts, cells))
        return slurm
    local = submitit.LocalExecutor(folder=logs / "%j")
    local.update_parameters(timeout_min=opts.timeout_min, tasks_per_node=opts.tasks_per_node,
                            gpus_per_node=opts.gpus_per_node or 0)
    return local


@contextlib.contextmanager
def _sweep_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".sweep.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise UsageError(f"{folder} is being run by another atml sweep; wait for it to end") from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class State:
    """``sweep.json``: the spec and, per cell, its state, job id, log and reason; rewritten atomically."""

    def __init__(self, folder: Path, sweep: Sweep, opts: Options) -> None:
        self.path = folder / STATE
        self.data: dict[str, Any] = {"spec": sweep.to_json(), "executor": opts.executor, "command": opts.command,
                                     "cells": {c.name: {"state": "new"} for c in sweep.cells}, "tracking": {}}
        if self.path.is_file():
            saved = read_json(self.path)
            if not Sweep.from_json(saved["spec"]).same_grid(sweep):
                raise UsageError(f"{folder} holds another sweep (its {STATE} has a different spec); pass another "
                                 "--name or --out, or rerun that sweep's own command")
            self.data["cells"].update(saved.get("cells", {}))
            self.data["tracking"] = saved.get("tracking", {})

    def cell(self, name: str) -> dict[str, Any]:
        return dict(self.data["cells"][name])

    def note(self, name: str, **entry: Any) -> None:
        """Update one cell's entry in memory (:meth:`save` writes it)."""
        self.data["cells"][name] = {**self.data["cells"][name], **entry,
                                    "time": time.strftime("%Y-%m-%d %H:%M:%S")}

    def set(self, name: str, **entry: Any) -> None:
        """Update one cell's entry and write the file."""
        self.note(name, **entry)
        self.save()

    def save(self) -> None:
        storage.write_json(self.path, self.data)


def check(sweep: Sweep, opts: Options) -> None:
    """The dispatch options, checked before anything is written or submitted."""
    if opts.executor not in EXECUTORS:
        raise UsageError(f"--executor {opts.executor} is not known; choose {', '.join(EXECUTORS)}")
    for name in ("parallel", "gpus_per_node", "cpus_per_task", "array_parallelism", "timeout_min", "tasks_per_node"):
        value = getattr(opts, name)
        if value is not None and value < (0 if name == "gpus_per_node" else 1):
            raise UsageError(f"--{name.replace('_', '-')} {value} is not valid; use a positive integer")
    if opts.mem_gb is not None and opts.mem_gb <= 0:
        raise UsageError(f"--mem-gb {opts.mem_gb} is not valid; use a positive number of GB")
    slurm_only = {"partition": opts.partition, "cpus_per_task": opts.cpus_per_task, "mem_gb": opts.mem_gb,
                  "array_parallelism": opts.array_parallelism, "account": opts.account,
                  "slurm_setup": opts.slurm_setup or None}
    given = [f"--{k.replace('_', '-')}" for k, v in slurm_only.items() if v is not None]
    if given and opts.executor != "slurm":
        raise UsageError(f"{', '.join(given)} only apply to --executor slurm (this sweep runs on {opts.executor})")
    if opts.parallel is not None and opts.executor == "slurm":
        raise UsageError("--parallel is for --executor local; on Slurm, --array-parallelism limits the cells running "
                         "at once")
    if opts.dry_run and opts.executor == "debug":
        raise UsageError("--dry-run shows what local or Slurm would submit; drop it with --executor debug")
    if opts.track is not None:
        from atml import tracking

        tracking.check(opts.track)


def plan(sweep: Sweep, opts: Options) -> tuple[list[Cell], list[Outcome]]:
    """The cells to submit now and those skipped, from what each cell's folder holds."""
    folder = sweep_folder(sweep, opts)
    todo, skipped = [], []
    for cell in sweep.cells:
        state = cell_state(folder / cell.name)
        if state == "done":
            skipped.append(Outcome(cell.name, "skipped"))
        elif state == "failed" and not opts.retry_failed:
            reason = _failure(folder / cell.name)
            skipped.append(Outcome(cell.name, "skipped-failed", reason))
        else:
            todo.append(cell)
    return todo, skipped


def _failure(folder: Path) -> str:
    try:
        return str(read_json(folder / "results.json").get("error") or "failed")
    except RunDirError as err:
        return str(err)


def _say(message: str) -> None:
    print(message, flush=True)  # each line as it happens, also into a pipe or tee


def run(sweep: Sweep, opts: Options, *, say: Callable[[str], None] = _say,
        progress: bool | None = None) -> Summary:
    """Submit the cells that are not complete, wait for them through submitit, record each in ``sweep.json``."""
    check(sweep, opts)
    folder = sweep_folder(sweep, opts)
    todo, skipped = plan(sweep, opts)
    parallel = opts.parallel or default_parallel(opts.tasks_per_node)
    if opts.dry_run:
        _dry_run(sweep, opts, folder, todo, skipped, parallel, say)
        return Summary(folder, skipped + [Outcome(c.name, "planned") for c in todo])
    with _sweep_lock(folder):
        state = State(folder, sweep, opts)
        state.save()
        from atml import tracking

        sink = tracking.open_sink(opts.track, sweep, state.data["tracking"]) if opts.track else None
        if sink is not None:
            state.data["tracking"] = sink.parent_ids()
            state.save()
        if skipped:
            say(f"atml: {len(skipped)} of {len(sweep.cells)} cell(s) already ran: "
                f"{sum(o.state == 'skipped' for o in skipped)} complete, "
                f"{sum(o.state == 'skipped-failed' for o in skipped)} failed (rerun those with --retry-failed)")
        for outcome in skipped:
            state.note(outcome.cell, state="done" if outcome.state == "skipped" else "failed",
                      **({"reason": outcome.reason} if outcome.reason else {}))
        state.save()
        threads = max(1, (os.cpu_count() or 1) // parallel) if opts.executor == "local" else None
        outcomes = _dispatch(sweep, opts, folder, todo, parallel, threads, state, sink, say, progress)
        if sink is not None:
            sink.close()
    summary = Summary(folder, skipped + outcomes)
    _say_summary(summary, opts, say)
    return summary


def _dry_run(sweep: Sweep, opts: Options, folder: Path, todo: list[Cell], skipped: list[Outcome], parallel: int,
             say: Callable[[str], None]) -> None:
    say(f"atml: dry run of {folder}: {len(todo)} cell(s) to submit, {len(skipped)} skipped")
    for cell in todo:
        say(f"  {cell.name}")
    if opts.executor == "slurm" and todo:
        say(f"sbatch script of the job array ({len(todo)} cells):")
        say(sbatch_script(sweep, opts, len(todo)))
    elif todo:
        say(f"local: {min(parallel, len(todo))} cell(s) at a time through submitit's LocalExecutor")


def _dispatch(sweep: Sweep, opts: Options, folder: Path, todo: list[Cell], parallel: int, threads: int | None,
              state: State, sink: Any, say: Callable[[str], None], progress: bool | None) -> list[Outcome]:
    from tqdm.auto import tqdm

    if not todo:
        return []
    executor = _executor(sweep, opts, folder / "logs", len(todo), parallel)
    waiting = list(todo)
    running: dict[submitit.Job[Any], Cell] = {}
    outcomes: list[Outcome] = []
    bar = tqdm(total=len(todo), desc=f"sweep {sweep.name}", unit="cell", file=sys.stderr,
               disable=not (sys.stderr.isatty() if progress is None else progress))
    out = bar.write if not bar.disable else say

    def submit(cells: Sequence[Cell]) -> None:
        jobs = _submit(executor, sweep, folder, cells, threads, opts)
        for job, cell in zip(jobs, cells, strict=True):
            running[job] = cell
            state.set(cell.name, state="running", job_id=str(job.job_id), log=str(job.paths.stdout))
            out(f"atml: cell {cell.name}: job {job.job_id}, log {job.paths.stdout}")

    try:
        if opts.executor == "slurm":  # the whole grid as one array; Slurm runs --array-parallelism at a time
            submit(waiting)
            waiting = []
        while running or waiting:
            if opts.executor != "slurm" and waiting and len(running) < parallel:
                submit([waiting.pop(0) for _ in range(min(parallel - len(running), len(waiting)))])
            job = next(submitit.helpers.as_completed(list(running), poll_frequency=_poll(opts)))
            cell = running.pop(job)
            outcome = _finish(job, cell, folder)
            state.set(cell.name, state=outcome.state, job_id=outcome.job_id, log=outcome.log,
                      **({"reason": outcome.reason} if outcome.reason else {}))
            if sink is not None and outcome.state in ("done", "failed"):
                sink.log_run(folder / cell.name, cell)
            outcomes.append(outcome)
            bar.update(1)
            bar.set_postfix(done=sum(o.state == "done" for o in outcomes),
                            failed=sum(o.state == "failed" for o in outcomes), running=len(running))
            out(f"atml: cell {cell.name}: {outcome.state}" + (f" ({outcome.reason})" if outcome.reason else ""))
    except KeyboardInterrupt:
        for job, cell in running.items():
            with contextlib.suppress(Exception):
                job.cancel(check=False)
            state.set(cell.name, state="cancelled")
            outcomes.append(Outcome(cell.name, "cancelled", log=str(job.paths.stdout), job_id=str(job.job_id)))
        left = len(running) + len(waiting)
        say(f"atml: sweep interrupted: {len(running)} running cell(s) cancelled (their checkpoints are kept), "
            f"{left} cell(s) left. Continue with: {opts.command or 'the same atml.sweep(...) call'}")
        raise
    finally:
        bar.close()
    return outcomes


def _poll(opts: Options) -> float:
    """How often submitit's ``as_completed`` looks: a local process at once, a cluster's queue gently."""
    return 30.0 if opts.executor == "slurm" else 0.1


def _submit(executor: submitit.Executor, sweep: Sweep, folder: Path, cells: Sequence[Cell], threads: int | None,
            opts: Options) -> list[submitit.Job[Any]]:
    if opts.executor == "local" and opts.gpus_per_node is None:
        import torch

        if torch.cuda.is_available():  # one GPU per cell, the next free one in turn
            jobs = []
            for cell in cells:
                executor.update_parameters(gpus_per_node=1, visible_gpus=[next(_GPU_TURN) % torch.cuda.device_count()])
                jobs.append(executor.submit(CellJob(sweep, cell, folder / cell.name, threads)))
            return jobs
    if opts.executor != "slurm":
        return [executor.submit(CellJob(sweep, cell, folder / cell.name, threads)) for cell in cells]
    with executor.batch():  # one job array
        jobs = [executor.submit(CellJob(sweep, cell, folder / cell.name, threads)) for cell in cells]
    return jobs


_GPU_TURN = itertools.count()


def _finish(job: submitit.Job[Any], cell: Cell, folder: Path) -> Outcome:
    """The cell's outcome from its folder (the truth) and the job's answer or exception (the reason)."""
    log, job_id = str(job.paths.stdout), str(job.job_id)
    try:
        answer = job.result()
        reason = answer.get("reason", "") if isinstance(answer, dict) else ""
    except Exception as err:  # the job died (killed, out of memory, a bug): its last line says why
        lines = [line for line in str(err).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(err).__name__
    state = cell_state(folder / cell.name)
    if state == "done":
        return Outcome(cell.name, "done", log=log, job_id=job_id)
    return Outcome(cell.name, "failed", reason or _failure(folder / cell.name), log, job_id)


def _say_summary(summary: Summary, opts: Options, say: Callable[[str], None]) -> None:
    done = summary.count("done")
    say(f"atml: sweep {summary.folder}: {done} done, {summary.count('failed')} failed, "
        f"{summary.count('skipped')} skipped (complete before)"
        + (f", {summary.count('skipped-failed')} failed before (not retried)" if summary.count("skipped-failed")
           else ""))
    for outcome in summary.failed:
        say(f"  failed: {outcome.cell}: {outcome.reason}" + (f" (log: {outcome.log})" if outcome.log else ""))
    if summary.failed:
        again = f"{opts.command} --retry-failed" if opts.command else "retry_failed=True"
        say(f"atml: fix the cause, then rerun the failed cells with: {again}")
    say(f"atml: report with: atml report {summary.folder}")
