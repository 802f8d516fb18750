"""The exceptions clipdex raises for failures a user can act on.

Each one carries a single-line message meant to be shown as is; the CLI prints it on stderr and exits non-zero.
Programming errors (bugs) are left as ordinary Python exceptions.
"""
from __future__ import annotations


class ClipdexError(Exception):
    """Base class: a failure caused by the user's input or environment, with a one-line message."""

    exit_code = 1


class UnknownModel(ClipdexError):
    """The model spec names no known architecture, pretrained tag, checkpoint or registered model."""


class WeightsUnavailable(ClipdexError):
    """Pretrained weights are not in the local cache and cannot be downloaded."""


class IndexNotFound(ClipdexError):
    """The path is not a clipdex index directory."""


class IndexExists(ClipdexError):
    """An index was to be created where one (or a folder that is not an index) already exists."""


class IndexLocked(ClipdexError):
    """Another process holds the index's write lock (it is writing or creating the index)."""


class IndexFormatError(ClipdexError):
    """The index was written by a newer clipdex, or its files are inconsistent."""


class ModelMismatch(ClipdexError):
    """The index was built with a different model than the one asked for."""


class TableNotFound(ClipdexError):
    """The index has no such table."""


class InvalidFilter(ClipdexError):
    """A --where expression could not be parsed or refers to unknown columns."""


class InvalidInput(ClipdexError):
    """An input file or value cannot be used: missing, unreadable, not an image, empty source, bad option."""


class WorkersUnavailable(ClipdexError):
    """The worker processes that decode files could not start (a script without a ``__main__`` guard, no memory)."""
