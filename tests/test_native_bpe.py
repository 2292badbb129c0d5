"""turnpack's own byte-level BPE encoder (rust/core/src/bpe) against Hugging Face `tokenizers`.

For every real byte-level tokenizer the test environment carries (Qwen3, Qwen3.5, Llama 3, Llama 4,
cl100k, DeepSeek-V4), turnpack must pick its own encoder by default and give exactly the ids and
character offsets that `tokenizers` gives, on:
- random text drawn from pools that hit every pre-tokenizer branch (contractions, digit runs,
  whitespace runs of every Unicode kind, punctuation, several scripts, combining marks, emoji,
  special tokens glued to text);
- every Unicode code point, each in a context of letters, digits, spaces and a contraction;
- realistic text: the benchmark workload's conversations and this repository's source files.
Tokenizers that do not qualify keep `tokenizers` and say why.
"""

from __future__ import annotations

import json
import pickle
import random
import sys
from functools import cache
from pathlib import Path

import pytest
import real_tokenizers as RT
import tokenizers
import turnpack

ROOT = Path(__file__).resolve().parent.parent
NAMES = (*RT.NAMES, "deepseek-v4")

POOLS = [
    "abcdeXYZ",
    "0123456789",
    " ",
    "  \t\n\r\x0b\x0c\u00a0\u2003\u3000\u0085\u2028\u2029",
    "'sStTlLdDmMrReEvV\u017f\u212a",
    ".,;:!?-_/\\()[]{}<>\"'`~@#$%^&*+=|",
    "éÉçßİıǅ\u0301\u0308\u0323",
    "中文字符日本語のカタカナ한국어",
    "عربيةעבריתहिन्दीไทย",
    "👩\u200d👧🇫🇷🙂\ufe0f",
    "½²٣४\u2160",
]


@cache
def chat_tokenizer(name: str) -> turnpack.ChatTokenizer:
    if name == "deepseek-v4":
        return turnpack.ChatTokenizer(RT.require_deepseek_v4_dir() / "tokenizer.json")
    spec = RT.require_spec(name)
    return turnpack.ChatTokenizer.from_tiktoken(spec.ranks_path, spec.pattern, spec.special_tokens)


@cache
def hf_tokenizer(name: str) -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_str(chat_tokenizer(name).to_tokenizer_json())


def random_texts(name: str, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(f"{name}/{seed}")
    specials = chat_tokenizer(name).special_tokens[:30]
    texts = []
    for i in range(n):
        text = "".join(rng.choice(rng.choice(POOLS)) for _ in range(rng.randint(1, 60)))
        if i % 5 == 0 and specials:
            cut = rng.randint(0, len(text))
            text = text[:cut] + rng.choice(specials) + text[cut:]
        texts.append(text)
    return texts


def import_workload():
    """bench/workload.py: the benchmark's deterministic conversations."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import workload
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return workload


def realistic_texts() -> list[str]:
    workload = import_workload()
    texts = [json.dumps(workload.conversation(i), ensure_ascii=False, indent=1) for i in range(150)]
    sources = sorted((ROOT / "python" / "turnpack").rglob("*.py")) + sorted((ROOT / "rust").rglob("*.rs"))
    texts += [p.read_text(encoding="utf-8") for p in sources[:60]]
    return texts


def assert_same(name: str, texts: list[str]) -> None:
    ct, hf = chat_tokenizer(name), hf_tokenizer(name)
    for text in texts:
        ids, offsets = ct.tokenize(text, with_offsets=True)
        expected = hf.encode(text, add_special_tokens=False)
        assert ids == expected.ids, f"{name}: {text!r}"
        assert offsets == expected.offsets, f"{name}: {text!r}"


@pytest.mark.parametrize("name", NAMES)
def test_qualifying_tokenizers_use_turnpacks_encoder(name):
    ct = chat_tokenizer(name)
    assert ct.bpe_backend == "turnpack", ct.bpe_backend_unavailable
    assert ct.bpe_backend_unavailable is None


@pytest.mark.parametrize("name", NAMES)
def test_random_text_matches_tokenizers(name):
    assert_same(name, random_texts(name, 3000))


@pytest.mark.parametrize("name", NAMES)
def test_realistic_text_matches_tokenizers(name):
    assert_same(name, realistic_texts())


# Between them these patterns use every class the others do (\p{L} \p{N} \s, \p{M}, the cased
# letter classes, \p{P} \p{S}, case-insensitive contractions).
@pytest.mark.parametrize("name", ["qwen3.5", "llama4", "deepseek-v4"])
def test_every_code_point_matches_tokenizers(name):
    """Each code point between letters, digits, spaces and a contraction: a character class that
    the two regex engines read differently (Unicode versions, case folding) shows up here."""
    ct = chat_tokenizer(name)
    reference = ct.with_bpe_backend("tokenizers")
    points = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    for k in range(0, len(points), 8192):
        text = "".join(f"{c}a{c}1{c} {c}{c}'S{c}" for c in points[k : k + 8192])
        if ct.tokenize(text) != reference.tokenize(text):
            bad = next(
                c
                for c in points[k : k + 8192]
                if ct.tokenize(f"{c}a{c}1{c} {c}{c}'S{c}") != reference.tokenize(f"{c}a{c}1{c} {c}{c}'S{c}")
            )
            pytest.fail(f"{name}: U+{ord(bad):04X} tokenizes differently")


def test_encode_is_the_same_with_either_backend():
    from tokenizers_for_tests import qwen3

    workload = import_workload()
    templated = qwen3()
    reference = templated.with_bpe_backend("tokenizers")
    assert (templated.bpe_backend, reference.bpe_backend) == ("turnpack", "tokenizers")
    for i in range(40):
        conv = workload.conversation(i)
        a = templated.encode(conv["messages"], tools=conv["tools"])
        b = reference.encode(conv["messages"], tools=conv["tools"])
        assert a.input_ids.tolist() == b.input_ids.tolist()
        assert a.mask.tolist() == b.mask.tolist()
        assert a.offsets.tolist() == b.offsets.tolist()


def test_backend_survives_pickling():
    ct = chat_tokenizer("llama3")
    for backend in ("turnpack", "tokenizers"):
        copy = pickle.loads(pickle.dumps(ct.with_bpe_backend(backend)))
        assert copy.bpe_backend == backend
        assert copy.tokenize("it's 12345 ok") == ct.tokenize("it's 12345 ok")


def test_tokenizers_that_do_not_qualify_keep_tokenizers():
    data = json.loads(chat_tokenizer("llama3").to_tokenizer_json())
    data["added_tokens"][0]["lstrip"] = True
    ct = turnpack.ChatTokenizer.from_tokenizer_json(json.dumps(data))
    assert ct.bpe_backend == "tokenizers"
    assert "lstrip" in ct.bpe_backend_unavailable
    with pytest.raises(ValueError, match="lstrip"):
        ct.with_bpe_backend("turnpack")
    with pytest.raises(ValueError, match="bpe_backend"):
        ct.with_bpe_backend("fast")
    text = "Hello  <|begin_of_text|> world"
    expected = tokenizers.Tokenizer.from_str(json.dumps(data)).encode(text, add_special_tokens=False).ids
    assert ct.tokenize(text) == expected


def test_hugging_face_style_qwen_file_matches_tokenizers():
    """Qwen's own tokenizer.json: NFC normalizer, merges applied even to whole-vocabulary words
    (no `ignore_merges`), a ByteLevel post-processor. Text that is not NFC goes to `tokenizers`."""
    data = json.loads(chat_tokenizer("qwen3").to_tokenizer_json())
    data["normalizer"] = {"type": "NFC"}
    data["model"]["ignore_merges"] = False
    data["post_processor"] = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": False,
        "use_regex": False,
    }
    text = json.dumps(data)
    ct = turnpack.ChatTokenizer.from_tokenizer_json(text)
    assert ct.bpe_backend == "turnpack", ct.bpe_backend_unavailable
    hf = tokenizers.Tokenizer.from_str(text)
    texts = random_texts("qwen3", 2000, seed=1) + realistic_texts()[:40] + ["cafe\u0301 \u212a Å"]
    for t in texts:
        ids, offsets = ct.tokenize(t, with_offsets=True)
        expected = hf.encode(t, add_special_tokens=False)
        assert ids == expected.ids, t
        assert offsets == expected.offsets, t
