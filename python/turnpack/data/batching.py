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

Prefix-tree rows (`history="expand"`) carry three more arrays: `prefix_starts` and `prefix_ends` (the
row positions each token also attends to) and `doc_roles` (what each document is: a sample's own, a
branch, or a context copy of a trunk's first tokens). Their positions go back inside a row (a branch
continues from its branch point), so they cannot be derived from document lengths: shards store them
too. A stream in expand mode can still produce packer output without any tree (no conversation in it
had a rewritten turn); `Rows.with_trees` gives such rows empty prefixes and role 0, so that every
batch of an expand stream has the same arrays (`RowQueue` does it whenever it mixes the two).

Arrays keep the dtype they arrive in (the packer's int32 tokens, shards' int32 labels, ...): the torch
batch (`turnpack.data.dataset`) converts each once, to the dtype training takes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields, replace

import numpy as np

from turnpack._core import IGNORE_INDEX, PackedBatch

__all__ = ["IGNORE_INDEX", "NO_DOCUMENT", "ROLE_BRANCH", "ROLE_CONTEXT", "ROLE_SAMPLE", "RowQueue", "Rows"]

# IGNORE_INDEX: the label of a position that is not trained. The core's packer defines and writes it
# (`turnpack_core::IGNORE_INDEX`, the default `ignore_index` of `torch.nn.functional.cross_entropy`);
# the package re-exports it from here, and everything else imports it.

#: `Rows.doc_roles` of a sample's own document (the trunk of a tree, or an ordinary sample).
ROLE_SAMPLE = 0
#: `Rows.doc_roles` of a prefix-tree branch (a rewritten turn trained in its inference context).
ROLE_BRANCH = 1
#: `Rows.doc_roles` of a context copy of a trunk's first tokens (the row holds a piece of a split tree).
ROLE_CONTEXT = 2
#: `Rows.doc_roles` past a row's documents (the fill of the padded per-document rectangle, as
#: `sample_ids` fills with -1): signed, so that it can never be taken for a role.
NO_DOCUMENT = -1


@dataclass
class Rows:
    """`n` packed rows of `seq_len` tokens, laid out as `turnpack.PackedBatch` lays them out.

    `doc_counts[r]` is the number of documents in row `r` (padding excluded). The three prefix-tree
    arrays are all present (rows of a `history="expand"` stream or folder) or all None (ordinary rows).
    """

    input_ids: np.ndarray  # int32 [n, L]
    labels: np.ndarray  # [n, L], IGNORE_INDEX where not trained; int64 (packer) or int32 (shards)
    position_ids: np.ndarray  # int32 [n, L]
    document_ids: np.ndarray  # int32 [n, L]; padding has id doc_counts[r]
    cu_seqlens: np.ndarray  # int32 [n, S + 1], tail filled with L
    sample_ids: np.ndarray  # int64 [n, S], -1 filled
    doc_counts: np.ndarray  # int64 [n]
    # Prefix-tree rows only: token t also attends to the row's tokens prefix_starts[t]:prefix_ends[t]
    # (0, 0: nothing more), and doc_roles[r, d] is document d's ROLE_* (NO_DOCUMENT filled, as sample_ids).
    prefix_starts: np.ndarray | None = None  # int32 [n, L]
    prefix_ends: np.ndarray | None = None  # int32 [n, L]
    doc_roles: np.ndarray | None = None  # int8 [n, S]
    # Rows with weighted messages only: the weight of each label (0 where the label is IGNORE_INDEX).
    loss_weights: np.ndarray | None = None  # float32 [n, L]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def has_trees(self) -> bool:
        """True when the rows carry the prefix-tree arrays (they may still hold no branch)."""
        return self.prefix_starts is not None

    @classmethod
    def from_packed(cls, batch: PackedBatch, *, trees: bool = False) -> Rows:
        """The packer's rows as they are; its prefix-tree arrays when it has them. `trees=True` (an
        expand stream) gives rows without any tree empty prefixes too (`with_trees`)."""
        doc_counts = np.diff(batch.row_doc_offsets).astype(np.int64)
        rows = cls(
            input_ids=batch.input_ids,
            labels=batch.labels,
            position_ids=batch.position_ids,
            document_ids=batch.document_ids,
            cu_seqlens=batch.cu_seqlens,
            sample_ids=batch.sample_ids,
            doc_counts=doc_counts,
        )
        rows.loss_weights = batch.loss_weights
        roles = batch.doc_roles
        if batch.prefix_starts is not None and batch.prefix_ends is not None and roles is not None:
            rows.prefix_starts, rows.prefix_ends = batch.prefix_starts, batch.prefix_ends
            rows.doc_roles = _padded(roles, doc_counts, batch.sample_ids.shape[1])
        return rows.with_trees() if trees else rows

    def with_loss_weights(self) -> Rows:
        """These rows with loss weights: themselves when they have them, else a copy weighing every
        trained label 1."""
        if self.loss_weights is not None:
            return self
        return replace(self, loss_weights=(self.labels != IGNORE_INDEX).astype(np.float32))

    def with_trees(self) -> Rows:
        """These rows with the prefix-tree arrays: themselves when they have them, else a copy whose
        tokens attend to no prefix and whose documents are all a sample's own."""
        if self.has_trees:
            return self
        n, width = self.sample_ids.shape
        roles = np.where(np.arange(width) < self.doc_counts[:, None], ROLE_SAMPLE, NO_DOCUMENT)
        return replace(
            self,
            prefix_starts=np.zeros((n, self.seq_len), np.int32),
            prefix_ends=np.zeros((n, self.seq_len), np.int32),
            doc_roles=roles.astype(np.int8),
        )

    @classmethod
    def from_documents(
        cls,
        input_ids: np.ndarray,
        labels: np.ndarray,
        doc_lens: list[np.ndarray],
        sample_ids: list[np.ndarray],
        *,
        position_ids: np.ndarray | None = None,
        prefix_starts: np.ndarray | None = None,
        prefix_ends: np.ndarray | None = None,
        doc_roles: list[np.ndarray] | None = None,
    ) -> Rows:
        """Rows read back from prepared shards, which store only tokens, labels and each row's document
        lengths and sample ids: derives positions, document ids and boundaries from the lengths, as
        the packer lays them out. The only such derivation; packer rows use `from_packed`.

        Prefix-tree shards also store `position_ids` (branch positions continue from their branch
        point, which no length tells), the prefix ranges and each row's document roles: given, they are
        taken as they are, and only document ids and boundaries are derived."""
        tree = (position_ids, prefix_starts, prefix_ends, doc_roles)
        if any(a is None for a in tree) and not all(a is None for a in tree):
            raise ValueError("prefix-tree rows need position_ids, prefix_starts, prefix_ends and doc_roles")
        n, seq_len = input_ids.shape
        positions = np.empty((n, seq_len), np.int32) if position_ids is None else position_ids
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
            if position_ids is None:
                positions[r] = np.arange(seq_len) - np.repeat(starts, seg)
            cu_seqlens[r, 0] = 0
            cu_seqlens[r, 1 : len(lens) + 1] = np.cumsum(lens)
            sids[r, : len(lens)] = sample_ids[r]
        if doc_roles is None:
            return cls(input_ids, labels, positions, document_ids, cu_seqlens, sids, doc_counts)
        roles = _padded(np.concatenate([np.zeros(0, np.int8), *doc_roles]), doc_counts, width)
        return cls(
            input_ids, labels, positions, document_ids, cu_seqlens, sids, doc_counts,
            prefix_starts=prefix_starts, prefix_ends=prefix_ends, doc_roles=roles,
        )  # fmt: skip

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

    def row_doc_roles(self) -> list[np.ndarray]:
        """Each row's documents' roles (prefix-tree rows only)."""
        if self.doc_roles is None:
            raise ValueError("these rows carry no prefix trees")
        return [self.doc_roles[r, :c] for r, c in enumerate(self.doc_counts)]

    def count_roles(self, role: int) -> int:
        """Documents of `role` (a ROLE_*) in these rows; for ordinary rows every document is a sample's."""
        if self.doc_roles is None:
            return int(self.doc_counts.sum()) if role == ROLE_SAMPLE else 0
        return int(np.count_nonzero(self.doc_roles == role))

    def take(self, start: int, stop: int) -> Rows:
        """Rows `start:stop` (views), trimmed to their own widest row."""
        arrays = {f.name: getattr(self, f.name) for f in fields(self)}
        return Rows(**{k: None if a is None else a[start:stop] for k, a in arrays.items()}).trimmed()

    def trimmed(self) -> Rows:
        """The same rows with the per-document arrays cut to the widest row's segment count."""
        used = self.used_tokens()
        width = int((self.doc_counts + (used < self.seq_len)).max(initial=0))
        self.cu_seqlens = self.cu_seqlens[:, : width + 1]
        self.sample_ids = self.sample_ids[:, :width]
        if self.doc_roles is not None:
            self.doc_roles = self.doc_roles[:, :width]
        return self

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        """Rows of all `parts` in order, per-document arrays padded to a common width then trimmed.

        When some parts carry prefix trees and others do not (an expand stream where a packer output
        held no tree), the others get empty prefixes (`with_trees`), so the arrays stay row-aligned."""
        if any(p.has_trees for p in parts):
            parts = [p.with_trees() for p in parts]
        if any(p.loss_weights is not None for p in parts):
            parts = [p.with_loss_weights() for p in parts]
        if len(parts) == 1:
            return parts[0].trimmed()
        seq_len = parts[0].seq_len
        width = max(p.sample_ids.shape[1] for p in parts)

        def widen(a: np.ndarray, w: int, fill: int) -> np.ndarray:
            if a.shape[1] == w:
                return a
            return np.concatenate([a, np.full((a.shape[0], w - a.shape[1]), fill, a.dtype)], axis=1)

        def joined(key: str, fill: int | None = None) -> np.ndarray | None:
            # After with_trees above, the tree arrays are in every part or in none.
            arrays = [getattr(p, key) for p in parts]
            if arrays[0] is None:
                return None
            return np.concatenate(arrays if fill is None else [widen(a, width, fill) for a in arrays])

        return Rows(
            input_ids=np.concatenate([p.input_ids for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            position_ids=np.concatenate([p.position_ids for p in parts]),
            document_ids=np.concatenate([p.document_ids for p in parts]),
            cu_seqlens=np.concatenate([widen(p.cu_seqlens, width + 1, seq_len) for p in parts]),
            sample_ids=np.concatenate([widen(p.sample_ids, width, -1) for p in parts]),
            doc_counts=np.concatenate([p.doc_counts for p in parts]),
            prefix_starts=joined("prefix_starts"),
            prefix_ends=joined("prefix_ends"),
            doc_roles=joined("doc_roles", NO_DOCUMENT),
            loss_weights=joined("loss_weights"),
        ).trimmed()


def _padded(flat: np.ndarray, doc_counts: np.ndarray, width: int) -> np.ndarray:
    """Per-document values `flat` (row 0's first, as `doc_lens`) as an `[n, width]` rectangle, each row's
    documents first, NO_DOCUMENT after them."""
    out = np.full((len(doc_counts), width), NO_DOCUMENT, np.int8)
    # A boolean mask assigns in row-major order: row 0's documents first, as `flat` holds them.
    out[np.arange(width) < doc_counts[:, None]] = flat
    return out


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
