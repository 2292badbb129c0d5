"""Reading records from where the data lives: JSONL/JSON/Parquet files (paths, folders or globs),
Hugging Face `datasets.Dataset` objects, lists, and re-iterable collections.

A source is a sequence of *rows*, each row a record (a dict or a list of messages). Every reader of the
dataset walks the sources in the same order and keeps only the rows its `Shard` owns, parsing only those
(a JSONL line that belongs to another worker is counted but never decoded). A row that cannot be
decoded comes back as a `RecordError` in place of its record, so the caller decides whether to raise or
count it; a source that cannot be read at all raises `SourceError`.

A sample is identified by `make_sample_id(source_index, row)`: stable across epochs, shuffles, ranks and
workers, and cheap to map back to its file and line (`split_sample_id`, `Source.describe`).
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from turnpack.data.errors import RecordError, SourceError
from turnpack.data.sharding import Shard

__all__ = [
    "INDEX_FILE",
    "ROW_BITS",
    "SUFFIXES",
    "IterableSource",
    "JsonArraySource",
    "JsonlSource",
    "ParquetSource",
    "SequenceSource",
    "Source",
    "iter_epoch",
    "make_sample_id",
    "prepared_dir",
    "resolve_sources",
    "split_sample_id",
]

# Sample id = source index << ROW_BITS | row: 2**40 rows per source, 2**23 sources within int64.
ROW_BITS = 40
_ROW_MASK = (1 << ROW_BITS) - 1

# The file a prepared shard folder is recognized by (written last by `turnpack prepare`).
INDEX_FILE = "index.json"

_JSONL = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
_JSON = (".json",)
_PARQUET = (".parquet",)
SUFFIXES: tuple[str, ...] = _JSONL + _JSON + _PARQUET


def make_sample_id(source_index: int, row: int) -> int:
    """The id of row `row` of source `source_index` (as reported in `sample_ids`)."""
    if row > _ROW_MASK:
        raise SourceError(f"source {source_index} has more than 2**{ROW_BITS} rows")
    return (source_index << ROW_BITS) | row


def split_sample_id(sample_id: int) -> tuple[int, int]:
    """`(source_index, row)` of a sample id made by `make_sample_id`."""
    return int(sample_id) >> ROW_BITS, int(sample_id) & _ROW_MASK


# A source's rows for one shard: yields (row, record or RecordError), returns the number of rows.
OwnedRows = Generator[tuple[int, Any], None, int]


class Source(ABC):
    """A sequence of rows that every reader walks in the same order."""

    name: str

    @abstractmethod
    def owned(self, offset: int, shard: Shard) -> OwnedRows:
        """Yields `(row, record)` for the rows `shard` owns when row 0 sits at stream position
        `offset`; a row that cannot be decoded yields a `RecordError`. Returns the number of rows."""

    def describe(self, row: int) -> str:
        """Where row `row` comes from, for error messages."""
        return f"{self.name} row {row}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class JsonlSource(Source):
    """One JSON value per line (`.jsonl`, `.ndjson`, optionally gzipped). Blank lines are not samples."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = str(path)

    def describe(self, row: int) -> str:
        return f"{self.name}:{row + 1}"  # rows are 0-based line indices; editors count lines from 1

    def _open(self) -> IO[bytes]:
        try:
            if self.path.suffix == ".gz":
                return gzip.open(self.path, "rb")
            return open(self.path, "rb")
        except OSError as e:
            raise SourceError(f"cannot read {self.name}: {e.strerror or e}") from e

    def owned(self, offset: int, shard: Shard) -> OwnedRows:
        first, count = shard.first_owned(offset), shard.count
        line_no = -1
        with self._open() as f:
            try:
                for line_no, line in enumerate(f):
                    if line_no % count != first:
                        continue
                    text = line.strip()
                    if not text:
                        continue
                    try:
                        record = json.loads(text)
                    except ValueError as e:  # also UnicodeDecodeError
                        record = RecordError(f"{self.describe(line_no)}: invalid JSON: {e}")
                    yield line_no, record
            except OSError as e:  # also gzip.BadGzipFile
                raise SourceError(f"cannot read {self.name} after line {line_no + 1}: {e}") from e
        return line_no + 1


class JsonArraySource(Source):
    """A `.json` file holding one list of records (loaded whole by every reader: prefer JSONL for big data)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = str(path)

    def describe(self, row: int) -> str:
        return f"{self.name}[{row}]"

    def owned(self, offset: int, shard: Shard) -> OwnedRows:
        try:
            with open(self.path, "rb") as f:
                records = json.load(f)
        except OSError as e:
            raise SourceError(f"cannot read {self.name}: {e.strerror or e}") from e
        except ValueError as e:
            raise SourceError(f"{self.name} is not valid JSON: {e}") from e
        if not isinstance(records, list):
            raise SourceError(
                f"{self.name} must hold a JSON list of records, got {type(records).__name__} "
                "(for one record per line, name the file .jsonl)"
            )
        for row in range(shard.first_owned(offset), len(records), shard.count):
            yield row, records[row]
        return len(records)


class ParquetSource(Source):
    """A Parquet file (read with pyarrow, one record batch at a time)."""

    BATCH_ROWS = 4096

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = str(path)

    def owned(self, offset: int, shard: Shard) -> OwnedRows:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as e:
            raise SourceError(f"reading {self.name} needs pyarrow (pip install pyarrow)") from e
        first, count = shard.first_owned(offset), shard.count
        start = 0
        try:
            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=self.BATCH_ROWS):
                # Convert only the owned rows to Python objects; the others are never materialized.
                local = range((first - start) % count, batch.num_rows, count)
                if len(local):
                    picked = batch if count == 1 else batch.take(pa.array(local, pa.int64()))
                    for j, record in zip(local, picked.to_pylist()):
                        yield start + j, record
                start += batch.num_rows
        except (OSError, pa.ArrowException) as e:
            raise SourceError(f"cannot read {self.name} after row {start}: {e}") from e
        return start


class SequenceSource(Source):
    """An indexable collection with a length: a list, a tuple, or a Hugging Face `datasets.Dataset`."""

    def __init__(self, rows: Any, name: str | None = None) -> None:
        self.rows = rows
        self.name = name or type(rows).__name__

    def describe(self, row: int) -> str:
        return f"{self.name}[{row}]"

    def owned(self, offset: int, shard: Shard) -> OwnedRows:
        n = len(self.rows)
        owned = range(shard.first_owned(offset), n, shard.count)
        if hasattr(self.rows, "select") and hasattr(self.rows, "features"):
            # datasets.Dataset: iterating a selection reads Arrow in batches, far faster than rows[i].
            picked = self.rows if len(owned) == n else self.rows.select(owned)
            yield from zip(owned, picked)
        else:
            for row in owned:
                yield row, self.rows[row]
        return n


class IterableSource(Source):
    """Any collection that can be iterated more than once, or a function returning a fresh iterator.

    Every reader walks all of it (keeping its own rows), so it must yield the same rows in the same
    order each time.
    """

    def __init__(self, rows: Iterable[Any] | Callable[[], Iterable[Any]], name: str | None = None) -> None:
        if not callable(rows) and iter(rows) is rows:
            raise TypeError(
                f"a {type(rows).__name__} can be iterated only once, but every epoch and every worker "
                "iterates the source: pass a list, or a function that returns a fresh iterator"
            )
        self.rows = rows
        self.name = name or getattr(rows, "__name__", type(rows).__name__)

    def describe(self, row: int) -> str:
        return f"{self.name}[{row}]"

    def owned(self, offset: int, shard: Shard) -> OwnedRows:
        rows = self.rows() if callable(self.rows) else self.rows
        first, count = shard.first_owned(offset), shard.count
        n = 0
        for n, record in enumerate(rows, 1):
            if (n - 1) % count == first:
                yield n - 1, record
        return n


def prepared_dir(source: Any) -> Path | None:
    """The folder if `source` is a prepared shard folder (holds `index.json`), else None."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir() and (path / INDEX_FILE).is_file():
            return path
    return None


def _file_source(path: Path) -> Source:
    name = path.name.lower()
    if name.endswith(_JSONL):
        return JsonlSource(path)
    if name.endswith(_JSON):
        return JsonArraySource(path)
    if name.endswith(_PARQUET):
        return ParquetSource(path)
    raise SourceError(f"{path}: unknown file type (supported: {', '.join(SUFFIXES)})")


def _path_sources(spec: str | os.PathLike[str]) -> list[Source]:
    text = os.fspath(spec)
    if glob.has_magic(text):
        files = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
        if not files:
            raise SourceError(f"no file matches {text!r}")
        return [_file_source(Path(p)) for p in files]
    path = Path(text)
    if path.is_dir():
        if (path / INDEX_FILE).is_file():
            raise SourceError(f"{path} is a prepared shard folder: pass it alone as the source")
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(SUFFIXES))
        if not files:
            raise SourceError(f"{path} holds no data file ({', '.join(SUFFIXES)})")
        return [_file_source(p) for p in files]
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    return [_file_source(path)]


def resolve_sources(source: Any) -> list[Source]:
    """The sources named by `source`, in reading order.

    `source` is a path (file, folder of data files, or glob), a list of paths, a `datasets.Dataset`,
    a list of records, any re-iterable collection of records, or a function returning an iterator.
    """
    if isinstance(source, Source):
        return [source]
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, Source) for s in source):
        return list(source)
    if isinstance(source, (str, os.PathLike)):
        return _path_sources(source)
    if (
        isinstance(source, (list, tuple))
        and source
        and all(isinstance(s, (str, os.PathLike)) for s in source)
    ):
        return [s for spec in source for s in _path_sources(spec)]
    if isinstance(source, Mapping):
        raise TypeError(
            "a dict is not a source; pass a list of records, or one split of a DatasetDict "
            "(e.g. dataset['train'])"
        )
    if isinstance(source, Sequence) or (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
        return [SequenceSource(source)]
    if callable(source) or isinstance(source, Iterable):
        return [IterableSource(source)]
    raise TypeError(f"cannot read samples from a {type(source).__name__}")


def iter_epoch(sources: Sequence[Source], order: Sequence[int], shard: Shard) -> Iterator[tuple[int, Any]]:
    """`(sample_id, record)` for every row `shard` owns, walking `sources` in `order`."""
    offset = 0
    for index in order:
        rows = sources[index].owned(offset, shard)
        while True:
            try:
                row, record = next(rows)
            except StopIteration as done:
                offset += done.value
                break
            yield make_sample_id(index, row), record
