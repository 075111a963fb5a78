"""User-facing errors. The CLI turns every `FtplanError` into a one-paragraph message and exit 2.

One class per kind of user mistake, so callers (and tests) can tell them apart; the message
always names the field, file or value and says what to do.
"""

from __future__ import annotations


class FtplanError(Exception):
    """Base for errors caused by the user's input (never by a bug in ftplan)."""

    exit_code = 2


class ConfigError(FtplanError):
    """A model config.json that cannot be read or is not a supported architecture."""


class UnknownModelError(FtplanError):
    """`--model` names neither a folder with config.json nor a catalog entry."""


class UnknownGPUError(FtplanError):
    """`--gpu` names no GPU in the data file."""


class InvalidValueError(FtplanError):
    """A numeric or enumerated option is impossible (rank 0, negative sizes, ...)."""


class DataError(FtplanError):
    """A training data file that cannot be read, or whose records the trainer would reject."""
