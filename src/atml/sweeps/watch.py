"""Waiting on a sweep's jobs: which ended, why, and what the ones still queued wait for.

A job has ended when every task left its result file (submitit writes one per task, looked at
twice a second), or, on Slurm, when it left the queue without one (cancelled, out of time, a
node lost, out of memory, preempted and not requeued). The queue is asked through
:mod:`atml.sweeps.queue`: every 2 s after a change, backing off to every 30 s while nothing
changes, so a large grid costs the controller one ``squeue`` call per half-minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import submitit

from atml import errors
from atml.errors import Option, Part
from atml.sweeps import queue

FILE_POLL_S = 0.5
"""How often result files are looked for (a finished cell is seen within this)."""
QUEUE_POLL_S = (2.0, 30.0)
"""squeue's interval: the first after a change, the longest while nothing changes."""


class Rejected(RuntimeError):
    """Slurm refused the submission (a bad partition, account or resource, the controller down); ``parts``: the
    message, naming the options it is about."""

    def __init__(self, *parts: Part) -> None:
        super().__init__(errors.words(parts))
        self.parts = parts


OPTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("account", ("account",)), ("partition", ("partition",)), ("memory", ("mem_gb",)), ("gres", ("gpus_per_node",)),
    ("gpu", ("gpus_per_node",)), ("time limit", ("timeout_min",)), ("cpu", ("cpus_per_task",)),
    ("node configuration", ("cpus_per_task", "mem_gb", "gpus_per_node")))
"""The words sbatch's refusals use, and the options they are about."""


def rejection(err: BaseException, opts: Any) -> tuple[Part, ...]:
    """One line: what sbatch said, and the options it is about."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    said = next((line for line in lines if "error:" in line), lines[-1] if lines else type(err).__name__)
    said = said[said.index("sbatch: "):] if "sbatch: " in said else said
    names = next((n for word, n in OPTIONS if word in said.lower()), ())
    hint: tuple[Part, ...]
    if "unable to contact" in said.lower() or "connection refused" in said.lower():
        hint = ("the Slurm controller does not answer (scontrol ping); rerun when it is up",)
    elif names:
        listed = [p for name in names for p in (" / ", Option(name))][1:]
        hint = ("check ", *listed, " (sinfo lists the partitions and their limits)")
    else:
        hint = ("check the Slurm options (atml sweep --help)",)
    return (Option("executor", "slurm"), f": the cluster refused the job array: {said}; ", *hint,
            ". Nothing was submitted")


def reason(job: submitit.Job[Any], ending: queue.JobState | None) -> str:
    """Why a job ended without success: its own exception (first task that raised), else Slurm's state."""
    tasks = [job] if job.num_tasks == 1 else [job.task(i) for i in range(job.num_tasks)]
    for index, task in enumerate(tasks):
        if not isinstance(job, submitit.DebugJob) and not task.paths.result_pickle.exists():
            continue
        try:
            answer = task.result()
        except submitit.core.utils.FailedJobError as err:
            return _where(index, tasks, _exception_line(str(err)))
        except submitit.core.utils.UncompletedJobError:
            continue
        if isinstance(answer, dict) and answer.get("reason"):
            return _where(index, tasks, str(answer["reason"]))
    if ending is not None:
        return f"Slurm: {ending.state}" + (f" ({ending.reason})" if ending.reason else "")
    if isinstance(job, submitit.LocalJob):
        return f"the job's process ended without a result ({job.state})"
    return ""


def _where(index: int, tasks: list[Any], text: str) -> str:
    return f"task {index}: {text}" if len(tasks) > 1 else text


def _exception_line(text: str) -> str:
    """The last line of the traceback in submitit's FailedJobError (``ValueError: ...``)."""
    parts = text.split("----------------------")
    trace = parts[1] if len(parts) >= 3 else text
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    return lines[-1] if lines else text.strip()


def _all_results(job: submitit.Job[Any]) -> bool:
    tasks = [job] if job.num_tasks == 1 else [job.task(i) for i in range(job.num_tasks)]
    return all(t.paths.result_pickle.exists() for t in tasks)


class Watcher:
    """Local processes: submitit's own ``done()`` (a process poll and the result file)."""

    line = ""
    poll_s = 0.1

    def finished(self, running: Mapping[submitit.Job[Any], Any]) -> dict[submitit.Job[Any], queue.JobState | None]:
        # the result files first: submitit's done() also waits for the job's processes to exit (torch's teardown)
        return {job: None for job in running if _all_results(job) or job.done()}

    def report_pending(self, running: Mapping[submitit.Job[Any], Any]) -> None:
        pass

    def sleep(self) -> None:
        time.sleep(self.poll_s)


class SlurmWatcher(Watcher):
    """Result files twice a second; ``squeue`` adaptively for jobs that left the queue and for pending reasons."""

    poll_s = FILE_POLL_S

    def __init__(self, say: Callable[[str], None], pending_every_s: float) -> None:
        self.say, self.pending_every_s = say, pending_every_s
        self.storage = queue.accounting()
        self.interval, self.next_query = QUEUE_POLL_S[0], 0.0
        self.states: dict[str, queue.JobState] = {}
        self.last_pending = time.monotonic()
        self.last_error = 0.0
        how = "sacct" if queue.has_accounting(self.storage) else "scontrol show job (no accounting: " \
            f"AccountingStorageType={self.storage}; Slurm remembers an ended job for MinJobAge)"
        self.line = (f"atml: watching Slurm: result files every {FILE_POLL_S:g} s, squeue every "
                     f"{QUEUE_POLL_S[0]:g}-{QUEUE_POLL_S[1]:g} s, and {how} for a job that leaves the queue without "
                     "a result")

    def finished(self, running: Mapping[submitit.Job[Any], Any]) -> dict[submitit.Job[Any], queue.JobState | None]:
        ended: dict[submitit.Job[Any], queue.JobState | None] = {job: None for job in running if _all_results(job)}
        now = time.monotonic()
        if now >= self.next_query and len(ended) < len(running):
            ended.update(self._ask(running, ended))
        return ended

    def _ask(self, running: Mapping[submitit.Job[Any], Any],
             ended: Mapping[submitit.Job[Any], Any]) -> dict[submitit.Job[Any], queue.JobState | None]:
        ids = {str(job.job_id): job for job in running if job not in ended}
        try:
            states = queue.queued(ids)
            gone = [job_id for job_id in ids if job_id not in states or not states[job_id].active]
            endings = queue.ended(gone, self.storage) if gone else {}
        except queue.QueueError as err:
            if time.monotonic() - self.last_error > 60:
                self.say(f"atml: Slurm does not answer ({err}); the cells' states are unknown until it does")
                self.last_error = time.monotonic()
            self.next_query = time.monotonic() + QUEUE_POLL_S[1]
            return {}
        for job_id, now in states.items():  # Slurm requeued it (a lost node, preemption, a time limit)
            before = self.states.get(job_id)
            if job_id in ids and before is not None and _requeued(before, now):
                why = now.reason if now.state == "PENDING" and now.reason else "started again"
                self.say(f"atml: cell {running[ids[job_id]].name}: requeued by Slurm ({why}); it resumes from its "
                         "checkpoints")
        out: dict[submitit.Job[Any], queue.JobState | None] = {}
        for job_id in gone:
            job = ids[job_id]
            out[job] = None if _all_results(job) else endings.get(job_id, queue.GONE)
        changed = states != {k: v for k, v in self.states.items() if k in states} or bool(gone)
        self.states = states
        self.interval = QUEUE_POLL_S[0] if changed else min(QUEUE_POLL_S[1], self.interval * 2)
        self.next_query = time.monotonic() + self.interval
        return out

    def report_pending(self, running: Mapping[submitit.Job[Any], Any]) -> None:
        """Once every ``pending_every_s``: the cells still pending and Slurm's reason for each group."""
        if time.monotonic() - self.last_pending < self.pending_every_s:
            return
        self.last_pending = time.monotonic()
        waiting: dict[str, list[str]] = {}
        for job, cell in running.items():
            state = self.states.get(str(job.job_id))
            if state is not None and state.state == "PENDING":
                waiting.setdefault(state.reason or "no reason given", []).append(cell.name)
        for why, cells in waiting.items():
            shown = ", ".join(cells[:4]) + (f" and {len(cells) - 4} more" if len(cells) > 4 else "")
            self.say(f"atml: {len(cells)} cell(s) pending in Slurm's queue: {why} ({shown})")


def _requeued(before: queue.JobState, now: queue.JobState) -> bool:
    """RUNNING, then PENDING again, or RUNNING since another start: Slurm put the job back in its queue."""
    if before.state != "RUNNING":
        return False
    return now.state == "PENDING" or (now.state == "RUNNING" and now.start != before.start)


class DebugWatcher(Watcher):
    """submitit's DebugExecutor runs a cell when it is asked whether it is done."""

    poll_s = 0.0

    def finished(self, running: Mapping[submitit.Job[Any], Any]) -> dict[submitit.Job[Any], queue.JobState | None]:
        return {job: None for job in running if job.done()}


def for_executor(executor: str, say: Callable[[str], None], pending_every_s: float) -> Watcher:
    if executor == "slurm":
        return SlurmWatcher(say, pending_every_s)
    return DebugWatcher() if executor == "debug" else Watcher()
