"""Where a run's time goes: its wall seconds split by the kind of work, measured as the run goes.

While :func:`recording` is active, every outermost ``nn.Module`` call (any model's forward,
anywhere: training, extraction, Score-CAM's masked passes) and every :func:`span` count their
wall time to one kind of work; the time outside them is ``other`` (setup, Python between the
steps, what no span names). Time is counted once: a span inside another pauses the
outer one, and a forward inside a ``model`` span (the training step's) is part of that span.

Kinds (:data:`KINDS`):

- ``build``: building models and loading their weights;
- ``model``: forward passes, and the training step's backward and optimizer update;
- ``data``: reading and decoding datasets, taking batches and moving them to the device;
- ``analysis``: host analyses (t-SNE, UMAP, probes, k-NN, CKA, statistics);
- ``figures``: drawing and saving figures;
- ``writing``: results, metrics, checkpoints and views written to the run folder.

On CUDA the host's ``model`` seconds are the time to queue the work, not to run it; the
device's own seconds inside the ``model`` spans (CUDA events, read without waiting) are
``model_device_s``. Nothing is timed when no recording is active (one context-variable read).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, ParamSpec, TypeVar

import torch

Kind = Literal["build", "model", "data", "analysis", "figures", "writing"]
KINDS: tuple[Kind, ...] = ("build", "model", "data", "analysis", "figures", "writing")
P = ParamSpec("P")
R = TypeVar("R")
_FOLD_EVERY = 256  # CUDA event pairs kept before the finished ones are summed


@dataclasses.dataclass
class _Frame:
    kind: Kind
    since: float
    depth: int = 0


@dataclasses.dataclass
class TimeMap:
    """Seconds by kind of work (exclusive: each second counted once), and the device's seconds of the model spans."""

    seconds: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(KINDS, 0.0))
    started: float = dataclasses.field(default_factory=time.perf_counter)
    wall_s: float | None = None
    model_device_s: float | None = None
    _stack: list[_Frame] = dataclasses.field(default_factory=list)
    _events: list[tuple[Any, Any]] = dataclasses.field(default_factory=list)
    _device_ms: float = 0.0

    def enter(self, kind: Kind) -> None:
        now = time.perf_counter()
        if self._stack:
            top = self._stack[-1]
            if top.kind == kind:  # the same work, nested (a forward inside the training step): counted once
                top.depth += 1
                return
            self.seconds[top.kind] += now - top.since
        self._stack.append(_Frame(kind, now))
        if kind == "model" and torch.cuda.is_initialized():
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            self._events.append((start, None))

    def exit(self, kind: Kind) -> None:
        if not self._stack or self._stack[-1].kind != kind:
            return  # an exit without its enter (a hook installed mid-call): nothing to count
        now = time.perf_counter()
        top = self._stack[-1]
        if top.depth:
            top.depth -= 1
            return
        self.seconds[kind] += now - top.since
        self._stack.pop()
        if self._stack:
            self._stack[-1].since = now
        if kind == "model" and self._events and self._events[-1][1] is None:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events[-1] = (self._events[-1][0], end)
            if len(self._events) >= _FOLD_EVERY:
                self._fold(wait=False)

    def _fold(self, wait: bool) -> None:
        """Add the finished event pairs' device time (all of them, waiting for the device, when ``wait``)."""
        kept = []
        for start, end in self._events:
            if end is not None and (wait or end.query()):
                end.synchronize()
                self._device_ms += start.elapsed_time(end)
            elif end is not None:
                kept.append((start, end))
        self._events = kept

    def finish(self) -> None:
        self.wall_s = time.perf_counter() - self.started
        if self._events or self._device_ms:
            self._fold(wait=True)
            self.model_device_s = self._device_ms / 1000

    def to_json(self) -> dict[str, float | None]:
        """``{kind}_s`` for every kind, ``other_s`` (the rest of the wall time), ``wall_s`` and ``model_device_s``."""
        wall = self.wall_s if self.wall_s is not None else time.perf_counter() - self.started
        out: dict[str, float | None] = {f"{kind}_s": round(self.seconds[kind], 4) for kind in KINDS}
        out["other_s"] = round(max(wall - sum(self.seconds.values()), 0.0), 4)
        out["wall_s"] = round(wall, 4)
        out["model_device_s"] = None if self.model_device_s is None else round(self.model_device_s, 4)
        return out


_MAP: contextvars.ContextVar[TimeMap | None] = contextvars.ContextVar("atml_time_map", default=None)


def _before_forward(module: torch.nn.Module, args: Any) -> None:
    if (time_map := _MAP.get()) is not None and not torch.compiler.is_compiling():
        time_map.enter("model")


def _after_forward(module: torch.nn.Module, args: Any, output: Any) -> None:
    if (time_map := _MAP.get()) is not None and not torch.compiler.is_compiling():
        time_map.exit("model")


@contextlib.contextmanager
def span(kind: Kind) -> Iterator[None]:
    """Count the block's wall time to ``kind`` (when a recording is active)."""
    time_map = _MAP.get()
    if time_map is None:
        yield
        return
    time_map.enter(kind)
    try:
        yield
    finally:
        time_map.exit(kind)


def counted(kind: Kind) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function so its calls count to ``kind`` (see :func:`span`)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with span(kind):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


@contextlib.contextmanager
def recording() -> Iterator[TimeMap]:
    """Map the block's time by kind of work (global forward hooks while it runs); read the map after the block."""
    time_map = TimeMap()
    token = _MAP.set(time_map)
    hooks = [torch.nn.modules.module.register_module_forward_pre_hook(_before_forward),
             torch.nn.modules.module.register_module_forward_hook(_after_forward, always_call=True)]
    try:
        yield time_map
    finally:
        for hook in hooks:
            hook.remove()
        _MAP.reset(token)
        time_map.finish()
