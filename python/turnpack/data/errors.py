"""Errors raised while reading training data. Each message names the file (and line or row) and the cause."""

from __future__ import annotations

from turnpack._core import TurnpackError

__all__ = ["DataError", "RecordError", "SourceError"]


class DataError(TurnpackError):
    """A data source or one of its records cannot be used (base class; a `ValueError`)."""


class SourceError(DataError):
    """A whole source is unusable: missing or unreadable file, a glob that matches nothing, an unknown
    file type, a broken prepared-shard folder. Never skipped, whatever `on_error` says."""


class RecordError(DataError):
    """One record is malformed (bad JSON line, missing or ill-typed fields). With `on_error="skip"` it is
    counted as `dropped_error` instead of raised."""
