"""What ``atml list`` prints and the names the CLI checks, without importing an experiment.

The experiment modules import torch, torchvision and scikit-learn (seconds on a small machine); the answers a user
waits on at the prompt (``atml list``, an unknown experiment or preset) need only each experiment's name, summary and
presets. They are kept in ``catalog.json`` beside this module, generated from the registry itself
(``python scripts/update_readme.py`` rewrites it; a test fails when it is out of date), so the registry stays the one
place an experiment is declared.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atml import config as config_lib
from atml.config import RunConfig
from atml.errors import UsageError

FILE = Path(__file__).with_name("catalog.json")


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    summary: str
    presets: tuple[str, ...]
    keys: tuple[str, ...] = ()
    """The config's keys, in its order."""
    aliases: tuple[str, ...] = ()
    """Other libraries' words for some keys (``ALIASES``)."""
    config: str = ""
    """``module:Class`` of its config, in the family's torch-free ``config`` module."""
    preset_table: str = ""
    """``module:NAME`` of its presets, in the same module."""

    def build(self, preset: str, overrides: Sequence[str]) -> RunConfig:
        """The config of ``preset`` with ``overrides``, its values checked (:meth:`RunConfig.check_values`) and its
        model, weights and data names not (they need the model libraries)."""
        cls: type[RunConfig] = _resolve(self.config)
        return config_lib.build(cls, _resolve(self.preset_table), preset, overrides, name=self.name, sources=False)


def entries() -> list[Entry]:
    """Every experiment, in the registry's order, from ``catalog.json``."""
    return [Entry(e["name"], e["summary"], tuple(e["presets"]), tuple(e["keys"]), tuple(e["aliases"]), e["config"],
                  e["preset_table"])
            for e in json.loads(FILE.read_text())]


def _resolve(where: str) -> Any:
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module), name)


def check(name: str, preset: str | None = None, overrides: Sequence[str] = (), *, values: bool = True) -> None:
    """Refuse an unknown experiment, an unknown preset of a known one, a ``KEY=VALUE`` whose key its config does
    not have or whose value it does not take, in one line with the valid names or range. Imports the experiment's
    config module only (no torch). ``preset=None`` (a resumed run) or ``values=False`` (a sweep, whose grid may
    change what a value must be) checks the names and keys only."""
    known = {e.name: e for e in entries()}
    if name not in known:
        raise UsageError(f"unknown experiment {name!r}; valid experiments: {', '.join(known)}")
    entry = known[name]
    if preset is not None and preset not in entry.presets:
        raise UsageError(f"unknown preset {preset!r}; valid presets: {', '.join(entry.presets)}")
    for text in overrides:
        key = config_lib.parse_override(text)[0]
        if key.partition(".")[0] not in (*entry.keys, *entry.aliases):
            raise config_lib.unknown_key(key, list(entry.keys), name)
    if preset is not None and values:
        entry.build(preset, overrides)


def generate() -> str:
    """``catalog.json``'s text from the registry (imports every experiment)."""
    from atml.suite import registry

    rows = [{"name": e.name, "summary": e.summary, "presets": list(e.presets),
             "keys": config_lib.field_names(e.config_cls), "aliases": sorted(getattr(e.config_cls, "ALIASES", {})),
             "config": f"{e.config_cls.__module__}:{e.config_cls.__qualname__}", "preset_table": _where(e.presets,
                                                                                                         e.config_cls)}
            for e in registry()]
    return json.dumps(rows, indent=1) + "\n"


def _where(presets: object, config_cls: type) -> str:
    """``module:NAME`` of the presets table, found in its config's module (the one place it is defined)."""
    module = importlib.import_module(config_cls.__module__)
    names = [name for name, value in vars(module).items() if value is presets]
    if len(names) != 1:
        raise ValueError(f"the presets of {config_cls.__qualname__} are not one table of {module.__name__}")
    return f"{module.__name__}:{names[0]}"
