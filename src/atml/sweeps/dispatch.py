"""``atml sweep``: a grid's cells as submitit jobs, one ordinary run folder each, resumable.

The engine is submitit (as DINOv2, detectron2 and fairseq use it), through its ``AutoExecutor``:
``local`` runs ``--parallel`` cells at a time as processes on this machine, ``slurm`` submits the
whole grid as one job array, ``debug`` runs cells in this process. atml decides which cells to
submit, watches them (:mod:`atml.sweeps.watch`) and reads what they left.

``OUT/sweep-NAME/`` holds ``sweep.json`` (the spec, each cell's state, job id and log, written
atomically), one run folder per cell, and ``logs/`` (submitit's pickles and each job's
stdout/stderr). A cell's state is read from its folder (:func:`atml.sweeps.cell.cell_state`).

Stopping the controller: Ctrl-C cancels the running cells (checkpoints kept). SIGTERM and SIGHUP
(a dropped ssh session) do the same on this machine, whose cells cannot outlive it; on Slurm they
leave the jobs queued and running, and the next run of the same command re-attaches to them
(their ids are in ``sweep.json``) instead of submitting them again: no cell runs twice at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import itertools
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import submitit

from atml import storage
from atml.console import Reporter
from atml.errors import Option, UsageError
from atml.run_dir import read_json
from atml.sweeps import queue, watch
from atml.sweeps.cell import CellJob, cell_state, failure
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
    pending_every_s: float = 60.0
    """How often cells waiting in Slurm's queue print why they wait."""


@dataclasses.dataclass
class Outcome:
    """What became of one cell in this invocation."""

    cell: str
    state: str
    """done | failed | stopped (its job ended from outside without a result; the next run resumes it) | skipped
    (complete before) | skipped-failed (failed before, no --retry-failed) | cancelled (by this controller's Ctrl-C) |
    detached (left running on Slurm when this controller stopped)"""
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

    @property
    def stopped(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.state == "stopped"]


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP to the controller, handled like Ctrl-C (``signum`` says which)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def default_parallel(tasks_per_node: int = 1) -> int:
    """Cells at a time on this machine: one per core, fewer when memory would not hold them (2 GB each); GPUs, one
    cell per GPU."""
    import torch

    if torch.cuda.is_available():
        return max(1, torch.cuda.device_count() // max(1, tasks_per_node))
    cores = os.cpu_count() or 1
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return max(1, min(cores, int(memory_gb // CELL_MEMORY_GB)))


def parameters(sweep: Sweep, opts: Options, cells: int) -> dict[str, Any]:
    """``AutoExecutor.update_parameters``' arguments: submitit's shared names, then Slurm's own (``slurm_`` prefix).

    ``--requeue`` is always asked for, so that preemption and time limits requeue a cell on sites whose
    ``JobRequeue=0`` refuses ``scontrol requeue`` otherwise.
    """
    shared: dict[str, Any] = {"name": f"atml-{sweep.name}", "timeout_min": opts.timeout_min,
                              "tasks_per_node": opts.tasks_per_node, "nodes": 1, "gpus_per_node": opts.gpus_per_node,
                              "cpus_per_task": opts.cpus_per_task, "mem_gb": opts.mem_gb}
    if opts.executor != "slurm":
        return {k: v for k, v in shared.items() if v is not None and k in ("timeout_min", "tasks_per_node")} | \
            {"gpus_per_node": opts.gpus_per_node or 0}
    slurm = {"slurm_partition": opts.partition, "slurm_account": opts.account,
             "slurm_array_parallelism": opts.array_parallelism or cells, "slurm_setup": opts.slurm_setup or None,
             "slurm_additional_parameters": {"requeue": True}}
    return {k: v for k, v in (shared | slurm).items() if v is not None}


def sweep_folder(sweep: Sweep, opts: Options) -> Path:
    return Path(opts.out).resolve() / f"sweep-{sweep.name}"  # absolute: a cluster job may start elsewhere


def _executor(sweep: Sweep, opts: Options, logs: Path, cells: int) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=logs / "%j", cluster=opts.executor)
    executor.update_parameters(**parameters(sweep, opts, cells))
    return executor


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
        self.saved_executor = opts.executor
        if self.path.is_file():
            saved = read_json(self.path)
            if not Sweep.from_json(saved["spec"]).same_grid(sweep):
                raise UsageError(f"{folder} holds another sweep (its {STATE} has a different spec); pass another ",
                                 Option("name"), " or ", Option("out"), ", or rerun that sweep's own command")
            self.data["cells"].update(saved.get("cells", {}))
            self.data["tracking"] = saved.get("tracking", {})
            self.saved_executor = saved.get("executor", opts.executor)

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
        raise UsageError(Option("executor", opts.executor), f" is not known; choose {', '.join(EXECUTORS)}")
    for name in ("parallel", "gpus_per_node", "cpus_per_task", "array_parallelism", "timeout_min", "tasks_per_node"):
        value = getattr(opts, name)
        if value is not None and value < (0 if name == "gpus_per_node" else 1):
            raise UsageError(Option(name, value), " is not valid; use a positive integer")
    if opts.mem_gb is not None and opts.mem_gb <= 0:
        raise UsageError(Option("mem_gb", opts.mem_gb), " is not valid; use a positive number of GB")
    slurm_only = {"partition": opts.partition, "cpus_per_task": opts.cpus_per_task, "mem_gb": opts.mem_gb,
                  "array_parallelism": opts.array_parallelism, "account": opts.account,
                  "slurm_setup": opts.slurm_setup or None}
    given = [p for k, v in slurm_only.items() if v is not None for p in (", ", Option(k))][1:]
    if given and opts.executor != "slurm":
        raise UsageError(*given, " only apply to ", Option("executor", "slurm"),
                         f" (this sweep runs on {opts.executor})")
    if opts.parallel is not None and opts.executor == "slurm":
        raise UsageError(Option("parallel"), " is for ", Option("executor", "local"), "; on Slurm, ",
                         Option("array_parallelism"), " limits the cells running at once")
    if opts.dry_run and opts.executor == "debug":
        raise UsageError(Option("dry_run", True), " shows what local or Slurm would submit; drop it with ",
                         Option("executor", "debug"))
    if opts.executor == "slurm" and not opts.dry_run and not has_slurm():
        raise UsageError(Option("executor", "slurm"), ": no Slurm here (srun/sbatch/squeue not found on PATH); run on "
                         "the cluster's login node, or add ", Option("dry_run", True), " to see what it would submit")
    if opts.track is not None:
        from atml import tracking

        tracking.check(opts.track)


def has_slurm() -> bool:
    return all(shutil.which(tool) for tool in ("srun", "sbatch", "squeue"))


def plan(sweep: Sweep, opts: Options) -> tuple[list[Cell], list[Outcome]]:
    """The cells to submit now and those skipped, from what each cell's folder holds."""
    folder = sweep_folder(sweep, opts)
    todo, skipped = [], []
    for cell in sweep.cells:
        state = cell_state(folder / cell.name)
        if state == "done":
            skipped.append(Outcome(cell.name, "skipped"))
        elif state == "failed" and not opts.retry_failed:
            skipped.append(Outcome(cell.name, "skipped-failed", failure(folder / cell.name)))
        else:
            todo.append(cell)
    return todo, skipped


def _say(message: str) -> None:
    with contextlib.suppress(OSError):  # a terminal gone with its ssh session: sweep.json still says it all
        print(message, flush=True)  # each line as it happens, also into a pipe or tee


SWEEP = Reporter(_say)
"""A sweep controller's reporter: each line printed as it happens, Python's words (the command line passes its
own)."""


def run(sweep: Sweep, opts: Options, *, report: Reporter = SWEEP) -> Summary:
    """Submit the cells that are not complete (or re-attach to their jobs still on Slurm), wait for them, record
    each in ``sweep.json``, log finished cells to the tracker. ``report``: where the lines and the bar go."""
    say = report.say
    check(sweep, opts)
    folder = sweep_folder(sweep, opts)
    todo, skipped = plan(sweep, opts)
    parallel = opts.parallel or default_parallel(opts.tasks_per_node)
    if opts.dry_run:
        _dry_run(sweep, opts, folder, todo, skipped, parallel, say)
        return Summary(folder, skipped + [Outcome(c.name, "planned") for c in todo])
    made = next((p for p in reversed([folder, *folder.parents]) if not p.exists()), None)  # what this call creates
    try:
        with _sweep_lock(folder), _stop_signals():
            outcomes = _run_locked(sweep, opts, folder, todo, skipped, parallel, report)
    except watch.Rejected as err:
        if made is not None:  # nothing half-written: the folders this call made go again
            shutil.rmtree(made, ignore_errors=True)
        raise UsageError(*err.parts) from err
    summary = Summary(folder, skipped + outcomes)
    _say_summary(summary, opts, report)
    return summary


def _run_locked(sweep: Sweep, opts: Options, folder: Path, todo: list[Cell], skipped: list[Outcome], parallel: int,
                report: Reporter) -> list[Outcome]:
    state = State(folder, sweep, opts)
    attached = _still_queued(sweep, opts, state, todo)
    state.save()
    from atml.sweeps.track import Tracker

    say, progress = report.say, report.progress
    tracker = Tracker(opts.track, sweep, state, folder, report)
    if skipped:
        report.tell(f"atml: {len(skipped)} of {len(sweep.cells)} cell(s) already ran: "
                    f"{sum(o.state == 'skipped' for o in skipped)} complete, "
                    f"{sum(o.state == 'skipped-failed' for o in skipped)} failed (rerun those with ",
                    Option("retry_failed", True), ")")
    for outcome in skipped:
        state.note(outcome.cell, state="done" if outcome.state == "skipped" else "failed",
                   **({"reason": outcome.reason} if outcome.reason else {}))
    state.save()
    tracker.catch_up()  # cells that ended while no controller watched them
    threads = max(1, (os.cpu_count() or 1) // parallel) if opts.executor == "local" else None
    outcomes: list[Outcome] = []
    try:
        _dispatch(sweep, opts, folder, todo, attached, parallel, threads, state, tracker, say, progress, outcomes)
    except watch.Rejected:
        tracker.rejected()
        raise
    except KeyboardInterrupt:
        tracker.close(outcomes, interrupted=True)
        raise
    tracker.close(skipped + outcomes, interrupted=False)
    return outcomes


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the controller like Ctrl-C (as :class:`Stopped`), in this call only."""
    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _still_queued(sweep: Sweep, opts: Options, state: State, todo: list[Cell]) -> dict[str, submitit.Job[Any]]:
    """Cells whose Slurm job from an earlier run is still queued or running: their jobs, to watch again instead of
    submitting the cells twice."""
    recorded = {c.name: state.cell(c.name) for c in todo}
    recorded = {name: e for name, e in recorded.items() if e.get("state") == "running" and e.get("job_id")
                and e.get("executor", state.saved_executor) == "slurm"}
    if not recorded or not has_slurm():
        return {}
    try:
        active = queue.queued(e["job_id"] for e in recorded.values())
    except queue.QueueError as err:
        raise UsageError(f"cannot ask Slurm whether this sweep's jobs still run (squeue: {err}); rerun when the "
                         "controller answers, so that no cell is submitted twice") from err
    alive = {name: e for name, e in recorded.items() if e["job_id"] in active and active[e["job_id"]].active}
    if alive and opts.executor != "slurm":
        raise UsageError(f"{len(alive)} cell(s) of this sweep still run as Slurm jobs "
                         f"({', '.join(e['job_id'] for e in alive.values())}); rerun with ",
                         Option("executor", "slurm"), " to watch them, or scancel them first")
    logs = sweep_folder(sweep, opts) / "logs" / "%j"
    return {name: submitit.SlurmJob(folder=logs, job_id=e["job_id"], tasks=list(range(e.get("tasks", 1))))
            for name, e in alive.items()}


def _dry_run(sweep: Sweep, opts: Options, folder: Path, todo: list[Cell], skipped: list[Outcome], parallel: int,
             say: Callable[[str], None]) -> None:
    say(f"atml: dry run of {folder}: {len(todo)} cell(s) to submit, {len(skipped)} skipped")
    for cell in todo:
        say(f"  {cell.name}")
    if not todo:
        return
    params = parameters(sweep, opts, len(todo))
    if opts.executor == "slurm":
        say(f"one Slurm job array of {len(todo)} cell(s) through submitit.AutoExecutor(cluster='slurm'), logs in "
            f"{folder / 'logs'}, with update_parameters(")
    else:
        say(f"local: {min(parallel, len(todo))} cell(s) at a time through submitit.AutoExecutor(cluster='local'), "
            "with update_parameters(")
    for key, value in params.items():
        say(f"    {key}={value!r},")
    say(")")


def _dispatch(sweep: Sweep, opts: Options, folder: Path, todo: list[Cell], attached: dict[str, submitit.Job[Any]],
              parallel: int, threads: int | None, state: State, tracker: Any, say: Callable[[str], None],
              progress: bool | None, outcomes: list[Outcome]) -> None:
    from tqdm.auto import tqdm

    if not todo:
        return
    cells = {c.name: c for c in todo}
    waiting = [c for c in todo if c.name not in attached]
    running: dict[submitit.Job[Any], Cell] = {job: cells[name] for name, job in attached.items()}
    watcher = watch.for_executor(opts.executor, say, opts.pending_every_s)
    bar = tqdm(total=len(todo), desc=f"sweep {sweep.name}", unit="cell", file=sys.stderr,
               disable=not (sys.stderr.isatty() if progress is None else progress))
    out = bar.write if not bar.disable else say
    if attached:
        out(f"atml: re-attached to {len(attached)} cell(s) still on Slurm from an earlier run (jobs "
            f"{', '.join(str(j.job_id) for j in attached.values())}); nothing is submitted twice")
    executor = _executor(sweep, opts, folder / "logs", len(waiting)) if waiting else None

    def submit(batch: Sequence[Cell]) -> None:
        assert executor is not None
        jobs = _submit(executor, sweep, folder, batch, threads, opts)
        for job, cell in zip(jobs, batch, strict=True):
            running[job] = cell
            state.set(cell.name, state="running", job_id=str(job.job_id), log=str(job.paths.stdout),
                      executor=opts.executor, tasks=job.num_tasks)
            out(f"atml: cell {cell.name}: job {job.job_id}, log {job.paths.stdout}")

    try:
        if opts.executor == "slurm" and waiting:  # the whole grid as one array; Slurm runs --array-parallelism
            submit(waiting)
            waiting = []
        if watcher.line:
            out(watcher.line)
        while running or waiting:
            if opts.executor != "slurm" and waiting and len(running) < parallel:
                submit([waiting.pop(0) for _ in range(min(parallel - len(running), len(waiting)))])
            ended = watcher.finished(running)
            for job, ending in ended.items():
                outcomes.append(_ended(job, running.pop(job), folder, ending, state, tracker))
                _show(outcomes, len(running), bar, out)
            watcher.report_pending(running)
            if running and not ended:
                watcher.sleep()
    except KeyboardInterrupt as err:
        _interrupted(err, opts, running, waiting, state, say, outcomes)
        raise
    finally:
        _tidy(bar, folder)


def _tidy(bar: Any, folder: Path) -> None:
    """The bar closed (a terminal gone with its session is no error), and the empty log folder template that
    submitit's local controllers make themselves removed."""
    with contextlib.suppress(OSError):
        bar.close()
    with contextlib.suppress(OSError):
        (folder / "logs" / "%j").rmdir()


def _show(outcomes: list[Outcome], running: int, bar: Any, out: Callable[[str], None]) -> None:
    """The last cell's end on the bar and as a line."""
    bar.update(1)
    bar.set_postfix(done=sum(o.state == "done" for o in outcomes), failed=sum(o.state != "done" for o in outcomes),
                    running=running)
    last = outcomes[-1]
    out(f"atml: cell {last.cell}: {last.state}" + (f" ({last.reason})" if last.reason else ""))


def _ended(job: submitit.Job[Any], cell: Cell, folder: Path, ending: queue.JobState | None, state: State,
           tracker: Any) -> Outcome:
    """A cell whose job ended: its outcome recorded in ``sweep.json`` and logged to the tracker."""
    outcome = _finish(job, cell, folder, ending)
    state.set(cell.name, state=outcome.state, job_id=outcome.job_id, log=outcome.log, reason=outcome.reason)
    tracker.log(cell)
    return outcome


def _interrupted(err: KeyboardInterrupt, opts: Options, running: dict[submitit.Job[Any], Cell], waiting: list[Cell],
                 state: State, say: Callable[[str], None], outcomes: list[Outcome]) -> None:
    """Ctrl-C cancels the running cells; SIGTERM/SIGHUP on Slurm leaves them to the cluster, to re-attach later."""
    detach = opts.executor == "slurm" and isinstance(err, Stopped)
    for job, cell in running.items():
        if not detach:
            with contextlib.suppress(Exception):
                job.cancel(check=False)
        state.note(cell.name, state="running" if detach else "cancelled")
        outcomes.append(Outcome(cell.name, "detached" if detach else "cancelled", log=str(job.paths.stdout),
                                job_id=str(job.job_id)))
    state.save()
    again = opts.command or "the same atml.sweep(...) call"
    if detach:
        ids = " ".join(str(job.job_id) for job in running)
        say(f"atml: sweep stopped ({signal.Signals(err.signum).name}): {len(running)} cell(s) go on running on "  # type: ignore[attr-defined]
            f"Slurm ({ids or 'none'}); the same command re-attaches to them without submitting them again: {again}"
            + (f" (to stop them: scancel {ids})" if ids else ""))
        return
    left = len(running) + len(waiting)
    say(f"atml: sweep interrupted: {len(running)} running cell(s) cancelled (their checkpoints are kept), "
        f"{left} cell(s) left. Continue with: {again}")


def _submit(executor: submitit.AutoExecutor, sweep: Sweep, folder: Path, cells: Sequence[Cell],
            threads: int | None, opts: Options) -> list[submitit.Job[Any]]:
    jobs = [CellJob(sweep, cell, folder / cell.name, threads) for cell in cells]
    if opts.executor == "slurm":
        try:  # submitit prints sbatch's refusal itself too: atml says it once, in its own line
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():  # one job array
                return [executor.submit(job) for job in jobs]
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as err:
            raise watch.Rejected(*watch.rejection(err, opts)) from err
    if opts.executor == "local" and opts.gpus_per_node is None:
        import torch

        if torch.cuda.is_available():  # one GPU per cell, the next free one in turn
            out = []
            for job in jobs:
                executor.update_parameters(gpus_per_node=1,
                                           local_visible_gpus=[next(_GPU_TURN) % torch.cuda.device_count()])
                out.append(_submit_local(executor, job, folder))
            return out
    if opts.executor == "local":
        return [_submit_local(executor, job, folder) for job in jobs]
    return [executor.submit(job) for job in jobs]


_GPU_TURN = itertools.count()


def _submit_local(executor: submitit.AutoExecutor, job: CellJob, folder: Path) -> submitit.Job[Any]:
    """submitit's local controller process writes its own tracebacks (a Ctrl-C in the terminal reaches it too) to
    ``logs/controllers.err``, not over atml's lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(folder / "logs" / "controllers.err", "ab") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            return executor.submit(job)
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _finish(job: submitit.Job[Any], cell: Cell, folder: Path, ending: queue.JobState | None) -> Outcome:
    """The cell's outcome from its folder (the truth), its tasks' answers and Slurm's state (the reason)."""
    log, job_id = str(job.paths.stdout), str(job.job_id)
    state = cell_state(folder / cell.name)
    if state == "done":
        return Outcome(cell.name, "done", log=log, job_id=job_id)
    reason = watch.reason(job, ending)
    if state == "failed":
        return Outcome(cell.name, "failed", failure(folder / cell.name) or reason, log, job_id)
    return Outcome(cell.name, "stopped", reason or "the job ended without a result", log, job_id)


def _say_summary(summary: Summary, opts: Options, report: Reporter) -> None:
    say = report.say
    again = opts.command or "the same atml.sweep(...) call"
    say(f"atml: sweep {summary.folder}: {summary.count('done')} done, {summary.count('failed')} failed, "
        f"{summary.count('stopped')} stopped, {summary.count('skipped')} skipped (complete before)"
        + (f", {summary.count('skipped-failed')} failed before (not retried)" if summary.count("skipped-failed")
           else ""))
    for outcome in summary.failed:
        say(f"  failed: {outcome.cell}: {outcome.reason}" + (f" (log: {outcome.log})" if outcome.log else ""))
    for outcome in summary.stopped:
        say(f"  stopped: {outcome.cell}: {outcome.reason}" + (f" (log: {outcome.log})" if outcome.log else ""))
    if summary.stopped:
        say(f"atml: stopped cells keep their checkpoints; the same command resumes them: {again}")
    if summary.failed:
        rerun = f"{opts.command} " if opts.command else "the same atml.sweep(...) call with "
        report.tell(f"atml: fix the cause, then rerun the failed cells with: {rerun}", Option("retry_failed", True))
    say(f"atml: report with: atml report {summary.folder}")
