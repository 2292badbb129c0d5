"""turnpack: exactly supervised, densely packed multi-turn chat batches for LLM fine-tuning.

Render any Hugging Face chat template exactly as transformers does, find what the model must learn
to write in each assistant turn, tokenize once, and pack the results into fixed-length rows.
"""

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

__all__ = [
    "ChatTokenizer",
    "ConversationError",
    "Encoding",
    "PackedBatch",
    "Packer",
    "TemplateError",
    "TokenizerError",
    "TurnpackError",
    "__version__",
    "pack",
    "render_template",
]
