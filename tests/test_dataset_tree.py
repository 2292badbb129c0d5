"""`history="expand"` end to end in the data layer: `ChatDataset` / `ChatDataLoader` streaming (the
packer's tree rows, every batch with the prefix arrays, exact accounting and resume), `turnpack prepare`
(tree shards written, recorded and read back as the streamed rows, never read as plain rows), and
`turnpack train` configs (the option flows to the dataset and the loop trains through the tree mask).

The data: Qwen3's template with the small test tokenizer (tests/tiny_tokenizer.py), conversations
with reasoning in every assistant turn (Qwen3 drops the reasoning of turns before the last user
message, so each such turn becomes a branch), mixed with conversations without reasoning (no tree).
"""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
import reference as R
import turnpack
from test_history import SPECIALS, qwen3
from tiny_tokenizer import tiny_tokenizer_json
from turnpack import prepare
from turnpack.data.batching import NO_DOCUMENT, ROLE_BRANCH, ROLE_CONTEXT, ROLE_SAMPLE, RowQueue, Rows
from turnpack.data.errors import SourceError
from turnpack.data.shards import TREE_VERSION, ShardReader, ShardWriter
from turnpack.data.stats import format_stats, merge_stats

torch = pytest.importorskip("torch")

from turnpack.data import ChatDataLoader, ChatDataset

# Trunks (at most 175 tokens here) fit a row; a trunk with its branches often does not, so trees
# are split with a context copy of their prefix.
SEQ_LEN = 192
EXPAND = {"history": "expand"}
PLAIN_KEYS = {"input_ids", "labels", "position_ids", "document_ids", "cu_seqlens", "sample_ids"}
TREE_BATCH_KEYS = {"prefix_starts", "prefix_ends", "doc_roles"}
PER_TOKEN = ("input_ids", "labels", "position_ids", "document_ids", "prefix_starts", "prefix_ends")
# Small packing buffers, so that rows close early and the first ones (plain conversations only) come
# out of the packer in pieces that hold no tree.
PACKING = {"buffer": 8, "max_open_rows": 2}


def chat(i: int, turns: int | None = None, reasoning: bool = True) -> dict:
    """A conversation of `turns` exchanges (1 to 5 by default), with reasoning in every answer."""
    msgs = [{"role": "system", "content": f"You are terse {i}."}]
    for t in range(1 + i % 5 if turns is None else turns):
        n = i * 7 + t
        answer = {"role": "assistant", "content": "yes" if n % 2 == 0 else "no"}
        if reasoning:
            answer["reasoning_content"] = f"{n} mod 2 = {n % 2}" + " so" * (i % 4)
        msgs += [{"role": "user", "content": f"Is {n} even?"}, answer]
    return {"messages": msgs}


def make_records(n: int, *, drops: bool = False) -> list[dict]:
    """Conversations without a tree first (packer output without trees), then a mix; with `drops`,
    also conversations too long for a row and some with nothing to train.

    A conversation has no tree when it has one exchange: Qwen3 rewrites every assistant turn before
    the last user message (even without reasoning, it leaves out the empty think block that
    inference writes)."""
    out = []
    for i in range(n):
        if i < 12 or i % 4 == 0:
            out.append(chat(i, turns=1, reasoning=i % 8 == 0))
        elif drops and i % 23 == 5:
            out.append(chat(i, turns=9))  # the trunk alone is longer than a row
        elif drops and i % 19 == 3:
            out.append({"messages": chat(i)["messages"][:2]})  # system and user: nothing to train
        else:
            out.append(chat(i))
    return out


@pytest.fixture(scope="module")
def tok() -> turnpack.ChatTokenizer:
    return qwen3()


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return make_records(90)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok):
    """A model folder of the same tokenizer and template, for `turnpack prepare` and `turnpack train`."""
    path = tmp_path_factory.mktemp("model")
    (path / "tokenizer.json").write_text(tiny_tokenizer_json())
    config = {"chat_template": R.load_template("Qwen-Qwen3-0.6B.jinja"), **SPECIALS}
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = turnpack.load_tokenizer(path)
    for record in make_records(20):
        a, b = (t.encode(record["messages"], history="expand") for t in (loaded, tok))
        assert np.array_equal(a.input_ids, b.input_ids) and len(a.branches) == len(b.branches)
    return path


def stream(records, tok, **kw) -> ChatDataset:
    base = {"batch_size": 3, "shuffle": False, "encode_kwargs": EXPAND, "encode_chunk": 4, **PACKING}
    return ChatDataset(records, tok, SEQ_LEN, **{**base, **kw})


def packed_expected(records, tok, **kw) -> turnpack.PackedBatch:
    encodings = tok.encode_batch([r["messages"] for r in records], history="expand")
    return turnpack.pack(encodings, SEQ_LEN, **{**PACKING, **kw})


def documents(batches) -> list[tuple[list[int], list[int], list[int]]]:
    """Per row of the batches: (document lengths, sample ids, roles)."""
    out = []
    for b in batches:
        for cu, sids, roles in zip(b["cu_seqlens"], b["sample_ids"], b["doc_roles"]):
            n = int((sids >= 0).sum())
            assert (roles[:n] >= 0).all() and (roles[n:] == NO_DOCUMENT).all()
            out.append((np.diff(cu[: n + 1].numpy()).tolist(), sids[:n].tolist(), roles[:n].tolist()))
    return out


def packed_documents(packed) -> list[tuple[list[int], list[int], list[int]]]:
    off = packed.row_doc_offsets
    roles = packed.doc_roles
    return [
        (
            packed.doc_lens[off[r] : off[r + 1]].tolist(),
            packed.sample_ids[r, : off[r + 1] - off[r]].tolist(),
            roles[off[r] : off[r + 1]].tolist(),
        )
        for r in range(len(packed))
    ]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
    )


def samples_of(batches) -> list[int]:
    """The sample ids of the samples' own documents (branches and context copies repeat their id)."""
    return [int(s) for b in batches for s in b["sample_ids"][b["doc_roles"] == ROLE_SAMPLE]]


def role_count(batches, role: int) -> int:
    return sum(int((b["doc_roles"] == role).sum()) for b in batches)


# ---------------------------------------------------------------------------------------------- rows


def test_rows_without_trees_get_empty_prefixes_when_mixed_with_tree_rows(tok):
    plain = turnpack.pack([tok.encode(chat(i, turns=1)["messages"]) for i in range(4)], SEQ_LEN)
    trees = packed_expected([chat(i) for i in (1, 2, 3)], tok)
    assert plain.prefix_starts is None and trees.prefix_starts is not None
    assert not Rows.from_packed(plain).has_trees, "ordinary rows stay as they are"
    filled = Rows.from_packed(plain, trees=True)
    assert not filled.prefix_ends.any() and not filled.prefix_starts.any()
    assert filled.doc_roles.dtype == np.int8
    assert [r.tolist() for r in filled.row_doc_roles()] == [[ROLE_SAMPLE] * int(c) for c in filled.doc_counts]
    queue = RowQueue()
    queue.add(Rows.from_packed(plain))
    queue.add(Rows.from_packed(trees))
    mixed = queue.take(len(plain) + 1)  # the plain rows, then the first tree row
    assert mixed.has_trees and len(mixed) == len(plain) + 1
    assert not mixed.prefix_ends[: len(plain)].any()
    np.testing.assert_array_equal(mixed.prefix_ends[-1], trees.prefix_ends[0])
    np.testing.assert_array_equal(mixed.position_ids[-1], trees.position_ids[0])
    width = mixed.sample_ids.shape[1]
    assert mixed.doc_roles.shape == (len(mixed), width) and mixed.cu_seqlens.shape[1] == width + 1
    for r, roles in enumerate(mixed.row_doc_roles()):
        want = [ROLE_SAMPLE] * len(roles) if r < len(plain) else packed_documents(trees)[0][2]
        assert roles.tolist() == want
        assert (mixed.doc_roles[r, len(roles) :] == NO_DOCUMENT).all()
    assert mixed.count_roles(ROLE_BRANCH) == packed_documents(trees)[0][2].count(ROLE_BRANCH)
    rest = queue.take(len(trees))
    np.testing.assert_array_equal(rest.prefix_starts, trees.prefix_starts[1:])


# ---------------------------------------------------------------------------------------------- stream


def test_streamed_expand_batches_are_the_packers_rows(tok, records):
    ds = stream(records, tok)
    batches = list(ds)
    packed = packed_expected(records, tok)
    for b in batches:
        assert set(b) == PLAIN_KEYS | TREE_BATCH_KEYS, "every batch of an expand stream has the tree arrays"
        assert all(b[k].dtype == torch.int64 for k in TREE_BATCH_KEYS)
        assert b["prefix_starts"].shape == b["input_ids"].shape
    # The packer's first piece of rows holds no tree: its row joins tree rows in the first batch with
    # empty ranges and role 0.
    assert not batches[0]["prefix_ends"][0].any() and not batches[0]["doc_roles"][0].gt(0).any()
    assert batches[0]["prefix_ends"][1:].any()
    # A batch without any tree still has the arrays (all empty), so the keys never change.
    no_tree = list(stream(records[:12], tok))
    assert all(set(b) == PLAIN_KEYS | TREE_BATCH_KEYS and not b["prefix_ends"].any() for b in no_tree)
    assert all(b["doc_roles"].max() == ROLE_SAMPLE for b in no_tree)
    for key in PER_TOKEN:
        np.testing.assert_array_equal(
            torch.cat([b[key] for b in batches]).numpy(), getattr(packed, key), err_msg=key
        )
    assert documents(batches) == packed_documents(packed)
    s, p = ds.stats, packed.stats
    assert p["branches_packed"] > 20 and p["tree_splits"] > 5, "the data has branches and split trees"
    assert s["samples"] == len(records) == s["packed"] + s["dropped"] and s["pending"] == 0
    assert s["packed"] == p["packed"] == len(samples_of(batches)) == len(set(samples_of(batches)))
    assert s["branches"] == s["branches_in"] == p["branches_packed"] == role_count(batches, ROLE_BRANCH)
    assert s["tree_splits"] == p["tree_splits"] == role_count(batches, ROLE_CONTEXT)
    assert s["branches_pending"] == 0
    assert s["trained_tokens"] == p["trained_tokens"] and s["tokens"] == p["tokens"]
    assert "branches in" in format_stats(s)


def test_rendered_and_faithful_batches_keep_todays_layout(tok, records):
    rendered, faithful = (
        stream(records, tok, encode_kwargs={"history": h}) for h in ("rendered", "faithful")
    )
    rendered_batches, faithful_batches = list(rendered), list(faithful)
    assert all(set(b) == PLAIN_KEYS for b in rendered_batches + faithful_batches)
    plain = turnpack.pack(tok.encode_batch([r["messages"] for r in records]), SEQ_LEN, **PACKING)
    np.testing.assert_array_equal(torch.cat([b["input_ids"] for b in rendered_batches]), plain.input_ids)
    # faithful trains none of the turns Qwen3 rewrites, and makes no branch
    r, f = rendered.stats, faithful.stats
    assert f["trained_tokens"] < r["trained_tokens"]
    assert f["branches"] == f["branches_in"] == f["tree_splits"] == r["branches_in"] == 0
    assert f["samples"] == f["packed"] + f["dropped"] == len(records)
    assert "branches" not in format_stats(f), "other summaries read as before"


def test_accounting_is_exact_over_two_ranks_of_two_workers_with_drop_last(tok):
    recs = make_records(240, drops=True)
    expected = packed_expected(recs, tok).stats
    assert expected["dropped_too_long"] > 3 and expected["dropped_nothing_to_train"] > 3
    assert expected["branches_dropped"] > 3, "branches of dropped trees are counted as dropped"
    per_rank, batches = [], []
    for rank in (0, 1):
        ds = ChatDataset(
            recs, tok, SEQ_LEN, batch_size=4, shuffle_buffer=30, drop_last=True, rank=rank, world_size=2,
            encode_kwargs=EXPAND, encode_chunk=4, **PACKING,
        )  # fmt: skip
        loader = ChatDataLoader(ds, num_workers=2)
        batches += list(loader)
        per_rank.append(loader.stats)
    s = merge_stats(per_rank)
    assert s["samples"] == len(recs) == s["packed"] + s["dropped"] and s["pending"] == 0
    assert s["dropped_last_batch"] > 0, "each reader drops its short last batch"
    for key in ("dropped_too_long", "dropped_nothing_to_train", "branches_in", "branches_dropped"):
        assert s[key] == expected[key], key
    assert s["packed"] + s["dropped_last_batch"] == expected["packed"]
    assert s["branches"] + s["branches_dropped_last_batch"] == expected["branches_packed"]
    assert s["branches_in"] == s["branches"] + s["branches_dropped"] + s["branches_dropped_last_batch"]
    assert s["branches_pending"] == 0
    ids = samples_of(batches)
    assert len(ids) == len(set(ids)) == s["packed"], "every sample's own document is yielded once"
    assert role_count(batches, ROLE_BRANCH) == s["branches"]
    assert role_count(batches, ROLE_CONTEXT) == s["tree_splits"]
    assert s["trained_tokens"] == sum(int(b["labels"].ne(-100).sum()) for b in batches)


def _resumed(make, num_workers: int, cut: int):
    first = ChatDataLoader(make(), num_workers=num_workers)
    head = list(itertools.islice(iter(first), cut))
    second = ChatDataLoader(make(), num_workers=num_workers)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    return head + list(second), second


@pytest.mark.parametrize("num_workers", [0, 2])
def test_expand_stream_resumes_exactly(tok, records, num_workers):
    def make():
        return stream(records, tok, batch_size=2, shuffle=True, shuffle_buffer=20, epochs=2)

    full_loader = ChatDataLoader(make(), num_workers=num_workers)
    full = list(full_loader)
    n = len(full)
    assert n > 20 and sum(int(b["prefix_ends"].gt(0).sum()) for b in full) > 0
    for cut in (1, n // 2 - 1, n // 2 + 2, n - 1):
        batches, resumed = _resumed(make, num_workers, cut)
        assert same_batches(batches, full), f"resumed after {cut} of {n} batches"
        assert resumed.stats == full_loader.stats


# ---------------------------------------------------------------------------------------------- prepare


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("data") / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def prepare_args(jsonl, model_dir, out, *extra: str) -> list[str]:
    return [
        str(jsonl), "--tokenizer", str(model_dir), "--seq-len", str(SEQ_LEN), "--out", str(out),
        "--buffer", "8", "--max-open-rows", "2", "--rows-per-shard", "4", "--no-progress", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, jsonl, model_dir):
    out = tmp_path_factory.mktemp("prepared") / "trees"
    assert prepare.main(prepare_args(jsonl, model_dir, out, "--encode-kwargs", json.dumps(EXPAND))) == 0
    return out


def test_prepare_writes_tree_shards_and_records_it(prepared, jsonl, model_dir, tmp_path, capsys):
    index = json.loads((prepared / "index.json").read_text())
    assert index["version"] == TREE_VERSION and index["trees"] is True and index["history"] == "expand"
    assert index["metadata"]["options"]["encode_kwargs"]["history"] == "expand"
    for key in ("position_ids", "prefix_starts", "prefix_ends", "doc_roles"):
        assert (prepared / f"00000.{key}.npy").exists(), key
    roles = np.load(prepared / "00000.doc_roles.npy")
    assert roles.dtype == np.uint8 and roles.shape == np.load(prepared / "00000.doc_lens.npy").shape
    stats = index["stats"]
    assert stats["samples"] == stats["packed"] + stats["dropped"] and stats["branches"] > 20
    assert stats["branches_in"] == stats["branches"] and stats["tree_splits"] > 5
    # A plain preparation of the same data stays as it was: version 1, no tree files.
    plain = tmp_path / "plain"
    capsys.readouterr()
    assert prepare.main(prepare_args(jsonl, model_dir, plain)) == 0
    assert "branches" not in capsys.readouterr().out
    plain_index = json.loads((plain / "index.json").read_text())
    assert plain_index["version"] == 1 and plain_index["trees"] is False
    assert not list(plain.glob("*.prefix_starts.npy"))
    assert not ShardReader(plain).rows(np.arange(2)).has_trees


def test_tree_shards_hold_what_pack_produces(prepared, tok, records):
    packed = packed_expected(records, tok)
    reader = ShardReader(prepared)
    assert reader.trees and reader.history == "expand" and reader.num_rows == len(packed)
    rows = reader.rows(np.arange(len(packed)))
    for key in (*PER_TOKEN, "cu_seqlens", "sample_ids"):
        np.testing.assert_array_equal(getattr(rows, key), getattr(packed, key), err_msg=key)
    got = [
        (lens.tolist(), s.tolist(), r.tolist())
        for lens, s, r in zip(rows.doc_lens(), rows.row_sample_ids(), rows.row_doc_roles())
    ]
    assert got == packed_documents(packed)


def test_prepared_tree_folder_reads_back_as_the_stream(prepared, jsonl, tok):
    from_shards = ChatDataset(prepared, batch_size=3, shuffle=False)
    streamed = stream(jsonl, tok)
    shard_batches = list(from_shards)
    assert all(set(b) == PLAIN_KEYS | TREE_BATCH_KEYS for b in shard_batches)
    assert same_batches(shard_batches, list(streamed))
    assert from_shards.stats == streamed.stats
    assert from_shards.prepared_stats["branches"] == from_shards.stats["branches"]


def test_prepared_tree_folder_resumes_exactly(prepared):
    def make():
        return ChatDataset(prepared, batch_size=2, rank=1, world_size=2, epochs=2, drop_last=True)

    full_loader = ChatDataLoader(make(), num_workers=2)
    full = list(full_loader)
    n = len(full)
    s = full_loader.stats
    assert s["samples"] == s["packed"] + s["dropped_last_batch"]
    assert s["branches_in"] == s["branches"] + s["branches_dropped_last_batch"]
    for cut in (1, n // 2):
        batches, resumed = _resumed(make, 2, cut)
        assert same_batches(batches, full), f"resumed after {cut} of {n}"
        assert resumed.stats == s


def test_a_tree_folder_is_never_read_as_plain_rows(prepared, tmp_path, jsonl, model_dir, tok):
    def tampered(**changes) -> ShardReader:
        folder = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(prepared, folder)
        index = json.loads((folder / "index.json").read_text())
        (folder / "index.json").write_text(json.dumps({**index, **changes}))
        return ShardReader(folder)

    # An index rewritten to say plain rows (as an older turnpack would write it): the tree files beside it
    # are found, rather than deriving positions from the lengths.
    with pytest.raises(SourceError, match="holds prefix-tree arrays"):
        tampered(version=1, trees=False).rows(np.arange(2))
    with pytest.raises(SourceError, match="inconsistent"):
        tampered(trees=False)
    with pytest.raises(SourceError, match="inconsistent"):
        tampered(version=1)
    # A plain folder asked for trees, and tree rows given to a plain writer or plain options.
    plain = tmp_path / "plain"
    assert prepare.main(prepare_args(jsonl, model_dir, plain)) == 0
    with pytest.raises(ValueError, match="holds no prefix trees"):
        ChatDataset(plain, batch_size=2, encode_kwargs=EXPAND)
    writer = ShardWriter(tmp_path / "w", SEQ_LEN, pad_id=0)
    with pytest.raises(ValueError, match='history="expand"'):
        writer.add(Rows.from_packed(packed_expected(records_with_trees(), tok)))
    with pytest.raises(ValueError, match="history='expand'"):
        prepare.prepare([], tok, writer, turnpack.PackingOptions(history="expand"), progress=False)
    with pytest.raises(ValueError, match="history must be one of"):
        ShardWriter(tmp_path / "x", SEQ_LEN, pad_id=0, history="tree")


def records_with_trees() -> list[dict]:
    return [chat(i) for i in (2, 3, 4)]


# ---------------------------------------------------------------------------------------------- train


def test_a_training_step_on_a_dataset_batch_uses_the_prefix_arrays(tok, records):
    from turnpack.train.loop import forward_backward
    from turnpack.train.model import Transformer, config_tiny

    batch = next(b for b in stream(records, tok) if b["prefix_ends"].gt(0).any())
    torch.manual_seed(0)
    config = config_tiny(tok.vocab_size, dim=32, n_heads=4, n_kv_heads=2, ffn_hidden=64, max_seq_len=SEQ_LEN)
    model = Transformer(config).double()
    tree = forward_backward(model, model, [batch])
    masks = model.build_attention_mask(
        batch["document_ids"], prefix_starts=batch["prefix_starts"], prefix_ends=batch["prefix_ends"]
    )
    with torch.no_grad():
        _, want = model(
            batch["input_ids"], batch["position_ids"], labels=batch["labels"], loss_reduction="sum", **masks
        )
    assert tree.loss_sum.item() == pytest.approx(want.item(), abs=1e-9)
    blind = forward_backward(model, model, [{k: v for k, v in batch.items() if k not in TREE_BATCH_KEYS}])
    assert abs(blind.loss_sum.item() - tree.loss_sum.item()) > 1e-3, "without them, branches lose context"
    assert tree.trained == blind.trained == int(batch["labels"].ne(-100).sum())


def test_train_config_history_reaches_the_dataset_and_the_loop(tmp_path, jsonl, model_dir, prepared):
    from turnpack.train import train
    from turnpack.train.config import ConfigError, DataConfig, TrainConfig, apply_override
    from turnpack.train.data import build_loader

    assert DataConfig(history="expand").packing_options(pad_id=3) == turnpack.PackingOptions(
        history="expand", pad_id=3
    )
    settings = {
        "model.dim": 32, "model.n_layers": 1, "model.n_heads": 4, "model.n_kv_heads": 2,
        "model.ffn_hidden": 64, "data.source": "dataset", "data.path": str(jsonl),
        "data.tokenizer": str(model_dir), "data.seq_len": SEQ_LEN, "data.batch_size": 2,
        "data.history": "expand", "train.max_steps": 2, "train.warmup_steps": 1, "train.log_every": 1,
        "train.device": "cpu", "checkpoint.every": 0, "train.out_dir": str(tmp_path / "run"),
    }  # fmt: skip
    config = TrainConfig()
    for key, value in settings.items():
        config = apply_override(config, f"{key}={json.dumps(value)}")
    assert config.data.history == "expand" and TrainConfig().data.history == "rendered"
    batch = next(iter(build_loader(config.data).loader))
    assert set(batch) >= TREE_BATCH_KEYS
    result = train(config, echo=lambda _: None)
    assert [r["step"] for r in result.history] == [1, 2]
    with pytest.raises(ConfigError, match="expected one of"):
        apply_override(config, 'data.history="tree"')
    plain = tmp_path / "plain"
    assert prepare.main(prepare_args(jsonl, model_dir, plain)) == 0
    with pytest.raises(ConfigError, match="holds no prefix trees"):
        build_loader(DataConfig(source="dataset", path=str(plain), history="expand"))
    # A tree folder needs no history key: its rows are trees already.
    batch = next(iter(build_loader(DataConfig(source="dataset", path=str(prepared), batch_size=2)).loader))
    assert set(batch) >= TREE_BATCH_KEYS
