"""Typed experiment configs: presets as small dicts, dotted overrides, strict keys.

Every experiment owns a dataclass that extends :class:`RunConfig`. A config is built
from the dataclass defaults, then the chosen preset's dict, then ``key=value``
overrides from the command line, in that order. Unknown keys and ill-typed values
raise :class:`~atml.errors.UsageError` naming the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import yaml

from atml.errors import Key, Placeholder, UsageError

Device = Literal["auto", "cpu", "cuda", "mps"]
DEVICES: tuple[Device, ...] = typing.get_args(Device)

CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]
"""``torch.compile`` modes a config's ``compile`` option takes (``off``: not compiled)."""
COMPILE_MODES: tuple[CompileMode, ...] = typing.get_args(CompileMode)


@dataclasses.dataclass
class RunConfig:
    """Options every experiment shares; the CLI flags of ``atml run`` set these."""

    seed: int = 0
    """Seed for torch's generators and the data splits."""
    device: Device = "auto"
    """auto | cpu | cuda | mps (auto: cuda when available, else cpu)."""
    data_dir: str | None = None
    """Folder holding the dataset files; None: the experiment's default cache folder."""
    weights: str = "random"
    """Where the weights come from: a name the experiment knows, 'random', or a file."""
    offline: bool = False
    """Never touch the network; missing files are errors."""
    image_size: int | None = None
    """Image files (data=folder, data=imagenet, --set images=...): the short side they are decoded at (px); None:
    the size the model's weights are evaluated at (input / crop_pct, e.g. 232 for ResNet-152, 248 for DeiT-S), so the
    model sees the pixels its own pipeline gives. VAE/GAN: always 28."""
    skip_bad_images: bool = False
    """data=folder: leave unreadable image files out (listed in the run's notes) instead of stopping."""

    def validate(self) -> None:
        """Raise UsageError for a value outside its range (:meth:`check_values`), then for a model, weights or
        dataset name the libraries do not know (:meth:`check_sources`). Experiments extend those two, not this."""
        self.check_values()
        self.check_sources()

    def check_values(self) -> None:
        """Ranges and combinations of values, without importing torch or a model library: the CLI answers a bad
        ``--set`` value from these before it imports an experiment."""
        if self.seed < 0:
            raise UsageError(f"seed={self.seed} is not valid; use an integer >= 0")
        if self.image_size is not None and self.image_size < 8:
            raise UsageError(f"image_size={self.image_size} is not valid; use at least 8 (pixels)")

    def check_sources(self) -> None:
        """Names of models, weights and datasets, checked against the libraries that build them (which may import
        torch, torchvision, timm or open_clip)."""
        from pathlib import Path

        from atml.errors import Option, WeightsError
        from atml.models.registry import canonical_weights, is_path

        self.weights = canonical_weights(self.weights)  # the demo's weights had two names before: one now
        if is_path(self.weights) and not Path(self.weights).expanduser().exists():
            raise WeightsError(Option("weights", self.weights), f": {Path(self.weights).expanduser()} does not exist; "
                               "pass an existing weights file (or transformers folder), or a name such as imagenet or "
                               "random")


def require_positive(cfg: Any, *names: str) -> None:
    """Raise UsageError naming the first of ``names`` that is not an integer >= 1."""
    for name in names:
        if getattr(cfg, name) < 1:
            raise UsageError(f"{name}={getattr(cfg, name)} is not valid; use an integer >= 1")


def require_unit_interval(cfg: Any, *names: str) -> None:
    """Raise UsageError naming the first of ``names`` outside [0, 1]."""
    for name in names:
        if not 0 <= getattr(cfg, name) <= 1:
            raise UsageError(f"{name}={getattr(cfg, name)} is not valid; use a number in [0, 1]")


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


DEFAULT_PRESET = "full"
"""The preset ``atml run`` and ``atml.run`` use when none is given: the course's scale."""


C = typing.TypeVar("C", bound=RunConfig)


def build(cls: type[C], presets: Mapping[str, Mapping[str, Any]], preset: str,
          overrides: Iterable[str] = (), *, name: str = "", sources: bool = True) -> C:
    """Defaults, then ``presets[preset]``, then ``key=value`` overrides; validated. ``name``: the experiment's, for
    messages; ``sources=False`` checks the values only (:meth:`RunConfig.check_values`, no model library
    imported)."""
    if preset not in presets:
        raise UsageError(f"unknown preset {preset!r}; valid presets: {', '.join(presets)}")
    cfg = cls()
    for key, value in presets[preset].items():
        cfg = _replace(cfg, key, value)
    for item in overrides:
        key, raw = parse_override(item)
        cfg = _replace(cfg, key, _Override(raw), name)
    if sources:
        cfg.validate()
    else:
        cfg.check_values()
    return cfg


def apply_values(cfg: Any, values: Mapping[str, Any], *, name: str = "", validate: bool = True) -> Any:
    """``cfg`` with Python values set by key (dotted keys reach nested configs), typed and validated as
    ``--set`` overrides are: ``apply_values(cfg, {"epochs": 2, "resolutions": [16, 32]})``. ``validate=False``
    leaves the check of the whole config to the caller (values that only make sense together)."""
    for key, value in values.items():
        cfg = _replace(cfg, key, value, name)
    if validate:
        cfg.validate()
    return cfg


def apply_overrides(cfg: Any, overrides: Iterable[str], *, validate: bool = True) -> Any:
    """``cfg`` with ``key=value`` overrides applied and validated (e.g. on a saved config)."""
    for item in overrides:
        key, raw = parse_override(item)
        cfg = _replace(cfg, key, _Override(raw))
    if validate:
        cfg.validate()
    return cfg


def parse_override(item: str) -> tuple[str, str]:
    """Split ``a.b=value`` into ``("a.b", "value")``."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"override {item!r} is not of the form key=value (e.g. ", Key("epochs", 3), ")")
    return key.strip(), raw.strip()


def get_value(cfg: Any, key: str) -> Any:
    """The value of ``key`` (dotted for nested configs, aliases allowed) as plain data (tuples as lists)."""
    for part in key.split("."):
        part = getattr(type(cfg), "ALIASES", {}).get(part, part)
        cfg = getattr(cfg, part)
    return _plain(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else cfg)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain data (tuples as lists) that ``yaml.safe_dump`` and JSON accept."""
    result: dict[str, Any] = _plain(dataclasses.asdict(cfg))
    return result


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_yaml(cfg: Any) -> str:
    result: str = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    return result


def from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a saved config (e.g. ``config.yaml`` of a run folder), strictly typed."""
    cfg = cls()
    for key, value in data.items():
        cfg = _replace(cfg, key, value)
    cfg.validate()
    return cfg


class _Override(str):
    """A ``--set`` value as typed: parsed as YAML, except for text options, which take it
    verbatim (YAML 1.1 would turn ``off``/``yes`` into booleans and ``1e-2`` into text)."""


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw


def unknown_key(key: str, names: list[str], owner: str) -> UsageError:
    """The one line for a config key ``owner``'s config does not have, with the closest valid one."""
    import difflib

    close = difflib.get_close_matches(key.partition(".")[0], names, n=1)
    return UsageError(f"unknown config key {key!r} for {owner}" + (f" (did you mean {close[0]!r}?)" if close else "")
                      + f"; valid keys: {', '.join(names)}")


def _replace(cfg: Any, key: str, value: Any, name: str = "") -> Any:
    head, _, rest = key.partition(".")
    head = getattr(type(cfg), "ALIASES", {}).get(head, head)  # another library's word for a field
    hints = typing.get_type_hints(type(cfg))
    if head not in hints or head not in field_names(type(cfg)):
        raise unknown_key(key, field_names(type(cfg)), name or type(cfg).__name__)
    if rest:  # nested dataclass
        inner = getattr(cfg, head)
        if not dataclasses.is_dataclass(inner):
            raise UsageError(f"config key {head!r} has no sub-keys (got {key!r})")
        return dataclasses.replace(cfg, **{head: _replace(inner, rest, value)})
    return dataclasses.replace(cfg, **{head: coerce(value, hints[head], key)})


def _as_float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # YAML reads 1e-2 (no dot) and inf as strings
        try:
            return float(value)
        except ValueError:
            return None
    return None


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert ``value`` to the annotated type ``hint`` or raise UsageError naming ``key``.

    A command-line override arrives as text (:class:`_Override`) and is read as YAML first, unless the field
    wants text; then the hint's kind picks the converter: a choice (``Literal``), an optional or union, a
    list or tuple, a nested config, or a scalar (:data:`_SCALARS`).
    """
    origin = typing.get_origin(hint)
    if isinstance(value, _Override):
        value = _from_text(str(value), hint, origin)
    if hint is Any:
        return value
    if origin in _GENERIC:
        return _GENERIC[origin](value, typing.get_args(hint), key)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return _nested(value, hint)
    converted = _SCALARS[hint](value, key) if hint in _SCALARS else _NO
    if converted is _NO:
        raise UsageError(f"config key {key!r} expects {getattr(hint, '__name__', hint)}, got {value!r}")
    return converted


_NO = object()
"""A scalar converter's answer for a value it cannot take."""


def _from_text(raw: str, hint: Any, origin: Any) -> Any:
    """An override's text as the field wants it: the text itself for a text field or a choice of texts, else its
    YAML reading (numbers, booleans, lists, null)."""
    args = typing.get_args(hint)
    value = _parse_scalar(raw)
    wants_text = hint is str or (origin in (typing.Union, types.UnionType) and str in args and value is not None)
    text_choice = origin is typing.Literal and all(isinstance(a, str) for a in args)
    return raw if wants_text or text_choice else value


def _choice(value: Any, args: tuple[Any, ...], key: str) -> Any:
    for choice in args:
        as_text = isinstance(choice, str) and isinstance(value, (int, float)) and str(value) == choice
        if value == choice or as_text:
            return choice
    raise UsageError(f"{key}={value!r} is not valid; choose one of {', '.join(str(a) for a in args)}")


def _union(value: Any, args: tuple[Any, ...], key: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return coerce(value, arg, key)
        except UsageError as err:
            errors.append(str(err))
    raise UsageError(errors[0] if errors else f"{key}: invalid value {value!r}")


def _sequence(kind: type) -> Callable[[Any, tuple[Any, ...], str], Any]:
    def convert(value: Any, args: tuple[Any, ...], key: str) -> Any:
        items = value if isinstance(value, (list, tuple)) else [value]
        item = args[0] if args else Any
        try:
            out = [coerce(v, item, key) for v in items]
        except UsageError as err:
            if isinstance(value, (list, tuple)):  # a list with a bad item: the item's own message
                raise
            name = getattr(item, "__name__", str(item))
            example = f"[{value}]" if isinstance(value, str) and "," in value else "[a,b]"
            raise UsageError(f"config key {key!r} expects a list of {name}, written in brackets (",
                             Key(key, Placeholder(example)), f"); got {value!r}") from err
        return kind(out)
    return convert


def _nested(value: Mapping[str, Any], hint: type) -> Any:
    inner = hint()
    for sub_key, sub_value in value.items():
        inner = _replace(inner, sub_key, sub_value)
    return inner


_GENERIC: dict[Any, Callable[[Any, tuple[Any, ...], str], Any]] = {
    typing.Literal: _choice, typing.Union: _union, types.UnionType: _union, list: _sequence(list),
    tuple: _sequence(tuple)}
"""Converters of the generic hints, by ``typing.get_origin``."""


def _to_bool(value: Any, key: str) -> Any:
    return value if isinstance(value, bool) else _NO


def _to_int(value: Any, key: str) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) else _NO


def _to_float(value: Any, key: str) -> Any:
    number = _as_float(value)
    if number is None:
        return _NO
    if not math.isfinite(number):
        raise UsageError(f"config key {key!r} is {value!r}; use a finite number")
    return number


def _to_str(value: Any, key: str) -> Any:
    if isinstance(value, (str, int, float, os.PathLike)) and not isinstance(value, bool):
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)  # pathlib paths for files
    return _NO


_SCALARS: dict[Any, Callable[[Any, str], Any]] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}
"""Converters of the scalar hints: each returns the value, or :data:`_NO` when it cannot take it."""
