"""Errors a user can act on, as facts: each names what went wrong, the options and files involved and what to do,
and carries the exit code the CLI returns for it.

The library never words an option for a terminal or for Python itself. A message names options as :class:`Option`
(a front end's option: ``data_dir``, ``out``, ``resume``) or :class:`Key` (a config key: ``epochs``), and a resume as
:class:`Resume`; ``str(err)`` writes them in Python's words (``data_dir=DIR``, ``atml.resume('runs/x')``), and the
command line writes them as its flags (``--data-dir DIR``, ``--set epochs=3``) with :meth:`AtmlError.words`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol, TypeAlias


@dataclasses.dataclass(frozen=True)
class Placeholder:
    """A value for the user to fill in (``DIR``, ``PATH``, ``N``, ``[...]``), written as it is in every front end."""

    text: str


@dataclasses.dataclass(frozen=True)
class Option:
    """An option of the front ends, by its Python keyword (``data_dir``), and the value a message quotes or suggests
    (the user's value; a :class:`Placeholder`; True for a switch such as ``static``; None: the option alone)."""

    name: str
    value: object = None


@dataclasses.dataclass(frozen=True)
class Key:
    """A config key (``epochs``, ``models``), and the value a message quotes or suggests (None: the key alone)."""

    name: str
    value: object = None


@dataclasses.dataclass(frozen=True)
class Resume:
    """What continues an interrupted run: its experiment and folder."""

    experiment: str
    path: Path | str


Part: TypeAlias = "str | Option | Key | Resume"
"""A piece of a message: text, or a fact a front end writes in its own words."""


class Words(Protocol):
    """How a front end writes the facts of a message."""

    def option(self, option: Option) -> str: ...

    def key(self, key: Key) -> str: ...

    def resume(self, resume: Resume) -> str: ...


class PythonWords:
    """Python's words: options and keys as :func:`atml.run`'s keyword arguments, a resume as :func:`atml.resume`."""

    def option(self, option: Option) -> str:
        return option.name if option.value is None else f"{option.name}={_python_value(option.value)}"

    def key(self, key: Key) -> str:
        return key.name if key.value is None else f"{key.name}={_python_value(key.value)}"

    def resume(self, resume: Resume) -> str:
        return f"atml.resume({str(resume.path)!r})"


def _python_value(value: object) -> str:
    """A value as a keyword argument shows it: a placeholder as its text (``DIR``), a path as its text quoted, a
    list item by item, anything else as Python writes it (``'cpu'``, ``True``, ``3``)."""
    if isinstance(value, Placeholder):
        return value.text
    if isinstance(value, Path):
        return repr(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_python_value(v) for v in value) + "]"
    return repr(value)


PYTHON = PythonWords()


def words(parts: tuple[Part, ...], style: Words = PYTHON) -> str:
    """A message's parts written in ``style``'s words."""
    out = []
    for part in parts:
        if isinstance(part, Option):
            out.append(style.option(part))
        elif isinstance(part, Key):
            out.append(style.key(part))
        elif isinstance(part, Resume):
            out.append(style.resume(part))
        else:
            out.append(part)
    return "".join(out)


class AtmlError(Exception):
    """Base class: the message says what went wrong and how to fix it, its parts naming options as facts."""

    exit_code = 1

    def __init__(self, *parts: Part) -> None:
        super().__init__(*parts)
        self.parts = parts

    def __str__(self) -> str:
        return words(self.parts)

    def words(self, style: Words) -> str:
        """The message in a front end's words (the command line's flags, or Python's keywords for ``str``)."""
        return words(self.parts, style)

    @property
    def options(self) -> list[Option | Key]:
        """The options and config keys the message names, in order."""
        return [part for part in self.parts if isinstance(part, (Option, Key))]


class UsageError(AtmlError):
    """A bad command line: unknown experiment, preset, config key or value."""

    exit_code = 2


class DataError(AtmlError):
    """A dataset file is missing, truncated or corrupt."""

    exit_code = 3


class WeightsError(AtmlError):
    """Weights cannot be found, downloaded, verified or loaded."""

    exit_code = 3


class RunDirError(AtmlError):
    """A run folder cannot be created, read or resumed."""

    exit_code = 3


class DivergedError(AtmlError):
    """Training produced a NaN or Inf loss."""

    exit_code = 4


EXIT_OK = 0
EXIT_CELLS_NOT_DONE = 1
"""``atml sweep``: some cell failed or was stopped (the summary names them and how to resume)."""
EXIT_SIGNAL = 128
"""An interruption exits ``EXIT_SIGNAL`` + the signal's number: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP."""


def exit_codes() -> dict[int, list[str]]:
    """Every exit code the CLI returns and what returns it (the table in docs/usage.md is checked against this)."""
    codes: dict[int, list[str]] = {EXIT_OK: ["done"], EXIT_CELLS_NOT_DONE: ["EXIT_CELLS_NOT_DONE"]}
    pending = [AtmlError]
    while pending:
        cls = pending.pop()
        if cls is not AtmlError:
            codes.setdefault(cls.exit_code, []).append(cls.__name__)
        pending += cls.__subclasses__()
    for signum in (2, 15, 1):
        codes[EXIT_SIGNAL + signum] = ["EXIT_SIGNAL"]
    return codes
