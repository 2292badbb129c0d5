"""The data pipeline: conversations in, packed and supervised training batches out.

Modules, one job each:

* `sources`  - reading records from JSONL/JSON/Parquet files, `datasets.Dataset`s and iterables
* `records`  - field mapping (OpenAI `messages`, ShareGPT `conversations`) to what the encoder takes
* `sharding` - splitting samples across ranks and DataLoader workers; seeded buffered shuffling
* `options`  - `PackingOptions`: how records are encoded and packed, in one value
* `pipeline` - encoding in Rust batches and packing, with per-sample error handling
* `batching` - packed rows as numpy arrays, cut into fixed-size batches
* `stats`    - sample accounting (packed or dropped, by reason) and its aggregation
* `shards`   - prepared shards: written by `turnpack prepare`, read back memory-mapped
* `progress` - exact-resume bookkeeping
* `dataset`  - `ChatDataset`, the torch `IterableDataset` (needs torch)
* `loader`   - `ChatDataLoader`, the DataLoader wrapper that checkpoints exactly (needs torch)

`ChatDataset` and `ChatDataLoader` are imported on first use, so `import turnpack.data` works without
torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from turnpack.data.batching import IGNORE_INDEX
from turnpack.data.errors import DataError, RecordError, SourceError
from turnpack.data.options import PackingOptions
from turnpack.data.records import to_conversation
from turnpack.data.sources import make_sample_id, split_sample_id
from turnpack.data.stats import merge_stats

if TYPE_CHECKING:  # pragma: no cover
    from turnpack.data.dataset import ChatDataset
    from turnpack.data.loader import ChatDataLoader

__all__ = [
    "IGNORE_INDEX",
    "ChatDataLoader",
    "ChatDataset",
    "DataError",
    "PackingOptions",
    "RecordError",
    "SourceError",
    "make_sample_id",
    "merge_stats",
    "split_sample_id",
    "to_conversation",
]

_LAZY = {"ChatDataset": "turnpack.data.dataset", "ChatDataLoader": "turnpack.data.loader"}


def __getattr__(name: str) -> Any:
    # torch is imported only when the torch-based classes are asked for.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'turnpack.data' has no attribute {name!r}")
