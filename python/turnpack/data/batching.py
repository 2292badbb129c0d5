"""Packed rows as numpy arrays, and grouping them into fixed-size batches.

The packer hands out rows in pieces of any size (whatever was ready); training wants batches of exactly
`batch_size` rows. `RowQueue` sits in between. Per-document arrays (`cu_seqlens`, `sample_ids`) are
padded rectangles whose width depends on the rows they hold, so every batch is trimmed to the widest
row *in that batch*: the same rows always give the same arrays, however they were produced (streamed or
read back from prepared shards).

Rows straight from the packer keep the packer's own arrays (`Rows.from_packed`). Prepared shards store
only tokens, labels and per-document lengths and sample ids, so reading them back derives positions,
document ids and boundaries: `Rows.from_documents` is the one place that does, and
tests/test_prepare.py checks it against the packer's arrays.

Arrays keep the dtype they arrive in (the packer's int32 tokens, shards' int32 labels, ...): the torch
batch (`turnpack.data.dataset`) converts each once, to the dtype training takes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields

import numpy as np

from turnpack._core import IGNORE_INDEX, PackedBatch

__all__ = ["IGNORE_INDEX", "RowQueue", "Rows"]

# IGNORE_INDEX: the label of a position that is not trained. The core's packer defines and writes it
# (`turnpack_core::IGNORE_INDEX`, the default `ignore_index` of `torch.nn.functional.cross_entropy`);
# the package re-exports it from here, and everything else imports it.


@dataclass
class Rows:
    """`n` packed rows of `seq_len` tokens, laid out as `turnpack.PackedBatch` lays them out.

    `doc_counts[r]` is the number of documents in row `r` (padding excluded).
    """

    input_ids: np.ndarray  # int32 [n, L]
    labels: np.ndarray  # [n, L], IGNORE_INDEX where not trained; int64 (packer) or int32 (shards)
    position_ids: np.ndarray  # int32 [n, L]
    document_ids: np.ndarray  # int32 [n, L]; padding has id doc_counts[r]
    cu_seqlens: np.ndarray  # int32 [n, S + 1], tail filled with L
    sample_ids: np.ndarray  # int64 [n, S], -1 filled
    doc_counts: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    @classmethod
    def from_packed(cls, batch: PackedBatch) -> Rows:
        return cls(
            input_ids=batch.input_ids,
            labels=batch.labels,
            position_ids=batch.position_ids,
            document_ids=batch.document_ids,
            cu_seqlens=batch.cu_seqlens,
            sample_ids=batch.sample_ids,
            doc_counts=np.diff(batch.row_doc_offsets).astype(np.int64),
        )

    @classmethod
    def from_documents(
        cls,
        input_ids: np.ndarray,
        labels: np.ndarray,
        doc_lens: list[np.ndarray],
        sample_ids: list[np.ndarray],
    ) -> Rows:
        """Rows read back from prepared shards, which store only tokens, labels and each row's document
        lengths and sample ids: derives positions, document ids and boundaries from the lengths, as
        the packer lays them out. The only such derivation; packer rows use `from_packed`."""
        n, seq_len = input_ids.shape
        position_ids = np.empty((n, seq_len), np.int32)
        document_ids = np.empty((n, seq_len), np.int32)
        doc_counts = np.array([len(lens) for lens in doc_lens], np.int64)
        segments = [len(lens) + int(int(lens.sum()) < seq_len) for lens in doc_lens]
        width = max(segments, default=0)
        cu_seqlens = np.full((n, width + 1), seq_len, np.int32)
        sids = np.full((n, width), -1, np.int64)
        for r, lens in enumerate(doc_lens):
            lens = lens.astype(np.int64)
            used = int(lens.sum())
            # The padding run is one more segment: its own document id and positions 0, 1, ...
            seg = np.append(lens, seq_len - used) if used < seq_len else lens
            starts = np.cumsum(seg) - seg
            document_ids[r] = np.repeat(np.arange(len(seg), dtype=np.int32), seg)
            position_ids[r] = np.arange(seq_len) - np.repeat(starts, seg)
            cu_seqlens[r, 0] = 0
            cu_seqlens[r, 1 : len(lens) + 1] = np.cumsum(lens)
            sids[r, : len(lens)] = sample_ids[r]
        return cls(input_ids, labels, position_ids, document_ids, cu_seqlens, sids, doc_counts)

    def used_tokens(self) -> np.ndarray:
        """Non-padding tokens per row."""
        return self.cu_seqlens[np.arange(len(self)), self.doc_counts].astype(np.int64)

    def trained_tokens(self) -> np.ndarray:
        """Positions with a label per row."""
        return np.count_nonzero(self.labels != IGNORE_INDEX, axis=1)

    def doc_lens(self) -> list[np.ndarray]:
        """Each row's document lengths."""
        return [np.diff(self.cu_seqlens[r, : c + 1]) for r, c in enumerate(self.doc_counts)]

    def row_sample_ids(self) -> list[np.ndarray]:
        """Each row's documents' sample ids."""
        return [self.sample_ids[r, :c] for r, c in enumerate(self.doc_counts)]

    def take(self, start: int, stop: int) -> Rows:
        """Rows `start:stop` (views), trimmed to their own widest row."""
        part = Rows(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})
        return part.trimmed()

    def trimmed(self) -> Rows:
        """The same rows with `cu_seqlens`/`sample_ids` cut to the widest row's segment count."""
        used = self.used_tokens()
        width = int((self.doc_counts + (used < self.seq_len)).max(initial=0))
        self.cu_seqlens = self.cu_seqlens[:, : width + 1]
        self.sample_ids = self.sample_ids[:, :width]
        return self

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        """Rows of all `parts` in order, per-document arrays padded to a common width then trimmed."""
        if len(parts) == 1:
            return parts[0].trimmed()
        seq_len = parts[0].seq_len
        width = max(p.sample_ids.shape[1] for p in parts)

        def widen(a: np.ndarray, w: int, fill: int) -> np.ndarray:
            if a.shape[1] == w:
                return a
            return np.concatenate([a, np.full((a.shape[0], w - a.shape[1]), fill, a.dtype)], axis=1)

        return Rows(
            input_ids=np.concatenate([p.input_ids for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            position_ids=np.concatenate([p.position_ids for p in parts]),
            document_ids=np.concatenate([p.document_ids for p in parts]),
            cu_seqlens=np.concatenate([widen(p.cu_seqlens, width + 1, seq_len) for p in parts]),
            sample_ids=np.concatenate([widen(p.sample_ids, width, -1) for p in parts]),
            doc_counts=np.concatenate([p.doc_counts for p in parts]),
        ).trimmed()


class RowQueue:
    """FIFO of packed rows that hands them out `n` at a time."""

    def __init__(self) -> None:
        self._parts: deque[Rows] = deque()
        self._head = 0  # rows of _parts[0] already handed out
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, rows: Rows) -> None:
        if len(rows):
            self._parts.append(rows)
            self._len += len(rows)

    def take(self, n: int) -> Rows:
        """The next `min(n, len(self))` rows (at least one row must be queued)."""
        if not self._len:
            raise IndexError("no rows queued")
        n = min(n, self._len)
        pieces = []
        need = n
        while need:
            part = self._parts[0]
            stop = min(len(part), self._head + need)
            pieces.append(part.take(self._head, stop))
            need -= stop - self._head
            self._head = stop
            if stop == len(part):
                self._parts.popleft()
                self._head = 0
        self._len -= n
        return Rows.concat(pieces)
