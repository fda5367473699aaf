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
