"""Where a run's messages and progress go, and in whose words: the one :class:`Reporter` the command line,
:func:`atml.run`, a sweep and a sweep's cells each pass down."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

from atml import errors
from atml.errors import PYTHON, Part, Words


@dataclasses.dataclass(frozen=True)
class Reporter:
    """Where a run's messages and progress go, and in whose words: ``say`` takes one line per message, ``progress``
    turns the bars on (None: when stderr is a terminal), ``words`` writes the options and resumes a message names
    (:mod:`atml.errors`' facts): Python's keywords by default, the command line's flags when it passes its own. The
    command line, :func:`atml.run` and a sweep's cells each pass one; the runner hands it to the experiment in its
    :class:`RunContext`."""

    say: Callable[[str], None] = print
    progress: bool | None = None
    words: Words = PYTHON

    def tell(self, *parts: Part) -> None:
        """One line whose parts name options or a resume, in this reporter's words."""
        self.say(errors.words(parts, self.words))

    def resolved(self, is_main: bool) -> Reporter:
        """This reporter for one process of a run: bars decided (a terminal's stderr when not said), and silent on
        torchrun ranks other than 0."""
        bars = is_main and (sys.stderr.isatty() if self.progress is None else self.progress)
        return dataclasses.replace(self, say=self.say if is_main else _silent, progress=bars)


def _silent(_line: str) -> None:
    """A reporter's ``say`` that prints nothing."""


QUIET = Reporter(_silent, progress=False)
"""Nothing printed, no bars (tests, benchmarks, a sweep's bookkeeping)."""
PRINTED = Reporter()
"""Each message printed in Python's words, bars when stderr is a terminal (the runner's default; the command line
passes its own, in its flags' words)."""
