"""Packing from Python: `turnpack.pack`, the streaming `turnpack.Packer` and `PackedBatch`.

Every packed batch is checked against the samples it came from by `tokenizers_for_tests.check_rows`,
an independent reading of the documented layout (whole samples, shifted labels where trained,
positions restarting per document, padding as one more segment).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import tokenizers_for_tests as T
import turnpack
from tokenizers_for_tests import check_rows


def random_samples(rng: random.Random, n: int, lo: int, hi: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _ in range(n):
        length = rng.randint(lo, hi)
        ids = np.array([rng.randrange(1, 50_000) for _ in range(length)], np.int32)
        mask = np.array([rng.random() < 0.5 for _ in range(length)], bool)
        mask[-1] = True  # at least one target
        out.append((ids, mask))
    return out


def test_layout_by_hand():
    # Two samples that fit one row of 10: [5 6 7] trains 7; [8 9 1 2] trains 1 and 2.
    a = (np.array([5, 6, 7], np.int32), np.array([0, 0, 1], bool))
    b = (np.array([8, 9, 1, 2], np.int32), np.array([0, 0, 1, 1], bool))
    batch = turnpack.pack([a, b], 10, pad_id=3)
    assert len(batch) == 1
    # Largest first: b then a, then 3 padding positions.
    np.testing.assert_array_equal(batch.input_ids[0], [8, 9, 1, 2, 5, 6, 7, 3, 3, 3])
    np.testing.assert_array_equal(batch.labels[0], [-100, 1, 2, -100, -100, 7, -100, -100, -100, -100])
    np.testing.assert_array_equal(batch.position_ids[0], [0, 1, 2, 3, 0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(batch.document_ids[0], [0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(batch.cu_seqlens[0], [0, 4, 7, 10])
    np.testing.assert_array_equal(batch.sample_ids[0], [1, 0, -1])
    assert batch.stats["trained_tokens"] == 3 and batch.stats["padding_tokens"] == 3
    assert check_rows(batch, {0: a, 1: b}, pad_id=3) == [1, 0]
    assert batch.input_ids.dtype == np.int32 and batch.labels.dtype == np.int64


def test_random_samples_are_whole_and_exactly_once():
    rng = random.Random(7)
    samples = random_samples(rng, 400, 2, 120)
    ids = [rng.randrange(10**12) for _ in samples]
    batch = turnpack.pack(samples, 128, buffer=64, max_open_rows=4, sample_ids=ids)
    seen = check_rows(batch, dict(zip(ids, samples)))
    assert sorted(seen) == sorted(ids)
    for r in range(len(batch)):  # the flat per-document view agrees with the padded one
        docs = batch.doc_lens[batch.row_doc_offsets[r] : batch.row_doc_offsets[r + 1]]
        np.testing.assert_array_equal(np.cumsum(docs), batch.cu_seqlens[r, 1 : len(docs) + 1])
    s = batch.stats
    assert s["samples_in"] == s["packed"] == 400 and s["pending"] == 0 and s["dropped"] == 0
    assert s["tokens"] == sum(len(x) for x, _ in samples)
    assert s["trained_tokens"] == sum(int(m[1:].sum()) for _, m in samples)
    assert s["rows"] == len(batch) and s["padding_tokens"] == len(batch) * 128 - s["tokens"]


@pytest.mark.parametrize("overflow", ["drop", "truncate"])
def test_overflow_is_counted(overflow):
    seq_len = 16
    fits = (np.arange(1, 11, dtype=np.int32), np.ones(10, bool))
    long_trainable = (np.arange(1, 41, dtype=np.int32), np.ones(40, bool))
    # Trained only beyond seq_len: truncation leaves nothing to train.
    long_untrainable = (np.arange(1, 41, dtype=np.int32), np.arange(40) >= seq_len)
    samples = [fits, long_trainable, long_untrainable]
    batch = turnpack.pack(samples, seq_len, overflow=overflow)
    s = batch.stats
    seen = check_rows(batch, dict(enumerate(samples)))
    if overflow == "drop":
        assert sorted(seen) == [0]
        assert s["dropped_too_long"] == 2 and s["truncated"] == 0 and s["dropped_nothing_to_train"] == 0
    else:
        assert sorted(seen) == [0, 1]
        assert s["dropped_too_long"] == 0 and s["truncated"] == 1 and s["dropped_nothing_to_train"] == 1
    assert s["samples_in"] == 3 == s["packed"] + s["dropped"]


def test_nothing_to_train_and_empty_are_dropped_and_counted():
    samples = [
        (np.array([1, 2, 3], np.int32), np.array([0, 1, 0], bool)),  # trainable
        (np.array([1, 2, 3], np.int32), np.zeros(3, bool)),  # no target
        (np.array([1, 2, 3], np.int32), np.array([1, 0, 0], bool)),  # first token is never a target
        (np.array([4], np.int32), np.array([1], bool)),  # one token: no target either
        (np.array([], np.int32), np.array([], bool)),  # empty
    ]
    batch = turnpack.pack(samples, 8)
    assert check_rows(batch, dict(enumerate(samples))) == [0]
    s = batch.stats
    assert (s["dropped_nothing_to_train"], s["dropped_empty"], s["packed"]) == (3, 1, 1)
    packer = turnpack.Packer(8)
    assert [packer.push(x) for x in samples] == [
        "accepted",
        "dropped_nothing_to_train",
        "dropped_nothing_to_train",
        "dropped_nothing_to_train",
        "dropped_empty",
    ]


def test_efficiency_at_4096_on_long_tailed_lengths():
    """Default buffer, 5,000 samples of lognormal length (median 600, clipped to 50..4096 tokens)."""
    rng = np.random.default_rng(2024)
    lengths = np.clip(np.round(rng.lognormal(np.log(600), 1.0, 5000)), 50, 4096).astype(int)
    samples = [(np.full(n, 7, np.int32), np.ones(n, bool)) for n in lengths]
    batch = turnpack.pack(samples, 4096)
    s = batch.stats
    print(
        f"\npacking efficiency at seq_len=4096: {batch.efficiency:.4%} "
        f"({s['rows']} rows, {s['tokens']:,} tokens, mean length {lengths.mean():.0f})"
    )
    assert s["packed"] == len(samples)
    assert batch.efficiency == pytest.approx(s["efficiency"])
    assert batch.efficiency >= 0.99
    # The bound on rows, for reference: no packing can use fewer than ceil(tokens / 4096).
    assert s["rows"] >= -(-s["tokens"] // 4096)


def test_packer_streaming_equals_pack():
    rng = random.Random(3)
    samples = random_samples(rng, 600, 2, 200)
    expected = turnpack.pack(samples, 256, buffer=50, max_open_rows=3)
    packer = turnpack.Packer(256, buffer=50, max_open_rows=3)
    pieces, i = [], 0
    while i < len(samples):
        step = rng.randint(1, 40)
        packer.extend(samples[i : i + step], sample_ids=list(range(i, i + step)))
        i += step
        if rng.random() < 0.5 and packer.ready_rows:
            pieces.append(packer.pop_ready())
    assert packer.stats["pending"] > 0
    pieces.append(packer.flush())
    assert packer.stats["pending"] == 0 and packer.ready_rows == 0
    for key in ("input_ids", "labels", "position_ids", "document_ids"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(p, key) for p in pieces]), getattr(expected, key)
        )
    np.testing.assert_array_equal(np.concatenate([p.doc_lens for p in pieces]), expected.doc_lens)
    ids = [p.sample_ids[r][p.sample_ids[r] >= 0].tolist() for p in pieces for r in range(len(p))]
    assert ids == [expected.sample_ids[r][expected.sample_ids[r] >= 0].tolist() for r in range(len(expected))]
    assert packer.stats == expected.stats


def test_encodings_from_a_real_tokenizer():
    tok = T.qwen3()
    records = T.conversations(60, seed=5)
    encodings = tok.encode_batch(records, num_threads=2)
    batch = turnpack.pack(encodings, 1024, sample_ids=list(range(100, 160)))
    samples = {100 + i: (e.input_ids, e.mask) for i, e in enumerate(encodings)}
    assert sorted(check_rows(batch, samples)) == sorted(samples)
    # Dicts and (ids, mask) tuples pack exactly like the Encoding objects.
    as_dicts = [{"input_ids": e.input_ids.tolist(), "mask": e.mask.astype(int).tolist()} for e in encodings]
    again = turnpack.pack(as_dicts, 1024, sample_ids=list(range(100, 160)))
    np.testing.assert_array_equal(again.labels, batch.labels)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ((np.array([1, 2, 3], np.int32), np.array([1, 1], bool)), r"sample 2.*3 tokens but mask has 2"),
        ("not a sample", r"sample 2: expected an Encoding"),
        ({"input_ids": [1, 2]}, r"sample 2: a dict sample needs \"mask\""),
        (([1, -5, 2], [1, 1, 1]), r"sample 2: token id -5 is out of range"),
        (([1, 2, 3], [1, 2, 0]), r"sample 2: mask value 2 is not 0 or 1"),
        ((1, 2, 3), r"sample 2: a tuple sample must be \(input_ids, mask\)"),
    ],
)
def test_bad_input_names_the_sample(bad, message):
    good = (np.array([1, 2], np.int32), np.array([0, 1], bool))
    with pytest.raises(ValueError, match=message):
        turnpack.pack([good, good, bad, good], 8)
    packer = turnpack.Packer(8)
    packer.push(good)
    packer.push(good)
    with pytest.raises(ValueError, match=r"sample 2"):
        packer.push(bad)
    assert packer.stats["samples_in"] == 2, "a rejected sample is not counted"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overflow": "wrap"}, "overflow must be"),
        ({"buffer": 0}, "buffer must be at least 1"),
        ({"pad_id": 2**31}, "pad_id must be at most"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        turnpack.pack([], 8, **kwargs)
    with pytest.raises(ValueError, match=message):
        turnpack.Packer(8, **kwargs)
