"""A sweep's grid: the spec (a YAML file or command-line flags), checked and expanded into cells before
anything is submitted.

A spec names one experiment and preset, the keys to vary (``grid``: the cartesian product of
their values), optional explicit ``cells`` added to the product, the number of ``seeds`` and
fixed overrides for every cell (``set``)::

    experiment: compare.probe
    preset: smoke
    seeds: 2
    set: {batch_size: 32}
    grid:
      models: [[digits-resnet-small], [vit-digits]]
      data: [generated-cifar10, digits]
    cells:
      - {models: [digits-resnet], data: digits}

Every cell's config is built and validated here, the way ``atml run --set`` builds one, so an
unknown key or a value the config refuses is one line naming the cell before any job runs.
Cells hold the *resolved* values (as ``config.yaml`` would), so the same grid written in YAML or
with ``--grid`` is the same sweep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from atml import config as config_lib
from atml.errors import Option, Placeholder, UsageError
from atml.registry import Experiment, Registry

SPEC_KEYS = ("experiment", "preset", "name", "seeds", "set", "grid", "cells")
"""The keys a spec file may have."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the sweep: its folder name and the values of the keys the sweep varies."""

    name: str
    values: dict[str, Any]
    """Resolved values of the varying keys (``seed`` among them when there are several seeds)."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A checked spec: the experiment, the preset, fixed overrides and the cells, in a canonical form."""

    experiment: str
    preset: str
    name: str
    fixed: dict[str, Any]
    """Resolved values of the ``set`` keys, the same in every cell."""
    keys: list[str]
    """The varying keys, in the spec's order (``seed`` last when there are several seeds)."""
    cells: list[Cell]
    column: str = ""
    """The key the report's grid tables spread across columns: the grid's last key other than the seed."""

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "preset": self.preset, "name": self.name, "fixed": self.fixed,
                "keys": self.keys, "column": self.column,
                "cells": [{"name": c.name, "values": c.values} for c in self.cells]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sweep:
        return cls(data["experiment"], data["preset"], data["name"], dict(data["fixed"]), list(data["keys"]),
                   [Cell(c["name"], dict(c["values"])) for c in data["cells"]], data.get("column", ""))

    def same_grid(self, other: Sweep) -> bool:
        """Whether ``other`` runs the same cells with the same settings (so one folder can hold both)."""
        mine, theirs = self.to_json(), other.to_json()
        return json.dumps(mine, sort_keys=True) == json.dumps(theirs, sort_keys=True)


@dataclasses.dataclass
class Request:
    """A spec as given, before checking: from a YAML file, the command line, or both (flags add to the file)."""

    experiment: str
    preset: str | None = None
    name: str | None = None
    seeds: int | None = None
    fixed: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    """``set`` overrides: ``(key, value)`` with text values from the command line (read as ``--set`` reads them)."""
    grid: list[tuple[str, list[Any]]] = dataclasses.field(default_factory=list)
    cells: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    source: str = "the command line"
    """Where the spec came from, for messages."""

    def vary(self, key: str, values: list[Any]) -> None:
        """Add a grid key (``--grid``, ``grid=``) to the spec's; a key listed twice is refused."""
        if key in (k for k, _ in self.grid):
            raise UsageError(f"grid key {key!r} is given twice (or is already in {self.source}); list its values "
                             "once")
        self.grid.append((key, values))

    def given(self, preset: str | None, seeds: int | None, name: str | None) -> None:
        """Options given beside a spec file take the place of its own."""
        self.preset = preset or self.preset
        self.seeds = seeds if seeds is not None else self.seeds
        self.name = name or self.name


class Text(str):
    """A value typed on the command line: read as ``--set`` reads it (YAML, or verbatim for text options)."""


def read_spec(path: Path) -> Request:
    """A spec file, checked for its shape (the values are checked by :func:`expand`)."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UsageError(f"cannot read the sweep spec {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(f"{path} is not valid YAML ({where}{problem}); see 'atml sweep --help' for the spec "
                         "format") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must be a YAML mapping with experiment:, preset:, grid: ...; see "
                         "docs/sweeps.md ('Grids and clusters')")
    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        import difflib

        said = [str(k) + (f" (did you mean {close[0]}?)" if (close := difflib.get_close_matches(str(k), SPEC_KEYS, 1))
                          else "") for k in unknown]
        raise UsageError(f"{path}: unknown key(s) {', '.join(said)}; a spec has {', '.join(SPEC_KEYS)}")
    if not isinstance(data.get("experiment"), str):
        raise UsageError(f"{path}: experiment: is missing; name one from 'atml list'")
    grid = data.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise UsageError(f"{path}: grid: must map each key to a list of values, e.g. grid: {{data: [digits, "
                         "generated-cifar10]}}")
    cells = data.get("cells") or []
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise UsageError(f"{path}: cells: must be a list of mappings, e.g. cells: [{{data: digits, epochs: 2}}]")
    fixed = data.get("set") or {}
    if not isinstance(fixed, dict):
        raise UsageError(f"{path}: set: must be a mapping of config keys to values")
    seeds = data.get("seeds")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int)):
        raise UsageError(f"{path}: seeds: {seeds!r} is not an integer")
    return Request(data["experiment"], _text_or_none(data.get("preset"), "preset", path),
                   _text_or_none(data.get("name"), "name", path), seeds, list(fixed.items()),
                   [(str(k), list(v)) for k, v in grid.items()], [dict(c) for c in cells], str(path))


def _text_or_none(value: Any, key: str, path: Path) -> str | None:
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{path}: {key}: must be text, got {value!r}")
    return value


def parse_grid(item: str) -> tuple[str, list[Text]]:
    """``--grid KEY=V1,V2`` (commas inside brackets belong to the value) or ``--grid KEY=[a,b]|[c,d]``."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(Option("grid", item),
                         " is not of the form KEY=V1,V2 (or KEY=[a,b]|[c,d] for list values)")
    values = _split_top(raw, "|") if "|" in raw else _split_top(raw, ",")
    if not values or any(not v.strip() for v in values):
        raise UsageError(Option("grid", item), f" has an empty value; list the values as {key.strip()}=V1,V2")
    return key.strip(), [Text(v.strip()) for v in values]


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside brackets and quotes."""
    parts, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


def expand(request: Request, reg: Registry) -> Sweep:
    """Check the spec and every cell's config; the cells in grid order (explicit cells after the product)."""
    exp = reg.get(request.experiment)
    preset = request.preset or config_lib.DEFAULT_PRESET
    if preset not in exp.presets:
        raise UsageError(f"unknown preset {preset!r} for {exp.name}; valid presets: {', '.join(exp.presets)}")
    if request.name is not None and (not request.name or slug(request.name) != request.name):
        raise UsageError(Option("name", request.name), " is not a folder name; use letters, digits, '.', '_', "
                         "'+', '-'")
    seeds = 1 if request.seeds is None else request.seeds
    if isinstance(seeds, bool) or seeds < 1:
        raise UsageError(Option("seeds", seeds), " is not valid; use an integer >= 1")
    for key, listed in request.grid:
        if not listed:
            raise UsageError(f"{request.source}: grid key {key!r} has no values; list at least one")
    if not request.grid and not request.cells and seeds == 1:
        raise UsageError(f"{request.source}: the grid is empty; give ", Option("grid", Placeholder("KEY=V1,V2")),
                         ", cells, or ", Option("seeds", Placeholder("N")), " with N > 1 (one run is 'atml run')")
    grid_keys = [key for key, _ in request.grid]
    _check_keys(request, grid_keys, seeds)
    # --set values are checked with each cell's own values (data=folder wants the data_dir a grid gives)
    base = _apply(config_lib.build(exp.config_cls, exp.presets, preset, name=exp.name), request.fixed, exp, "set",
                  validate=False)
    fixed = {key: config_lib.get_value(base, key) for key, _ in request.fixed}
    keys = grid_keys + list(dict.fromkeys(k for cell in request.cells for k in cell if k not in grid_keys))
    combos = [dict(zip(grid_keys, values, strict=True))
              for values in itertools.product(*(v for _, v in request.grid))] if request.grid else []
    combos += [dict(cell) for cell in request.cells]
    if not combos:  # --seeds N alone: N cells of the one config
        combos = [{}]
    cells: list[tuple[dict[str, Any], Any]] = []
    for combo in combos:
        cfg = _apply(base, list(combo.items()), exp, _describe(combo))
        for s in range(seeds):
            values = {key: config_lib.get_value(cfg, key) for key in keys}
            if seeds > 1:
                values["seed"] = cfg.seed + s
            cells.append((values, dataclasses.replace(cfg, seed=cfg.seed + s)))
    _check_distinct(request, cells)
    all_keys = keys + (["seed"] if seeds > 1 else [])
    varying = [k for k in all_keys if len({json.dumps(v[k], sort_keys=True) for v, _ in cells if k in v}) > 1]
    named = _names([{k: v[k] for k in varying if k in v} for v, _ in cells])
    return Sweep(exp.name, preset, request.name or f"{exp.name}-{preset}", fixed, all_keys,
                 [Cell(name, values) for name, (values, _) in zip(named, cells, strict=True)],
                 next((k for k in reversed(grid_keys) if k != "seed" and k in varying), ""))


def _check_distinct(request: Request, cells: list[tuple[dict[str, Any], Any]]) -> None:
    """Two cells with the same config are refused, naming both."""
    seen: dict[str, dict[str, Any]] = {}
    for values, cfg in cells:
        key = json.dumps(config_lib.to_dict(cfg), sort_keys=True)
        if key in seen:
            raise UsageError(f"{request.source}: cells {_describe(seen[key])} and {_describe(values)} are the same "
                             "config; list each cell once")
        seen[key] = values


def _check_keys(request: Request, grid_keys: list[str], seeds: int) -> None:
    """A key given two ways (``--set`` and the grid, ``--seeds`` and a grid over ``seed``) is refused, naming both."""
    varied = set(grid_keys) | {k for cell in request.cells for k in cell}
    both = [key for key, _ in request.fixed if key in varied]
    if both:
        raise UsageError(f"{request.source}: {', '.join(both)} is both fixed (a set value) and varied (in the grid or "
                         "the cells); give each key one way")
    if seeds > 1 and "seed" in varied:
        raise UsageError(f"{request.source}: ", Option("seeds", seeds), " and a grid over seed both choose seeds; "
                         "drop ", Option("seeds"), " or the seed values")


def _apply(cfg: Any, items: Sequence[tuple[str, Any]], exp: Experiment[Any], where: str, *,
           validate: bool = True) -> Any:
    try:
        for key, value in items:
            if isinstance(value, Text):
                cfg = config_lib.apply_overrides(cfg, [f"{key}={value}"], validate=False)
            else:
                cfg = config_lib.apply_values(cfg, {key: value}, name=exp.name, validate=False)
        if validate:
            cfg.validate()
        return cfg
    except UsageError as err:
        raise UsageError(f"sweep cell {where}: {err}") from err


def _describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items()) or "(no keys)"


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def slug(value: Any) -> str:
    """A value as folder-name text: lists joined with ``+``, other characters as ``-``."""
    if isinstance(value, list):
        return "+".join(slug(v) for v in value) or "none"
    if isinstance(value, dict):
        return "+".join(f"{k}-{slug(v)}" for k, v in value.items()) or "none"
    return _UNSAFE.sub("-", str(value)).strip("-") or "none"


def _names(varying: list[dict[str, Any]]) -> list[str]:
    """Folder names from the varying keys (``data=digits_models=vit-digits_seed=1``), unique and not too long."""
    names = []
    for values in varying:
        name = "_".join(f"{key}={slug(value)}" for key, value in values.items() if value not in (None, "")) or "cell"
        if len(name) > 120:
            name = name[:100] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
        names.append(name)
    counts: dict[str, int] = {}
    for i, name in enumerate(names):
        if names.count(name) > 1:
            counts[name] = counts.get(name, 0) + 1
            names[i] = f"{name}-{counts[name]}"
    return names
