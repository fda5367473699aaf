"""An explicit registry of experiments, after torchvision's ``register_model``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from atml.config import RunConfig
from atml.errors import UsageError

if TYPE_CHECKING:
    from atml.context import RunContext
    from atml.references import Reference
    from atml.results import Bench, Metrics, Results, RunResults

C = TypeVar("C", bound=RunConfig)


@dataclasses.dataclass(frozen=True)
class Experiment(Generic[C]):
    """Everything the CLI needs to run, describe and benchmark one experiment whose config is a ``C``."""

    name: str
    summary: str
    config_cls: type[C]
    presets: Mapping[str, Mapping[str, Any]]
    run: Callable[[C, RunContext], Results]
    """``run(cfg, ctx) -> results`` (see :mod:`atml.suite`): ``cfg`` an instance of ``config_cls``, ``ctx`` the
    :class:`atml.context.RunContext` (mypy checks both; the context is imported for the checker only, so the
    registry, and the torch-free config modules above it, load without torch)."""
    bench: Callable[[C], Bench] | None = None
    """``atml bench``: atml's path beside the naive one (:class:`atml.results.Bench`)."""
    discuss: Callable[[RunResults], list[str]] | None = None
    """Sentences for the report, written from a run's own results."""
    references: tuple[Reference, ...] = ()
    """Published figures this experiment's runs are compared with (:mod:`atml.references`)."""
    data: type[Any] | None = None
    """The experiment's own results data (a dataclass it keeps with :meth:`Results.keep` and reads back)."""
    readme_row: Callable[[Metrics, Any], str] | None = None
    """The "result" cell of README's demo table from a demo run's metrics and its ``data`` (an instance of the
    experiment's ``data`` class, None without one) (:mod:`atml.reporting.readme`)."""


class Registry:
    def __init__(self) -> None:
        self._items: dict[str, Experiment[Any]] = {}

    def register(self, exp: Experiment[Any]) -> Experiment[Any]:
        if exp.name in self._items:
            raise ValueError(f"experiment {exp.name!r} is registered twice")
        self._items[exp.name] = exp
        return exp

    def get(self, name: str) -> Experiment[Any]:
        if name not in self._items:
            raise UsageError(f"unknown experiment {name!r}; valid experiments: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __iter__(self) -> Iterator[Experiment[Any]]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)
