"""What Slurm says of a sweep's jobs, with or without accounting.

submitit asks ``sacct`` for a job's state; on a cluster without accounting
(``AccountingStorageType=accounting_storage/none``) every call fails and a job that left the
queue without a result looks pending forever. atml asks ``squeue`` (always there) which jobs
are still queued or running and why they wait, and only for a job that left the queue without
a result asks how it ended: ``sacct`` where accounting is on, else ``scontrol show job`` (which
remembers a job for ``MinJobAge`` seconds after it ends).
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterable

ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
"""States of a job that is still Slurm's to run (squeue lists it)."""


@dataclasses.dataclass(frozen=True)
class JobState:
    """One job's state in Slurm's words: ``PENDING`` with its reason (``Resources``, ``ReqNodeNotAvail...``), or how
    it ended (``CANCELLED``, ``TIMEOUT``, ``NODE_FAIL``, ``OUT_OF_MEMORY``, ``PREEMPTED``, ``FAILED``...)."""

    state: str
    reason: str = ""
    start: str = ""
    """When it started (squeue's ``%S``): a RUNNING job with another start than before was requeued meanwhile."""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


GONE = JobState("UNKNOWN", "it left the queue and Slurm keeps no record of it (no accounting, older than MinJobAge)")


class QueueError(RuntimeError):
    """squeue failed (the controller is down or slow): nothing is known this time."""


def _run(command: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise QueueError(f"{command[0]}: {err}") from err


def accounting() -> str:
    """Slurm's ``AccountingStorageType`` (``accounting_storage/none`` when there is no accounting)."""
    done = _run(["scontrol", "show", "config"])
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "AccountingStorageType":
            return value.strip()
    return "unknown"


def has_accounting(storage: str) -> bool:
    return storage not in ("accounting_storage/none", "unknown")


def queued(job_ids: Iterable[str]) -> dict[str, JobState]:
    """The jobs among ``job_ids`` that squeue still lists (array tasks one by one, ``123_4``), with state and
    reason."""
    arrays = sorted({job.split("_")[0] for job in job_ids})
    if not arrays:
        return {}
    done = _run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%T|%r|%S"])
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:  # every job has left the queue (and its record expired)
            return {}
        raise QueueError(done.stderr.strip() or f"squeue exited {done.returncode}")
    out = {}
    for line in done.stdout.splitlines():
        job, state, reason, start = (line.split("|") + ["", "", ""])[:4]
        out[job.strip()] = JobState(state.strip(), "" if reason.strip() == "None" else reason.strip(), start.strip())
    return out


def ended(job_ids: Iterable[str], storage: str) -> dict[str, JobState]:
    """How jobs that left the queue ended: sacct with accounting, else scontrol while Slurm remembers them."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    if has_accounting(storage):
        done = _run(["sacct", "-n", "-X", "-P", "-j", ",".join(ids), "-o", "JobID,State,Reason"])
        found = {}
        for line in done.stdout.splitlines():
            job, state, reason = (line.split("|") + ["", ""])[:3]
            found[job.strip()] = JobState(state.split()[0] if state.strip() else "UNKNOWN",
                                          "" if reason.strip() == "None" else reason.strip())
        if all(job in found for job in ids):
            return found
    out = {}
    for job in ids:
        done = _run(["scontrol", "-o", "show", "job", job])
        fields = dict(item.split("=", 1) for item in done.stdout.split() if "=" in item)
        reason = fields.get("Reason", "")
        out[job] = JobState(fields["JobState"], "" if reason == "None" else reason) if "JobState" in fields else GONE
    return out
