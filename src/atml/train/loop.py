"""The one training loop every atml experiment uses.

Experiments differ by model, data, step function and callbacks, never by a copy of this
loop (minGPT's trainer is the model). The loop owns what must be right everywhere:
checkpoints after every epoch (atomic), resume, metrics per epoch and phase, NaN
detection, progress bars and the one-line epoch summary.

Under ``torchrun`` the loop is data-parallel: :class:`Batches` shards every epoch with
torch's ``DistributedSampler`` (rank and world taken from the process group unless given),
the model is wrapped in ``DistributedDataParallel`` (SyncBatchNorm on GPUs), metrics are
summed across ranks, and only rank 0 writes checkpoints. Steps that update the weights
themselves or back-propagate into a subset of the parameters (the GAN's two updates, the
VAE's encoder-only updates) set ``Fit.ddp=False`` and average gradients with
:func:`sync_gradients`, the same all-reduce DDP performs.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from atml import timemap
from atml.distributed import distribute, rank_and_world, reduce_totals, sync_gradients, unwrap
from atml.errors import DivergedError
from atml.train import checkpoint

Batch = tuple[torch.Tensor, ...]
Phase = Literal["train", "val"]
PHASES: tuple[Phase, ...] = ("train", "val")


_FIELDS = ("stage", "epoch", "phase", "time_s", "images_per_s")


@dataclasses.dataclass
class EpochRecord:
    """One epoch of one phase of one training stage: where and when, and the epoch's means of what the step
    reported (``loss`` always; ``acc``, ``kl``, ``kl_per_dim`` (a list), ``grad_in`` (by block) as the step and its
    callbacks say). ``metrics.jsonl`` holds it flat, one JSON object per record (:meth:`to_json`)."""

    stage: str
    epoch: int
    phase: Phase
    values: dict[str, Any]
    """The step's numbers by name, ``loss`` first; a callback may add its own (``grad_in``)."""
    time_s: float = 0.0
    images_per_s: float | None = None

    def __getitem__(self, name: str) -> Any:
        """One of :attr:`values` (a KeyError names the record)."""
        if name not in self.values:
            raise KeyError(f"the {self.stage} {self.phase} record of epoch {self.epoch} has no {name!r} "
                           f"(it has {', '.join(self.values)})")
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        return name in self.values

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "epoch": self.epoch, "phase": self.phase, **self.values, "time_s": self.time_s,
                "images_per_s": self.images_per_s}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> EpochRecord:
        return cls(row.get("stage", "main"), int(row.get("epoch", 0)), row.get("phase", "train"),
                   {k: v for k, v in row.items() if k not in _FIELDS}, float(row.get("time_s") or 0.0),
                   row.get("images_per_s"))


class History(list[EpochRecord]):
    """What :func:`fit` returns: its :class:`EpochRecord` s, one per epoch and phase, in order. Ask it by phase:
    ``history.phase("val")``, ``history.last("val", "acc")``. ``History.of`` also reads ``metrics.jsonl`` rows."""

    @classmethod
    def of(cls, rows: Iterable[EpochRecord | Mapping[str, Any]]) -> History:
        return cls(r if isinstance(r, EpochRecord) else EpochRecord.from_json(r) for r in rows)

    def phase(self, phase: Phase) -> list[EpochRecord]:
        if phase not in PHASES:
            raise ValueError(f"phase={phase!r}: a history has {' and '.join(PHASES)} records")
        return [r for r in self if r.phase == phase]

    def values(self, phase: Phase, key: str) -> list[Any]:
        """``key`` of every ``phase`` record that has it, in epoch order."""
        return [r.values[key] for r in self.phase(phase) if key in r.values]

    def last(self, phase: Phase, key: str) -> Any:
        """``key`` of the last ``phase`` record (a KeyError names what is missing)."""
        records = self.phase(phase)
        if not records or key not in records[-1].values:
            raise KeyError(f"no {phase} record with {key!r} in this history ({len(records)} {phase} records)")
        return records[-1].values[key]
SUMMARY_METRICS = 3  # loss and the first two metrics a step reports, per phase, in the epoch line


@dataclasses.dataclass
class StepOutput:
    """What a step returns: the loss to minimise and named per-batch means to log.

    A metric may be a vector (e.g. KL per latent dimension); it is averaged element-wise
    over the epoch and written to ``metrics.jsonl`` as a list.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    optimized: bool = False
    """True when the step already updated the weights itself (e.g. a GAN's two alternating
    updates); the loop then only logs."""


StepFn = Callable[[torch.nn.Module, Batch], StepOutput]


def classification_step(model: torch.nn.Module, batch: Batch) -> StepOutput:
    """Cross-entropy (mean over the batch) and top-1 accuracy."""
    x, y = batch
    logits = model(x)  # (B, classes)
    loss = F.cross_entropy(logits, y)
    acc = (logits.argmax(dim=1) == y).float().mean()
    return StepOutput(loss, {"acc": acc})


class Recorder(Protocol):
    """Where epoch records go (a :class:`~atml.run_dir.RunDir`, or a list in tests)."""

    def log_metrics(self, record: dict[str, Any]) -> None: ...
    def read_metrics(self) -> list[dict[str, Any]]: ...
    def prune_metrics(self, keep: Callable[[dict[str, Any]], bool]) -> None: ...


class MemoryRecorder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def log_metrics(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def read_metrics(self) -> list[dict[str, Any]]:
        return list(self.records)

    def prune_metrics(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        self.records = [r for r in self.records if keep(r)]


class Batches:
    """Mini-batches over in-memory tensors, ordered by torch's ``DistributedSampler``.

    The order depends only on ``seed`` and the epoch (``set_epoch``, as with a
    DistributedSampler), so a resumed run sees the same batches without saved state. With
    ``world`` > 1 each rank takes its interleaved share and ``batch_size / world`` items
    per step, so the ranks' batches together are exactly the single-process batch.

    The tensors are decoded already (in memory, or memory-mapped from atml's dataset cache),
    so there is nothing to decode here: batches are index gathers (slices, which copy nothing,
    when the order is the stored one on one rank), pinned one at a time (``pin``) for
    non-blocking copies when the device is a GPU.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, *, shuffle: bool = False,
                 seed: int = 0, transform: Callable[[Batch], Batch] | None = None,
                 rank: int | None = None, world: int | None = None) -> None:
        if len({len(t) for t in tensors}) != 1:
            raise ValueError("all tensors of a Batches must have the same length")
        self.tensors = tuple(tensors)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.transform = transform
        here = rank_and_world()
        self.rank = here[0] if rank is None else rank
        self.world = here[1] if world is None else world
        self.epoch = 0
        self.pinned = False
        self.resident = False

    @property
    def num_samples(self) -> int:
        return len(self.tensors[0])

    @property
    def per_rank_batch(self) -> int:
        return max(1, self.batch_size // self.world)

    def __len__(self) -> int:
        return math.ceil(math.ceil(self.num_samples / self.world) / self.per_rank_batch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)

    def to(self, device: torch.device) -> Batches:
        """These batches with their tensors copied to ``device`` once: each batch is then a slice or an index gather
        there (the order drawn as before, so the batches are the same), with no copy from the host per step."""
        moved = copy.copy(self)
        moved.tensors = tuple(t.to(device) for t in self.tensors)
        moved.resident, moved.pinned = True, False
        return moved

    def pin(self) -> Batches:
        """Pin each batch as it is taken (never the whole tensors: they may be memory maps of any size)."""
        self.pinned = True
        return self

    def __iter__(self) -> Iterator[Batch]:
        if not self.shuffle and self.world == 1:  # in order on one rank: slices are views (no gather, no copy)
            for start in range(0, self.num_samples, self.per_rank_batch):
                batch = tuple(t[start:start + self.per_rank_batch] for t in self.tensors)
                if self.pinned:
                    batch = tuple(t.pin_memory() for t in batch)
                yield self.transform(batch) if self.transform else batch
            return
        indices: Any = range(self.num_samples)  # a sampler needs only len(): no dataset is built for it
        sampler: DistributedSampler[int] = DistributedSampler(indices, num_replicas=self.world, rank=self.rank,
                                                              shuffle=self.shuffle, seed=self.seed)
        sampler.set_epoch(self.epoch)
        order = torch.tensor(list(sampler), dtype=torch.long).to(self.tensors[0].device)  # one copy per epoch
        for idx in order.split(self.per_rank_batch):
            batch = tuple(t[idx].pin_memory() if self.pinned else t[idx] for t in self.tensors)
            yield self.transform(batch) if self.transform else batch


class Callback:
    """Hooks into the loop; override what you need."""

    def on_train_batch_start(self, epoch: int, step: int, steps_per_epoch: int) -> None: ...

    def on_after_backward(self, model: torch.nn.Module, epoch: int, step: int) -> None: ...

    def on_epoch_end(self, epoch: int, records: dict[str, EpochRecord]) -> None: ...


@dataclasses.dataclass
class Fit:
    """One training job: what to train, on what, for how long, and where to keep state."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train: Batches
    val: Batches | None
    epochs: int
    device: torch.device
    recorder: Recorder
    stage: str = "main"
    step: StepFn = classification_step
    scheduler: Any = None
    checkpoint_path: Path | None = None
    callbacks: Sequence[Callback] = ()
    progress: bool = False
    autocast: Callable[[], Any] | None = None
    say: Callable[[str], None] = print
    ddp: bool = True
    """Under torchrun, wrap the model in DistributedDataParallel; False: the step's gradients
    are averaged with :func:`sync_gradients` after the loop's backward instead."""


@dataclasses.dataclass
class EpochBudget:
    """Run at most ``epochs`` epochs of every stage, and note what each stage planned and took.

    For timing a course-scale run (``scripts/suite_timing.py``): each stage runs for real at
    full size, but only its first epochs, and the rest is computed from their measured time.
    """

    epochs: int
    stages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Per stage: name, planned and run epochs, and the wall seconds of the run epochs (train, val,
    callbacks and checkpoint)."""


_BUDGET: contextvars.ContextVar[EpochBudget | None] = contextvars.ContextVar("atml_epoch_budget", default=None)


@contextlib.contextmanager
def epoch_budget(epochs: int) -> Iterator[EpochBudget]:
    """Within the block, :func:`fit` runs at most ``epochs`` epochs per stage (see :class:`EpochBudget`)."""
    budget = EpochBudget(epochs)
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def fit(job: Fit) -> History:
    """Train ``job.epochs`` epochs (resuming from the checkpoint if one exists).

    Returns every record of this stage, earlier ones from a resumed run included.
    """
    start = _resume(job)
    budget = _BUDGET.get()
    last = job.epochs if budget is None else min(job.epochs, start + budget.epochs)
    if start < last:  # a stage a resumed run already finished copies nothing to the device
        job = _resident(job)
    if job.ddp and start < last:
        job = dataclasses.replace(job, model=distribute(job.model, job.device))
    seconds = 0.0
    steps = (last - start) * (len(job.train) + (len(job.val) if job.val is not None else 0))
    # One bar for the whole stage (a notebook keeps every bar it was shown: one per epoch and phase left dozens)
    bar = tqdm(total=steps, desc=job.stage, leave=False, disable=not job.progress or steps == 0, file=sys.stderr)
    writer = checkpoint.Writer()  # each epoch's checkpoint is written while the next one trains
    try:
        for epoch in range(start + 1, last + 1):
            epoch_started = time.perf_counter()
            _epoch(job, epoch, bar, writer)
            seconds += time.perf_counter() - epoch_started  # train, val, callbacks and the checkpoint's copy
        writer.wait()  # the last checkpoint on disk (or its error raised) before the stage returns
    except BaseException:
        writer.settle()  # on disk before the error propagates; a failed write must not hide the error itself
        raise
    finally:
        bar.close()
    if budget is not None:
        budget.stages.append({"stage": job.stage, "planned_epochs": job.epochs - start, "run_epochs": last - start,
                              "seconds": seconds})
    return History.of(r for r in job.recorder.read_metrics() if r.get("stage") == job.stage)


RESIDENT_SHARE = 0.25
"""A stage's data (training and validation tensors together) is copied to the GPU once, and its batches taken there,
when it takes at most this share of the device's free memory as the stage starts (FashionMNIST's 47 MB, CIFAR-10's
150 MB at 32 px); a larger one stays on the host and each batch is pinned and copied as it is taken."""


def _free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device; None elsewhere (the CPU's batches are already where the model is)."""
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


def _resident(job: Fit) -> Fit:
    """``job`` with its batches moved to its device when they fit (:data:`RESIDENT_SHARE`)."""
    free = _free_memory(job.device)
    parts = [b for b in (job.train, job.val) if b is not None]
    if free is None or sum(b.nbytes for b in parts) > RESIDENT_SHARE * free:
        return job
    with timemap.span("data"):
        return dataclasses.replace(job, train=job.train.to(job.device),
                                   val=job.val.to(job.device) if job.val is not None else None)


def _epoch(job: Fit, epoch: int, bar: Any, writer: checkpoint.Writer) -> None:
    """One epoch: train, validate, schedule, callbacks, then its records and its checkpoint (written by ``writer``)."""
    job.train.set_epoch(epoch)
    records: dict[str, EpochRecord] = {"train": _run_epoch(job, epoch, train=True, bar=bar, writer=writer)}
    if job.val is not None:
        records["val"] = _run_epoch(job, epoch, train=False, bar=bar, writer=writer)
    if job.scheduler is not None:
        job.scheduler.step()
    for callback in job.callbacks:  # may add fields to records, or raise to reject this epoch
        callback.on_epoch_end(epoch, records)
    # Records first, checkpoint second: a crash in between leaves a record past the checkpoint,
    # which resuming prunes, never a checkpointed epoch without its record.
    for record in records.values():
        job.recorder.log_metrics(record.to_json())
    if job.checkpoint_path is not None and rank_and_world()[0] == 0:  # rank 0 writes for all
        writer.save(job.checkpoint_path, model=unwrap(job.model), optimizer=job.optimizer, epoch=epoch,
                    scheduler=job.scheduler)
    job.say(_summary(job, epoch, records))


def _resume(job: Fit) -> int:
    done = 0
    if job.checkpoint_path is not None and job.checkpoint_path.exists():
        state = checkpoint.load(job.checkpoint_path)
        done = checkpoint.restore(state, model=unwrap(job.model), optimizer=job.optimizer, scheduler=job.scheduler)
        if done < job.epochs:
            job.say(f"[{job.stage}] resuming after epoch {done} from {job.checkpoint_path}")
    job.recorder.prune_metrics(lambda r: r.get("stage") != job.stage or r.get("epoch", 0) <= done)
    return done


FINITE_CHECK_EVERY = 25
"""On a GPU the loss is checked for NaN/Inf every this many steps (and at the epoch's end): a check
waits for the device, and waiting every step would stop the host from queueing the next one."""


def _run_epoch(job: Fit, epoch: int, *, train: bool, bar: Any,
               writer: checkpoint.Writer | None = None) -> EpochRecord:
    job.model.train(train)
    batches = job.train if train else job.val
    if batches is None:
        raise ValueError(f"{job.stage}: no {'training' if train else 'validation'} batches to run")
    totals = _Totals(torch.float32 if job.device.type == "mps" else torch.float64)  # MPS has no float64; kept on
    # the device until the epoch ends
    watch = _FiniteWatch(job, epoch, settle=writer.settle if writer else None)
    seen = 0
    started = time.perf_counter()
    bar.set_description(f"{job.stage} {'train' if train else 'val'} {epoch}/{job.epochs}", refresh=False)
    with torch.set_grad_enabled(train):
        for step_index, batch in enumerate(_on_device(batches, job.device)):
            bar.update(1)
            if train:
                for callback in job.callbacks:
                    callback.on_train_batch_start(epoch, step_index, len(batches))
            with timemap.span("model"):
                out = _step(job, batch, epoch, step_index, train)
            watch.add(out.loss, step_index)
            n = len(batch[0])
            seen += n
            totals.add({"loss": out.loss, **out.metrics}, n)
    watch.check()
    sums = {name: total.cpu() for name, total in totals.by_name().items()}  # the epoch's one wait for the device
    sums, seen = reduce_totals(sums, seen)
    elapsed = time.perf_counter() - started
    return EpochRecord(job.stage, epoch, "train" if train else "val",
                       {name: (total / max(seen, 1)).tolist() for name, total in sums.items()}, elapsed,
                       seen / elapsed if elapsed > 0 else None)


def _on_device(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    """Each batch moved to ``device`` (non-blocking), the time to take and move it counted as data work."""
    iterator = iter(batches)
    while True:
        with timemap.span("data"):
            batch = next(iterator, None)
            if batch is None:
                return
            batch = tuple(t.to(device, non_blocking=True) for t in batch)
        yield batch


def _step(job: Fit, batch: Batch, epoch: int, step_index: int, train: bool) -> StepOutput:
    """The step's forward and, when training (and the step did not update the weights itself), its update."""
    with job.autocast() if job.autocast else contextlib.nullcontext():
        out = job.step(job.model, batch)
    if train and not out.optimized:
        job.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if not job.ddp:
            sync_gradients(job.model.parameters())
        for callback in job.callbacks:
            callback.on_after_backward(job.model, epoch, step_index)
        job.optimizer.step()
    return out


class _Totals:
    """An epoch's running metric totals, each step's values times its batch size, summed on the device in ``dtype``:
    the scalar metrics on the loss's device as one stacked vector (a few tensor operations per step, not three per
    metric), the others (a KL per dimension, a scalar on another device) one by one. Each element is the same product
    and sum as when added alone."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.names: list[str] = []  # every metric, in the step's order (the same at every step)
        self.vector: torch.Tensor | None = None
        self.others: dict[str, torch.Tensor] = {}

    def add(self, values: dict[str, Any], n: int) -> None:
        tensors = [(name, torch.as_tensor(value).detach()) for name, value in values.items()]
        if not self.names:
            self.names = [name for name, _ in tensors]
        elif [name for name, _ in tensors] != self.names:
            raise ValueError(f"a training step returned the metrics {[n for n, _ in tensors]} after {self.names}; a "
                             "step must return the same metrics, in the same order, at every step of an epoch")
        device = tensors[0][1].device  # the loss's: a scalar elsewhere (a weight kept on the host) adds up alone
        scalars = [t.to(self.dtype) for _, t in tensors if t.dim() == 0 and t.device == device]
        if scalars:
            stacked = torch.stack(scalars) * n
            self.vector = stacked if self.vector is None else self.vector + stacked
        for name, tensor in tensors:
            if tensor.dim() or tensor.device != device:
                value = tensor.to(self.dtype) * n
                self.others[name] = self.others[name] + value if name in self.others else value

    def by_name(self) -> dict[str, torch.Tensor]:
        """Each metric's total, in the step's order."""
        out, index = {}, 0
        for name in self.names:
            if name in self.others:
                out[name] = self.others[name]
            else:
                assert self.vector is not None
                out[name] = self.vector[index]
                index += 1
        return out


class _FiniteWatch:
    """Stops the run at the first NaN/Inf loss, naming its epoch and step.

    On the CPU every step is checked at once. On other devices a flag and the first bad
    step stay on the device and are read every :data:`FINITE_CHECK_EVERY` steps, so checking
    never makes the host wait each step; the error still names the first bad step.
    """

    def __init__(self, job: Fit, epoch: int, every: int | None = None,
                 settle: Callable[[], object] | None = None) -> None:
        self.job, self.epoch = job, epoch
        self.settle = settle  # waits for a checkpoint still being written, so the error can say it is kept
        self.every = every or (1 if job.device.type == "cpu" else FINITE_CHECK_EVERY)
        self.first_bad: torch.Tensor | None = None  # (step, loss) of the first non-finite loss, or step -1
        self.pending = 0

    def add(self, loss: torch.Tensor, step: int) -> None:
        if self.every == 1:  # the CPU: one read of the value, no tensor bookkeeping
            value = float(loss.detach().reshape(-1)[0])
            if not math.isfinite(value):
                self._diverged(step, value)
            return
        loss = loss.detach().float().reshape(-1)[:1]
        bad = ~torch.isfinite(loss)
        entry = torch.cat([torch.full_like(loss, step), loss])
        if self.first_bad is None:  # "no bad step yet", made on the device (a tensor copied from the host would wait)
            self.first_bad = torch.cat([torch.full_like(loss, -1.0), torch.zeros_like(loss)])
        self.first_bad = torch.where((self.first_bad[0] < 0) & bad, entry, self.first_bad)
        self.pending += 1
        if self.pending >= self.every:
            self.check()

    def check(self) -> None:
        self.pending = 0
        if self.first_bad is None:
            return
        step, value = self.first_bad.tolist()
        if step >= 0:
            self._diverged(int(step), value)

    def _diverged(self, step: int, value: float) -> None:
        job = self.job
        if self.settle is not None:
            self.settle()
        kept = job.checkpoint_path if job.checkpoint_path and job.checkpoint_path.exists() else None
        where = f"last good checkpoint kept at {kept}" if kept else "no checkpoint had been written yet"
        raise DivergedError(f"[{job.stage}] loss became {value} at epoch {self.epoch}, step {step}; "
                            f"{where}. Lower the learning rate or check the data.")


def _summary(job: Fit, epoch: int, records: dict[str, EpochRecord]) -> str:
    parts = [f"[{job.stage}] epoch {epoch}/{job.epochs}"]
    for phase, record in records.items():
        scalars = [(k, v) for k, v in record.values.items() if isinstance(v, float)]
        parts += [f"{phase}_{name}={value:.4f}" for name, value in scalars[:SUMMARY_METRICS]]
    parts.append(f"{records['train'].time_s:.1f}s")
    return " ".join(parts)
