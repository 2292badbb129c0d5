"""`turnpack prepare` end to end: a JSONL file -> memory-mapped shards + index + stats, read back by
`ChatDataset` (same rows as streaming, sharded and shuffled by row, exact resume), through
`turnpack.prepare.main` and the `turnpack` command line."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import tokenizers_for_tests as T
import turnpack
from tokenizers_for_tests import check_rows
from turnpack import cli, prepare
from turnpack.data.shards import ShardReader

torch = pytest.importorskip("torch")

from turnpack.data import ChatDataLoader, ChatDataset

SEQ_LEN = 256


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return T.write_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def records():
    records = T.conversations(200, seed=21, max_turns=3, words=30)
    # Every conversation fits a row, so that every sample must come back.
    return [r for r, e in zip(records, T.qwen3().encode_batch(records)) if len(e.input_ids) <= SEQ_LEN]


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory, records):
    return T.write_jsonl(tmp_path_factory.mktemp("data") / "chats.jsonl", records)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, model_dir, jsonl):
    out = tmp_path_factory.mktemp("prepared") / "out"
    args = [str(jsonl), "--tokenizer", str(model_dir), "--seq-len", str(SEQ_LEN), "--out", str(out)]
    assert prepare.main([*args, "--rows-per-shard", "16", "--no-progress"]) == 0
    return out


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
    )


def sample_ids(batches) -> list[int]:
    return [int(s) for b in batches for s in b["sample_ids"].flatten() if s >= 0]


def test_prepare_writes_shards_index_and_stats(tmp_path, model_dir, jsonl, records, capsys):
    out = tmp_path / "out"
    args = [str(jsonl), "--tokenizer", str(model_dir), "--seq-len", str(SEQ_LEN), "--out", str(out)]
    assert prepare.main([*args, "--rows-per-shard", "16"]) == 0
    captured = capsys.readouterr()
    for line in ("samples in", "packed", "dropped", "tokens", "trained tokens", "packing efficiency"):
        assert line in captured.out
    assert "samples" in captured.err  # the progress bar
    index = json.loads((out / "index.json").read_text())
    stats = json.loads((out / "stats.json").read_text())["stats"]
    assert stats == index["stats"]
    assert stats["samples"] == stats["packed"] == len(records) and stats["dropped"] == 0
    assert index["rows"] == stats["rows"] == sum(s["rows"] for s in index["shards"])
    assert len(index["shards"]) == -(-index["rows"] // 16) and all(s["rows"] <= 16 for s in index["shards"])
    assert f"{stats['efficiency']:.2%}" in captured.out
    tokens = np.load(out / "00000.input_ids.npy", mmap_mode="r")
    assert isinstance(tokens, np.memmap) and tokens.shape == (16, SEQ_LEN) and tokens.dtype == np.int32


def test_shards_hold_what_pack_produces(prepared, records):
    encodings = T.qwen3().encode_batch(records)
    expected = turnpack.pack(encodings, SEQ_LEN)
    rows = ShardReader(prepared).rows(np.arange(len(expected)))
    assert ShardReader(prepared).num_rows == len(expected)
    for key in ("input_ids", "labels", "position_ids", "document_ids", "sample_ids"):
        np.testing.assert_array_equal(getattr(rows, key), getattr(expected, key), err_msg=key)
    np.testing.assert_array_equal(rows.cu_seqlens, expected.cu_seqlens)
    samples = {i: (e.input_ids, e.mask) for i, e in enumerate(encodings)}
    assert sorted(check_rows(rows, samples)) == list(range(len(records)))


def test_prepared_dataset_equals_streaming(prepared, jsonl):
    from_shards = ChatDataset(prepared, batch_size=4, shuffle=False)
    streamed = ChatDataset(jsonl, T.qwen3(), SEQ_LEN, batch_size=4, shuffle=False)
    assert same_batches(list(from_shards), list(streamed))
    assert from_shards.stats == streamed.stats
    assert from_shards.prepared_stats["samples"] == from_shards.stats["samples"]
    with pytest.raises(ValueError, match="prepared with seq_len=256"):
        ChatDataset(prepared, seq_len=512, batch_size=4)


def _rank(prepared, rank, **kw):
    return ChatDataset(prepared, batch_size=3, rank=rank, world_size=2, **kw)


def test_prepared_rows_are_sharded_and_shuffled_per_epoch(prepared, records):
    loaders = [ChatDataLoader(_rank(prepared, rank), num_workers=2) for rank in (0, 1)]
    orders = []
    for _epoch in range(2):
        ids = [sample_ids(list(loader)) for loader in loaders]
        assert not set(ids[0]) & set(ids[1])
        assert sorted(ids[0] + ids[1]) == list(range(len(records)))
        orders.append(ids[0])
    assert orders[0] != orders[1]
    in_order = sample_ids(list(ChatDataset(prepared, batch_size=3, shuffle=False)))
    assert sorted(in_order) == list(range(len(records))) and in_order != orders[0]


@pytest.mark.parametrize("drop_last", [False, True])
def test_prepared_exact_resume(prepared, drop_last):
    def make():
        return _rank(prepared, 1, epochs=2, drop_last=drop_last)

    full_loader = ChatDataLoader(make(), num_workers=2)
    full = list(full_loader)
    n = len(full)
    stats = full_loader.stats
    assert stats["samples"] == stats["packed"] + stats["dropped_last_batch"]
    assert (stats["dropped_last_batch"] > 0) == drop_last or not drop_last
    for cut in (1, n // 2, n - 1):
        first = ChatDataLoader(make(), num_workers=2)
        head = list(itertools.islice(iter(first), cut))
        second = ChatDataLoader(make(), num_workers=2)
        second.load_state_dict(json.loads(json.dumps(first.state_dict())))
        assert same_batches(head + list(second), full), f"resumed after {cut} of {n}"
        assert second.stats == stats, "counts after a seek equal counts after a full read"


def test_cli_with_a_tiktoken_tokenizer_gives_the_same_shards(tmp_path, prepared, jsonl):
    spec = T.qwen3_spec()
    specials = tmp_path / "specials.json"
    specials.write_text(json.dumps(T.QWEN3_SPECIALS))
    template = tmp_path / "template.jinja"
    template.write_text(T.template("qwen3"))
    out = tmp_path / "out"
    rc = cli.main(
        [
            "prepare",
            str(jsonl),
            "--tiktoken",
            str(spec.ranks_path),
            "--pattern",
            spec.pattern,
            "--special-tokens",
            str(specials),
            "--chat-template",
            str(template),
            "--template-var",
            "eos_token=<|im_end|>",
            "--seq-len",
            str(SEQ_LEN),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    a, b = ShardReader(prepared), ShardReader(out)
    assert a.num_rows == b.num_rows
    for key in ("input_ids", "labels", "cu_seqlens", "sample_ids"):
        np.testing.assert_array_equal(
            getattr(a.rows(np.arange(a.num_rows)), key), getattr(b.rows(np.arange(b.num_rows)), key)
        )


def test_module_entry_point_lists_prepare():
    out = subprocess.run(
        [sys.executable, "-m", "turnpack", "prepare", "--help"], capture_output=True, text=True, check=True
    )
    assert "--seq-len" in out.stdout and "--tokenizer" in out.stdout and "--tiktoken" in out.stdout


def test_bad_line_fails_naming_it_or_is_counted(tmp_path, model_dir, records, capsys):
    lines = [json.dumps(r) for r in records[:30]]
    lines[11] = "{not json"
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args = [
        str(data),
        "--tokenizer",
        str(model_dir),
        "--seq-len",
        str(SEQ_LEN),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert prepare.main([*args, "--chunk-size", "8", "--rows-per-shard", "1"]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:12: invalid JSON" in err
    assert list(out.iterdir()) == [], "a failed preparation leaves no shards"
    assert prepare.main([*args, "--on-error", "skip"]) == 0
    printed = capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())["stats"]
    assert stats["dropped_error"] == 1 and stats["packed"] == 29 and stats["samples"] == 30
    assert "bad.jsonl:12: invalid JSON" in printed  # listed under the first skipped errors


def test_output_folder_protection_and_usage_errors(tmp_path, prepared, model_dir, jsonl, capsys):
    args = [str(jsonl), "--tokenizer", str(model_dir), "--seq-len", str(SEQ_LEN), "--no-progress"]
    assert prepare.main([*args, "--out", str(prepared)]) == 2
    assert "is not empty" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert prepare.main([*args, "--out", str(foreign), "--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err and (foreign / "notes.txt").exists()
    again = tmp_path / "again"
    assert prepare.main([*args, "--out", str(again)]) == 0
    assert prepare.main([*args, "--out", str(again), "--overwrite", "--overflow", "truncate"]) == 0
    assert json.loads((again / "index.json").read_text())["metadata"]["options"]["overflow"] == "truncate"
    capsys.readouterr()
    assert prepare.main([str(jsonl), "--seq-len", "8", "--out", str(tmp_path / "x")]) == 2
    assert "give either --tokenizer" in capsys.readouterr().err
    assert prepare.main([str(tmp_path / "nope.jsonl"), *args[1:], "--out", str(tmp_path / "y")]) == 2
    assert "no such file" in capsys.readouterr().err
