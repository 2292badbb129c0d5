"""turnpack: exactly supervised, densely packed multi-turn chat batches for LLM fine-tuning.

Render any Hugging Face chat template exactly as transformers does, find what the model must learn
to write in each assistant turn, tokenize once, and pack the results into fixed-length rows.
`ChatDataset` and `ChatDataLoader` (torch) are imported on first use, so `import turnpack` works
without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from turnpack._core import (
    ChatTokenizer,
    ConversationError,
    Encoding,
    PackedBatch,
    Packer,
    TemplateError,
    TokenizerError,
    TurnpackError,
    __version__,
    pack,
    render_template,
)
from turnpack.data import IGNORE_INDEX, DataError, PackingOptions, RecordError, SourceError, merge_stats
from turnpack.tokenizer import load_tokenizer

if TYPE_CHECKING:  # pragma: no cover
    from turnpack.data import ChatDataLoader, ChatDataset

__all__ = [
    "IGNORE_INDEX",
    "ChatDataLoader",
    "ChatDataset",
    "ChatTokenizer",
    "ConversationError",
    "DataError",
    "Encoding",
    "PackedBatch",
    "Packer",
    "PackingOptions",
    "RecordError",
    "SourceError",
    "TemplateError",
    "TokenizerError",
    "TurnpackError",
    "__version__",
    "load_tokenizer",
    "merge_stats",
    "pack",
    "render_template",
]


def __getattr__(name: str) -> Any:
    if name in ("ChatDataset", "ChatDataLoader"):
        import turnpack.data

        return getattr(turnpack.data, name)
    raise AttributeError(f"module 'turnpack' has no attribute {name!r}")
