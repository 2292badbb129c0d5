"""The built-in example dataset: register-machine dialogues and a tiny BPE tokenizer.

Each dialogue drives a small register machine over several turns::

    user:      set a to 3          assistant: a = 3
    user:      add 4 to a          assistant: a = 7
    user:      set b to 2          assistant: b = 2
    user:      what is a?          assistant: a = 7

Every answer depends on earlier turns (the current value of a register), so a
model only gets it right if it attends across turns of its own conversation,
and never to another conversation packed into the same row.  Values stay in
0..9, which keeps the task small enough for a sub-1M-parameter model to learn
on a laptop CPU in about a minute.

The tokenizer (``example_data/tokenizer.json``) is a byte-level BPE: ids 0..255
are the bytes themselves, then three special tokens (``<|endoftext|>`` for
padding, ``<|im_start|>``, ``<|im_end|>``), then :data:`NUM_MERGES` merged tokens
learned from the dialogues by :func:`learn_merges` (``user``, ``assistant``,
``a = ``, ...).  Merges never touch digits or newlines, so every value is a
token of its own and no token straddles a role header and a message.  It is
loaded through the ordinary :class:`turnpack.ChatTokenizer` with the ChatML
template in ``example_data/chat_template.jinja``, and decoded by it
(``example_tokenizer().decode(ids)``).  :func:`build_tokenizer_json` regenerates
the file (``python -m turnpack.train.examples``); a test checks that the two
agree.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import turnpack

__all__ = [
    "CHAT_TEMPLATE",
    "EXAMPLE_DATA_DIR",
    "IM_END",
    "IM_END_ID",
    "IM_START",
    "IM_START_ID",
    "MAX_TURNS",
    "MIN_TURNS",
    "NUM_MERGES",
    "PAD",
    "PAD_ID",
    "REGISTERS",
    "SPECIAL_TOKENS",
    "TOKENIZER_PATH",
    "VOCAB_SIZE",
    "build_tokenizer_json",
    "example_tokenizer",
    "learn_merges",
    "register_dialogue",
    "register_dialogues",
]

EXAMPLE_DATA_DIR = Path(__file__).resolve().parent / "example_data"
TOKENIZER_PATH = EXAMPLE_DATA_DIR / "tokenizer.json"
CHAT_TEMPLATE = (EXAMPLE_DATA_DIR / "chat_template.jinja").read_text(encoding="utf-8")

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
#: Special tokens in id order, right after the 256 byte tokens.
SPECIAL_TOKENS = (PAD, IM_START, IM_END)
PAD_ID, IM_START_ID, IM_END_ID = 256, 257, 258
#: Merged tokens, ids 259 and up.  Fewer tokens per dialogue make training faster, and
#: ``a = `` as one token makes "the value after the latest ``a = ``" a one-step lookup.
NUM_MERGES = 41
VOCAB_SIZE = 256 + len(SPECIAL_TOKENS) + NUM_MERGES

REGISTERS = ("a", "b", "c")
#: Default range of user/assistant exchanges per dialogue.
MIN_TURNS, MAX_TURNS = 3, 6
Message = dict[str, str]


# ------------------------------------------------------------------ tokenizer


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _mergeable(symbol: str) -> bool:
    """Digits and newlines stay single-byte tokens."""
    return not any(c.isdigit() or c == _bytes_to_unicode()[ord("\n")] for c in symbol)


def learn_merges(texts: Sequence[str], num_merges: int) -> list[tuple[str, str]]:
    """Classic BPE training: repeatedly merge the most frequent adjacent pair of symbols.

    Texts are cut at special tokens (never merged); each piece is one word of
    byte-level symbols (the tokenizer's pre-tokenizer does not split on spaces).
    Ties go to the lexicographically largest pair, so the result is deterministic.
    """
    b2u = _bytes_to_unicode()
    specials = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
    counts = Counter(piece for text in texts for piece in specials.split(text) if piece)
    words = {piece: [b2u[b] for b in piece.encode()] for piece in counts}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for piece, n in counts.items():
            symbols = words[piece]
            for pair in itertools.pairwise(symbols):
                if _mergeable(pair[0]) and _mergeable(pair[1]):
                    pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        merges.append(best)
        for piece, symbols in words.items():
            merged, i = [], 0
            while i < len(symbols):
                if tuple(symbols[i : i + 2]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            words[piece] = merged
    return merges


def build_tokenizer_json() -> dict[str, Any]:
    """The content of ``example_data/tokenizer.json`` (Hugging Face tokenizers format).

    A byte-level BPE over GPT-2's byte alphabet (no text is ever unknown) whose
    merges are learned from 2,000 rendered example dialogues.
    """
    dialogues = register_dialogues(2000, seed=0)
    texts = [turnpack.render_template(CHAT_TEMPLATE, d) for d in dialogues]
    merges = learn_merges(texts, NUM_MERGES)
    if len(merges) != NUM_MERGES:
        raise RuntimeError(f"learned only {len(merges)} of {NUM_MERGES} merges")
    vocab = {char: byte for byte, char in _bytes_to_unicode().items()}
    added = []
    for i, content in enumerate(SPECIAL_TOKENS):
        vocab[content] = 256 + i
        added.append(
            {
                "id": 256 + i,
                "content": content,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )
    for left, right in merges:
        vocab[left + right] = len(vocab)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [f"{left} {right}" for left, right in merges],
        },
    }


@functools.cache
def example_tokenizer() -> turnpack.ChatTokenizer:
    """The bundled ChatML tokenizer (loaded once, then cached)."""
    return turnpack.ChatTokenizer(
        tokenizer=str(TOKENIZER_PATH),
        chat_template=CHAT_TEMPLATE,
        special_tokens={"eos_token": IM_END, "pad_token": PAD},
    )


# ------------------------------------------------------------------- dialogues


def register_dialogue(rng: random.Random, turns: int) -> list[Message]:
    """One dialogue of ``turns`` user/assistant exchanges.

    The first two turns set two different registers and the last one is a
    question; in between come ``set``, ``add`` (keeping values in 0..9) and
    questions.  Every answer reads ``X = value``: the register's new value
    after ``set``/``add`` (one lookup and one small sum), or its current value
    for ``what is X?``.  A question never asks for the register changed just
    before it, so "repeat the latest value" is wrong: the model must find the
    register's own latest ``X = ``.
    """
    if turns < 3:
        raise ValueError("a dialogue needs at least 3 turns (two sets and a question)")
    first_two = rng.sample(REGISTERS, 2)
    values: dict[str, int] = {}
    messages: list[Message] = []
    last_changed = ""
    for turn in range(turns):
        if turn < 2:
            op = "set"
        elif turn == turns - 1:
            op = "what"
        else:
            op = rng.choice(("set", "add", "what", "what"))
            if op == "add" and all(v == 9 for v in values.values()):
                op = "set"
        if op == "set":
            reg = first_two[turn] if turn < 2 else rng.choice(REGISTERS)
            values[reg] = rng.randint(0, 9)
            question = f"set {reg} to {values[reg]}"
        elif op == "add":
            reg = rng.choice([r for r, v in values.items() if v < 9])
            amount = rng.randint(1, 9 - values[reg])
            values[reg] += amount
            question = f"add {amount} to {reg}"
        else:
            reg = rng.choice(sorted(r for r in values if r != last_changed))
            question = f"what is {reg}?"
        if op != "what":
            last_changed = reg
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": f"{reg} = {values[reg]}"})
    return messages


def register_dialogues(
    n: int, seed: int = 0, *, min_turns: int = MIN_TURNS, max_turns: int = MAX_TURNS
) -> list[list[Message]]:
    """``n`` dialogues, deterministic in ``seed`` (independent of Python's hash seed)."""
    rng = random.Random(seed)
    return [register_dialogue(rng, rng.randint(min_turns, max_turns)) for _ in range(n)]


if __name__ == "__main__":  # regenerate the bundled tokenizer file
    TOKENIZER_PATH.write_text(json.dumps(build_tokenizer_json(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {TOKENIZER_PATH}")
