"""Errors a user can act on. Each carries the exit code the CLI returns for it."""


class AtmlError(Exception):
    """Base class: the message says what went wrong and how to fix it."""

    exit_code = 1


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
