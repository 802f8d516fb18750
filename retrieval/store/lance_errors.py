"""What Lance raised while reading, as one line, and whose fault it is.

A missing or damaged data file is ``IndexFormatError``; a filter Lance could not parse or plan is ``InvalidFilter``
(the filter was already checked by ``retrieval.store.where``, so this is rare); anything else is an internal error:
logged and passed on unchanged, never blamed on the user's filter.
"""
from __future__ import annotations

import logging
from pathlib import Path

from retrieval.errors import IndexFormatError, InvalidFilter

log = logging.getLogger(__name__)

_DAMAGE = ("LanceError(IO)", "Not found", "No such file", "corrupt", "Corrupt")
_FILTER_REFUSED = ("Error parsing", "Error during planning", "Schema error", "Invalid user input", "Invalid input")


def read_error(exc: Exception, where: str | None, root: Path) -> Exception:
    """What Lance raised while reading, as one line: a missing or damaged data file is ``IndexFormatError``, a
    filter Lance could not parse or plan is ``InvalidFilter``; anything else (an internal error) is logged and
    passed on unchanged, never blamed on the filter."""
    msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    msg = msg.split(", /")[0]  # drop the Rust source location Lance appends
    if isinstance(exc, OSError) or any(m in msg for m in _DAMAGE):
        return IndexFormatError(f"{root}: a Lance data file is missing or damaged ({msg[:200]}); restore the index "
                                f"from a backup or re-index")
    if where and any(m in msg for m in _FILTER_REFUSED):
        return InvalidFilter(f"bad --where expression {where!r}: {msg[:200]}")
    if where:
        log.error("internal error reading %s with the filter %s: %s", root, where, msg)
    return exc
