"""Sample accounting on 100,000 generated conversations: every sample is in exactly one packed row of
the epoch, or counted as dropped with its reason - streamed by two ranks of two DataLoader workers
each, and (on the first 20,000) prepared offline then read back.

The conversations are short and synthetic (cheap to encode); about one in two hundred is made bad on
purpose, each kind at its own set of lines: undecodable JSON, an unknown role, an empty conversation
(all three `dropped_error` with `on_error="skip"`), no assistant turn (`dropped_nothing_to_train`),
longer than a row (`dropped_too_long`). Some lines are blank (not samples) and some records are in
ShareGPT form (read by `fields="auto"`).
"""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import pytest
import tokenizers_for_tests as T
from turnpack import prepare
from turnpack.data import merge_stats

torch = pytest.importorskip("torch")

from turnpack.data import ChatDataLoader, ChatDataset

N_LINES = 100_000
SEQ_LEN = 256

# Line kind -> the count it must end up in.
OUTCOME = {
    "ok": "packed",
    "sharegpt": "packed",
    "bad_json": "dropped_error",
    "bad_role": "dropped_error",
    "empty": "dropped_error",
    "no_assistant": "dropped_nothing_to_train",
    "too_long": "dropped_too_long",
    "blank": None,  # not a sample
}


def kind(i: int) -> str:
    for name, modulus, rest in (
        ("blank", 4999, 7),
        ("bad_json", 997, 10),
        ("bad_role", 991, 20),
        ("empty", 983, 30),
        ("no_assistant", 977, 40),
        ("too_long", 971, 50),
        ("sharegpt", 7, 3),
    ):
        if i % modulus == rest:
            return name
    return "ok"


def line(i: int) -> str:
    k = kind(i)
    question, answer = f"question {i} about {i % 13} things", f"answer {i * 7 % 1000} " + "ok " * (i % 9)
    if k == "blank":
        return ""
    if k == "bad_json":
        return '{"messages": [{"role": "user", '
    if k == "sharegpt":
        return json.dumps(
            {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}
        )
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    if k == "bad_role":
        messages[0]["role"] = "narrator"
    elif k == "empty":
        messages = []
    elif k == "no_assistant":
        messages = messages[:1]
    elif k == "too_long":
        messages[1]["content"] = "long " * 400
    return json.dumps({"messages": messages})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("accounting") / "chats.jsonl"
    path.write_text("\n".join(line(i) for i in range(N_LINES)) + "\n")
    kinds = [kind(i) for i in range(N_LINES)]
    expected = Counter(OUTCOME[k] for k in kinds if OUTCOME[k])
    packed = np.array([i for i, k in enumerate(kinds) if OUTCOME[k] == "packed"])
    assert all(expected[reason] > 50 for reason in set(OUTCOME.values()) - {None})
    return path, expected, packed


def check_accounting(stats, expected, ids, packed):
    """The counts match the designed outcome, and `ids` (all packed documents) hold each sample once."""
    assert stats["samples"] == sum(expected.values())
    for reason in ("packed", "dropped_error", "dropped_nothing_to_train", "dropped_too_long"):
        assert stats[reason] == expected[reason], reason
    assert stats["dropped_empty"] == stats["dropped_last_batch"] == stats["pending"] == 0
    assert stats["samples"] == stats["packed"] + stats["dropped"]
    assert len(ids) == stats["packed"]
    unique, counts = np.unique(ids, return_counts=True)
    assert counts.max() == 1, f"sample {unique[counts.argmax()]} is packed {counts.max()} times"
    np.testing.assert_array_equal(unique, packed)  # sample id = line index in a single file


def test_streamed_by_two_ranks_of_two_workers(data):
    path, expected, packed = data
    tokenizer = T.qwen3("chatml")
    started = time.monotonic()
    ids, per_rank = [], []
    for rank in (0, 1):
        dataset = ChatDataset(
            path,
            tokenizer,
            SEQ_LEN,
            batch_size=16,
            on_error="skip",
            rank=rank,
            world_size=2,
            shuffle_buffer=2048,
        )
        loader = ChatDataLoader(dataset, num_workers=2)
        for batch in loader:
            sids = batch["sample_ids"]
            ids.append(sids[sids >= 0].numpy())
        per_rank.append(loader.stats)
    elapsed = time.monotonic() - started
    stats = merge_stats(per_rank)
    print(
        f"\nstreamed {N_LINES:,} lines in {elapsed:.1f} s: {stats['rows']:,} rows, efficiency {stats['efficiency']:.2%}"
    )
    check_accounting(stats, expected, np.concatenate(ids), packed)
    assert abs(per_rank[0]["samples"] - per_rank[1]["samples"]) <= 1, "ranks share the samples evenly"


def test_prepared_offline(tmp_path, capsys):
    # The same pipeline as streaming, offline: its first 20,000 lines keep the test fast.
    n_lines = 20_000
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(line(i) for i in range(n_lines)) + "\n")
    kinds = [kind(i) for i in range(n_lines)]
    expected = Counter(OUTCOME[k] for k in kinds if OUTCOME[k])
    packed = np.array([i for i, k in enumerate(kinds) if OUTCOME[k] == "packed"])
    assert all(expected[reason] > 10 for reason in set(OUTCOME.values()) - {None})
    model = T.write_model_dir(tmp_path / "model", "chatml")
    out = tmp_path / "out"
    started = time.monotonic()
    args = [str(path), "--tokenizer", str(model), "--seq-len", str(SEQ_LEN), "--out", str(out)]
    assert prepare.main([*args, "--on-error", "skip", "--no-progress"]) == 0
    elapsed = time.monotonic() - started
    stats = json.loads((out / "stats.json").read_text())["stats"]
    ids = np.concatenate([np.load(f) for f in sorted(out.glob("*.sample_ids.npy"))])
    with capsys.disabled():
        print(f"\nprepared {n_lines:,} lines in {elapsed:.1f} s: {stats['rows']:,} rows")
    check_accounting(stats, expected, ids, packed)
    # Reading the shards back: every sample once, every epoch, across ranks and workers.
    read = []
    for rank in (0, 1):
        loader = ChatDataLoader(ChatDataset(out, batch_size=64, rank=rank, world_size=2), num_workers=2)
        read += [b["sample_ids"][b["sample_ids"] >= 0].numpy() for b in loader]
    np.testing.assert_array_equal(np.sort(np.concatenate(read)), packed)
