"""What ``atml list`` prints and the names the CLI checks, without importing an experiment.

The experiment modules import torch, torchvision and scikit-learn (seconds on a small machine); the answers a user
waits on at the prompt (``atml list``, an unknown experiment or preset) need only each experiment's name, summary and
presets. They are kept in ``catalog.json`` beside this module, generated from the registry itself
(``python scripts/update_readme.py`` rewrites it; a test fails when it is out of date), so the registry stays the one
place an experiment is declared.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from atml import config as config_lib
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


def entries() -> list[Entry]:
    """Every experiment, in the registry's order, from ``catalog.json``."""
    return [Entry(e["name"], e["summary"], tuple(e["presets"]), tuple(e["keys"]), tuple(e["aliases"]))
            for e in json.loads(FILE.read_text())]


def check(name: str, preset: str | None = None, overrides: Sequence[str] = ()) -> None:
    """Refuse an unknown experiment, an unknown preset of a known one, or a ``KEY=VALUE`` whose key its config does
    not have, in one line with the valid names (the values are checked with the config itself)."""
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


def generate() -> str:
    """``catalog.json``'s text from the registry (imports every experiment)."""
    from atml.suite import registry

    rows = [{"name": e.name, "summary": e.summary, "presets": list(e.presets),
             "keys": config_lib.field_names(e.config_cls), "aliases": sorted(getattr(e.config_cls, "ALIASES", {}))}
            for e in registry()]
    return json.dumps(rows, indent=1) + "\n"
