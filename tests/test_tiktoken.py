"""`ChatTokenizer.from_tiktoken` converts a tiktoken rank file into an equivalent BPE in Rust: its ids
must equal the `tiktoken` package's on a varied corpus, for every rank file the test packages ship
(Qwen3, Qwen3.5, Llama 3, Llama 4, cl100k)."""

from __future__ import annotations

import json
import random
from functools import cache, lru_cache

import pytest
import real_tokenizers as RT
import reference as R
import turnpack

# Hand-picked texts that stress the pre-tokenizer patterns and the byte-level BPE.
HANDPICKED = [
    "",
    "Hello, world!",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\r\nand\u00a0nbsp",
    "x" * 500,
    " " * 37 + "after many spaces",
    "\n\n\n\n   \n\t\t\n",
    "1234567890 12 345 6789 3.14159 -42 1e10 0x1F",
    "I'm you're he'll we've they'd it's DON'T I'M",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n",
    "Grüße aus München! Ça va? ¿Qué tal? Straße",
    "你好，世界。这是一个测试。",
    "こんにちは、世界！カタカナとひらがな。",
    "Привет, мир! Как дела?",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "emoji: 😀🎉👩‍👩‍👧‍👦🇩🇪 ❤️",
    "combining: e\u0301 a\u0308 n\u0303 (decomposed) vs é ä ñ",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "<|endoftext|> text <|endoftext|><|endoftext|>",
    "```python\nprint('a')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |",
    "\x00\x01\x02 control \x7f chars",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 ∀x∈ℝ: x² ≥ 0",
]

ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    " \t\n\r.,;:!?'\"()[]{}<>/\\|-_=+*&^%$#@~`"
    "äöüßéèçñåøæ€£¥©®°±µ¶·¿¡"
    "你好世界中文字符测试一二三"
    "こんにちはカタカナ"
    "привет мир"
    "😀🎉👍🏽❤️\u200d\u0301\u00a0"
)


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.choice([1, 3, 10, 40, 200])
        if rng.random() < 0.3:  # runs of one character: whitespace runs, digit runs
            out.append("".join(rng.choice(ALPHABET) * rng.randint(1, 12) for _ in range(k // 3 + 1)))
        else:
            out.append("".join(rng.choice(ALPHABET) for _ in range(k)))
    return out


def rendered_fixture_texts() -> list[str]:
    """Real chat renderings: every fixture conversation through two templates."""
    out = []
    for name in ("Qwen-Qwen3-0.6B.jinja", "meta-llama-Llama-3.1-8B-Instruct.jinja"):
        template = R.load_template(name)
        for case in R.all_cases():
            try:
                out.append(
                    R.render_reference(template, case.messages, case.tools, False, **case.template_vars)
                )
            except Exception:  # noqa: BLE001 - a template refusing a case is not this test's concern
                continue
    return out


@lru_cache(maxsize=1)
def corpus() -> list[str]:
    return HANDPICKED + random_texts(400, seed=1) + rendered_fixture_texts()


@cache
def turnpack_tokenizer(name: str) -> turnpack.ChatTokenizer:
    spec = RT.require_spec(name)
    return turnpack.ChatTokenizer.from_tiktoken(
        str(spec.ranks_path), pattern=spec.pattern, special_tokens=spec.special_tokens
    )


@pytest.mark.parametrize("name", RT.NAMES)
def test_ids_equal_tiktoken(name):
    enc = RT.require_encoding(name)
    tok = turnpack_tokenizer(name)
    texts = corpus()
    mismatches = []
    for text in texts:
        want = enc.encode(text, allowed_special="all")
        got = tok.tokenize(text)
        if got != want:
            mismatches.append((text, want, got))
    assert not mismatches, (
        f"{len(mismatches)}/{len(texts)} texts differ; first: {mismatches[0][0]!r}: "
        f"tiktoken {mismatches[0][1][:20]} turnpack {mismatches[0][2][:20]}"
    )


@pytest.mark.parametrize("name", ["qwen3", "llama3"])
def test_special_tokens_keep_their_ids(name):
    spec = RT.require_spec(name)
    tok = turnpack_tokenizer(name)
    for text, id_ in spec.special_tokens.items():
        assert tok.token_to_id(text) == id_
        assert tok.tokenize(text) == [id_]


def test_exported_json_is_the_same_tokenizer():
    """`to_tokenizer_json` hands the converted BPE to Hugging Face `tokenizers` unchanged."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = turnpack_tokenizer("llama3")
    hf = tokenizers.Tokenizer.from_str(tok.to_tokenizer_json())
    for text in HANDPICKED:
        assert hf.encode(text, add_special_tokens=False).ids == tok.tokenize(text), text
    json.loads(tok.to_tokenizer_json())


def test_bad_rank_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.tiktoken"
    bad.write_text("this is not base64 rank data\n")
    with pytest.raises(turnpack.TokenizerError, match=r"broken\.tiktoken"):
        turnpack.ChatTokenizer.from_tiktoken(str(bad), pattern=r"\w+", special_tokens={})
    with pytest.raises(OSError, match=r"missing\.tiktoken"):
        turnpack.ChatTokenizer.from_tiktoken(str(tmp_path / "missing.tiktoken"), pattern=r"\w+")
