"""Errors raised while reading training data. Each message names the file (and line or row) and the cause."""

from __future__ import annotations

from typing import Literal, cast

from turnpack._core import TurnpackError

__all__ = ["ON_ERROR", "DataError", "OnError", "RecordError", "SourceError", "check_on_error"]

#: What to do with a bad record: raise its error, or skip it and count it as `dropped_error`.
OnError = Literal["raise", "skip"]
ON_ERROR: tuple[str, ...] = ("raise", "skip")


class DataError(TurnpackError):
    """A data source or one of its records cannot be used (base class; a `ValueError`)."""


class SourceError(DataError):
    """A whole source is unusable: missing or unreadable file, a glob that matches nothing, an unknown
    file type, a broken prepared-shard folder. Never skipped, whatever `on_error` says."""


class RecordError(DataError):
    """One record is malformed (bad JSON line, missing or ill-typed fields). With `on_error="skip"` it is
    counted as `dropped_error` instead of raised."""


def check_on_error(on_error: str) -> OnError:
    """`on_error`, if it is one of `ON_ERROR` (the one check of it, wherever it is accepted)."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return cast(OnError, on_error)
