"""Errors that the command-line apps report as one clear line instead of a traceback."""


class AelabError(Exception):
    """Base class: the message says what was wrong and what is allowed or how to fix it."""


class ConfigError(AelabError, ValueError):
    """A configuration value is out of range or inconsistent with the data."""


class DataError(AelabError, RuntimeError):
    """A data file is missing, damaged or unreadable."""


class CheckpointError(AelabError, RuntimeError):
    """A checkpoint is not one of ours or does not match the requested model/data."""


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds (validation at construction time)."""
    if not condition:
        raise ConfigError(message)
