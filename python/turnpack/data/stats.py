"""Sample accounting: what became of every sample, and what the packed rows hold.

Counts are kept per reader (one rank's DataLoader worker) and per epoch, and summed with
`merge_stats`. Over one complete epoch of all readers:

    samples == packed + dropped            (pending == 0)
    dropped == dropped_error + dropped_empty + dropped_too_long + dropped_nothing_to_train
               + dropped_last_batch

where `samples` counts the source rows read (blank JSONL lines are not rows), `packed` the samples that
are a document of a yielded row, and `dropped_error` the records that could not be decoded or encoded
(only with `on_error="skip"`; otherwise they raise). While an epoch is running, `pending` counts samples
read but not yet in a yielded row (in the shuffle buffer, the packer's buffer or a partial batch).

Prefix-tree rows (`history="expand"`) hold, besides each sample's own document (the trunk), its
branches (rewritten turns trained in their inference context) and, when a tree is split over rows,
context copies of the trunk's first tokens. Neither is a sample: `packed` counts only samples' own
documents (a tree is packed when its trunk is), so the identity above holds unchanged. The branches
have their own, over one complete epoch:

    branches_in == branches + branches_dropped + branches_dropped_last_batch     (branches_pending == 0)

where `branches_in` counts the branches of the trees that reached the packer, `branches` the branch
documents of yielded rows, `branches_dropped` those the packer dropped (with their tree, or too long
for a row beside the trunk's prefix) and `branches_dropped_last_batch` those in the dropped last batch;
`branches_truncated` (branches cut to fit, counted in `branches` too) and `tree_splits` (context
copies in yielded rows: one per extra row a split tree takes) are informational. All are 0 for other
data. Reading a prepared folder, `branches_in` is what its rows hold (as `samples` is).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from turnpack.data.batching import ROLE_BRANCH, ROLE_CONTEXT, ROLE_SAMPLE

__all__ = ["COUNTS", "DROP_REASONS", "RowTally", "empty_stats", "format_stats", "merge_stats", "with_totals"]

DROP_REASONS: tuple[str, ...] = (
    "dropped_error",
    "dropped_empty",
    "dropped_too_long",
    "dropped_nothing_to_train",
    "dropped_last_batch",
)

# Additive counters; `dropped`, `pending` and `efficiency` are derived from them by `with_totals`.
COUNTS: tuple[str, ...] = (
    "samples",
    "packed",
    *DROP_REASONS,
    "truncated",
    "rows",
    "batches",
    "tokens",
    "trained_tokens",
    "padding_tokens",
    "branches_in",
    "branches",
    "branches_dropped",
    "branches_dropped_last_batch",
    "branches_truncated",
    "tree_splits",
)


def empty_stats() -> dict[str, int]:
    return dict.fromkeys(COUNTS, 0)


def with_totals(counts: Mapping[str, int]) -> dict[str, int | float]:
    """`counts` plus `dropped`, `pending`, `branches_pending` and `efficiency` (non-padding share of the
    yielded rows)."""
    out: dict[str, int | float] = {k: int(counts.get(k, 0)) for k in COUNTS}
    out["dropped"] = sum(int(counts.get(k, 0)) for k in DROP_REASONS)
    out["pending"] = out["samples"] - out["packed"] - out["dropped"]
    out["branches_pending"] = (
        out["branches_in"] - out["branches"] - out["branches_dropped"] - out["branches_dropped_last_batch"]
    )
    positions = out["tokens"] + out["padding_tokens"]
    out["efficiency"] = out["tokens"] / positions if positions else 0.0
    return out


def merge_stats(parts: Iterable[Mapping[str, int | float]]) -> dict[str, int | float]:
    """Sums the counters of several readers/epochs/ranks and recomputes the derived values.

    Across ranks, gather each rank's `loader.stats` first, e.g. with
    `torch.distributed.all_gather_object`, then merge.
    """
    total = empty_stats()
    for part in parts:
        for key in COUNTS:
            total[key] += int(part.get(key, 0))
    return with_totals(total)


def format_stats(stats: Mapping[str, int | float]) -> str:
    """A human-readable summary (used by `turnpack prepare`)."""
    s = with_totals(stats)
    tokens = max(int(s["tokens"]), 1)
    lines = [
        f"samples in         {s['samples']:>14,}",
        f"packed             {s['packed']:>14,}",
        f"dropped            {s['dropped']:>14,}",
    ]
    lines += [f"  {k.removeprefix('dropped_'):<17}{s[k]:>14,}" for k in DROP_REASONS if s[k]]
    lines += [
        f"truncated          {s['truncated']:>14,}",
        f"rows               {s['rows']:>14,}",
        f"tokens             {s['tokens']:>14,}",
        f"trained tokens     {s['trained_tokens']:>14,}  ({s['trained_tokens'] / tokens:.1%} of tokens)",
        f"padding tokens     {s['padding_tokens']:>14,}",
        f"packing efficiency {s['efficiency']:>14.2%}",
    ]
    if s["branches_in"] or s["branches"]:  # prefix-tree data only: other summaries read as before
        lines += [
            f"branches in        {s['branches_in']:>14,}",
            f"branches packed    {s['branches']:>14,}",
            f"branches dropped   {s['branches_dropped'] + s['branches_dropped_last_batch']:>14,}",
            f"branches truncated {s['branches_truncated']:>14,}",
            f"tree splits        {s['tree_splits']:>14,}",
        ]
    return "\n".join(lines)


class RowTally:
    """Counts what the yielded (or dropped last-batch) rows hold; continues from `start` if given.

    Samples are counted by their own documents only (`ROLE_SAMPLE`), so that branches and context
    copies of prefix-tree rows never count as samples; branches and context copies have their own
    counters (see the module docstring).
    """

    _KEYS = (
        "packed",
        "dropped_last_batch",
        "rows",
        "batches",
        "tokens",
        "trained_tokens",
        "padding_tokens",
        "branches",
        "branches_dropped_last_batch",
        "tree_splits",
    )

    def __init__(self, start: Mapping[str, int] | None = None) -> None:
        self.counts = {k: int((start or {}).get(k, 0)) for k in self._KEYS}

    def batch(self, rows: Any) -> None:
        """`rows` (a `turnpack.data.batching.Rows`) were yielded as one batch."""
        used = int(rows.used_tokens().sum())
        c = self.counts
        c["batches"] += 1
        c["rows"] += len(rows)
        c["packed"] += rows.count_roles(ROLE_SAMPLE)
        c["branches"] += rows.count_roles(ROLE_BRANCH)
        c["tree_splits"] += rows.count_roles(ROLE_CONTEXT)
        c["tokens"] += used
        c["trained_tokens"] += int(rows.trained_tokens().sum())
        c["padding_tokens"] += len(rows) * rows.seq_len - used

    def dropped(self, rows: Any) -> None:
        """`rows` were not yielded (the short last batch with `drop_last`)."""
        self.counts["dropped_last_batch"] += rows.count_roles(ROLE_SAMPLE)
        self.counts["branches_dropped_last_batch"] += rows.count_roles(ROLE_BRANCH)
