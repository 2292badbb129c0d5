"""`load_tokenizer`: a `ChatTokenizer` from what a command line or a config names.

`turnpack prepare`, `turnpack train` (`data.tokenizer`) and `ChatDataset` (a tokenizer given as a path)
all load through it, so one name means the same tokenizer everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from turnpack._core import ChatTokenizer

__all__ = ["EXAMPLE", "load_tokenizer"]

#: The name of the bundled example tokenizer (`turnpack.train.examples`).
EXAMPLE = "example"


def load_tokenizer(
    spec: str | os.PathLike[str],
    chat_template: str | os.PathLike[str] | None = None,
    *,
    pattern: str | None = None,
    special_tokens: Mapping[str, int] | None = None,
    template_vars: Mapping[str, str] | None = None,
) -> ChatTokenizer:
    """The tokenizer `spec` names, with its chat template.

    Args:
        spec: `"example"` (the bundled example tokenizer and its ChatML template), a Hugging Face
            model folder (`ChatTokenizer.from_dir`), a tiktoken rank file when `pattern` is given
            (`ChatTokenizer.from_tiktoken`), or else a tokenizer.json file.
        chat_template: path of a Jinja template file that replaces the tokenizer's own (a tiktoken
            rank file has none, so it needs one).
        pattern, special_tokens, template_vars: for a tiktoken rank file: its pre-tokenizer regex, its
            special tokens `{text: id}` and the template's variables (`eos_token`, ...).
    """
    template = Path(chat_template).read_text(encoding="utf-8") if chat_template is not None else None
    if pattern is not None:
        if template is None:
            raise ValueError(f"the tiktoken rank file {spec} has no chat template: give chat_template")
        return ChatTokenizer.from_tiktoken(
            spec,
            pattern,
            special_tokens=special_tokens or {},
            chat_template=template,
            template_vars=template_vars or {},
        )
    if special_tokens or template_vars:
        raise ValueError("special_tokens and template_vars are for tiktoken rank files (give pattern)")
    if str(spec) == EXAMPLE:
        from turnpack.train import examples  # no torch: the example data is plain Python

        return ChatTokenizer(str(examples.TOKENIZER_PATH), chat_template=template or examples.CHAT_TEMPLATE)
    path = Path(spec)
    if path.is_dir():
        return ChatTokenizer.from_dir(str(path), chat_template=template)
    return ChatTokenizer(str(path), chat_template=template)
