"""The binding's direct paths: `Packer.encode_extend` (conversations encoded straight into a packer)
equals `encode_batch` followed by `extend`, row for row and count for count; `decode` and
`vocab_size` agree with Hugging Face `tokenizers` on the same tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tokenizers
import turnpack
from test_encode_batch import encodable_cases
from test_mask_conformance import model_tokenizers

ROW_ARRAYS = ("input_ids", "labels", "position_ids", "document_ids", "cu_seqlens", "sample_ids")


def assert_same_rows(a: turnpack.PackedBatch, b: turnpack.PackedBatch) -> None:
    assert len(a) == len(b)
    for name in ROW_ARRAYS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.stats == b.stats


@pytest.mark.parametrize("num_threads", [1, 3])
def test_encode_extend_equals_encode_batch_then_extend(num_threads):
    tok, _ = model_tokenizers("qwen3")
    cases = encodable_cases(tok)
    good = [{"messages": c.messages, "tools": c.tools} for c in cases] * 3
    bad_role = [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}]
    rows = [r if i % 7 else bad_role for i, r in enumerate(good)]
    rows.append("not a conversation")  # fails while it is read, not while it is encoded
    ids = [1000 + 3 * i for i in range(len(rows))]

    direct = turnpack.Packer(512, buffer=16, overflow="truncate")
    errors = direct.encode_extend(tok, iter(rows), sample_ids=ids, num_threads=num_threads)

    reference = turnpack.Packer(512, buffer=16, overflow="truncate")
    encoded = tok.encode_batch(rows, num_threads=num_threads, on_error="skip")
    ok = [(i, e) for i, e in zip(ids, encoded) if isinstance(e, turnpack.Encoding)]
    reference.extend([e for _, e in ok], sample_ids=[i for i, _ in ok])

    assert len(errors) == len(rows)
    for i, (err, enc) in enumerate(zip(errors, encoded)):
        if isinstance(enc, turnpack.Encoding):
            assert err is None, i
        else:
            assert type(err) is type(enc) and str(err) == str(enc), i
            assert f"sample {i}:" in str(err)
    assert sum(e is not None for e in errors) == len(rows) // 7 + 2
    assert direct.stats == reference.stats
    assert_same_rows(direct.flush(), reference.flush())


def test_encode_extend_options_ids_and_errors():
    tok, _ = model_tokenizers("qwen3")
    convs = [c.messages for c in encodable_cases(tok)[:5]]
    for kwargs in ({"supervise": "last_assistant"}, {"eot": None}, {"enable_thinking": False}):
        direct = turnpack.Packer(256)
        assert direct.encode_extend(tok, convs, **kwargs) == [None] * len(convs)
        # default ids continue across calls, as consecutive push() ids would
        direct.encode_extend(tok, convs[:2], **kwargs)
        reference = turnpack.Packer(256)
        reference.extend(tok.encode_batch(convs + convs[:2], **kwargs))
        assert_same_rows(direct.flush(), reference.flush())
    packer = turnpack.Packer(256)
    with pytest.raises(ValueError, match="sample_ids has 1 entries for 2 samples"):
        packer.encode_extend(tok, convs[:2], sample_ids=[7])
    assert packer.stats["samples_in"] == 0
    with pytest.raises(ValueError, match="supervise must be one of"):
        packer.encode_extend(tok, convs, supervise="nobody")

    def broken_source():
        yield convs[0]
        raise KeyError("the source broke")

    with pytest.raises(KeyError, match="the source broke"):
        packer.encode_extend(tok, broken_source())
    assert packer.stats["samples_in"] == 0, "a source that raises pushes nothing"
    assert packer.encode_extend(tok, convs[:1]) == [None]
    assert packer.flush().sample_ids[0, 0] == 0, "ids continue from the last call that pushed"


@pytest.mark.parametrize("name", ["qwen3", "llama3"])
def test_decode_and_vocab_size_match_tokenizers(name):
    tok, _ = model_tokenizers(name)
    hf = tokenizers.Tokenizer.from_str(tok.to_tokenizer_json())
    text = "Hello, wörld! <|im_end|> 123 \n\t emoji 🙂 end"
    ids = tok.tokenize(text)
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True)
    spec = json.loads(tok.to_tokenizer_json())
    highest = max(max(spec["model"]["vocab"].values()), *(t["id"] for t in spec["added_tokens"]))
    assert tok.vocab_size == highest + 1
    assert tok.vocab_size >= hf.get_vocab_size(with_added_tokens=True)
