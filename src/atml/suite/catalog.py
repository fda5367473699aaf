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
from pathlib import Path

from atml.errors import UsageError

FILE = Path(__file__).with_name("catalog.json")


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    summary: str
    presets: tuple[str, ...]


def entries() -> list[Entry]:
    """Every experiment, in the registry's order, from ``catalog.json``."""
    return [Entry(e["name"], e["summary"], tuple(e["presets"])) for e in json.loads(FILE.read_text())]


def check(name: str, preset: str | None = None) -> None:
    """Refuse an unknown experiment (or an unknown preset of a known one) in one line, with the valid names."""
    known = {e.name: e for e in entries()}
    if name not in known:
        raise UsageError(f"unknown experiment {name!r}; valid experiments: {', '.join(known)}")
    if preset is not None and preset not in known[name].presets:
        raise UsageError(f"unknown preset {preset!r}; valid presets: {', '.join(known[name].presets)}")


def generate() -> str:
    """``catalog.json``'s text from the registry (imports every experiment)."""
    from atml.suite import registry

    rows = [{"name": e.name, "summary": e.summary, "presets": list(e.presets)} for e in registry()]
    return json.dumps(rows, indent=1) + "\n"
