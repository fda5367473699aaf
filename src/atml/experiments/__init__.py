"""One package per experiment family, one module per experiment; :func:`registry` lists them all.

Each experiment module holds its ``Config``, ``PRESETS``, ``run``, ``discuss`` (and ``bench``)
and one ``EXPERIMENT`` record; each family package lists its experiments in ``EXPERIMENTS``
and keeps what they share in ``common``.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from atml.registry import Registry

FAMILIES = ("resnet", "vit", "vae", "clip", "gan")
"""In the order ``atml demo`` runs them and the report shows them."""


def registry() -> Registry:
    """Every experiment atml ships, in the order ``atml demo`` runs and reports them."""
    import importlib

    reg = Registry()
    for family in FAMILIES:
        for experiment in importlib.import_module(f"atml.experiments.{family}").EXPERIMENTS:
            reg.register(experiment)
    return reg


class _CallablePackage(types.ModuleType):
    """``atml.experiments()`` is the public API's list of experiments, and ``atml.experiments`` is also
    this package: once the package is imported, Python binds the name ``atml.experiments`` to it, so the
    package answers the call itself (the same function, :func:`atml.api.experiments`)."""

    def __call__(self) -> Any:
        from atml.api import experiments

        return experiments()


sys.modules[__name__].__class__ = _CallablePackage
