"""`ChatDataset` and `ChatDataLoader`: sources, field mapping, batches, sharding, shuffling, errors, and
exact resume with several DataLoader workers and (simulated) ranks."""

from __future__ import annotations

import gzip
import itertools
import json
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tokenizers_for_tests as T
from tokenizers_for_tests import check_rows

torch = pytest.importorskip("torch")

import turnpack
from turnpack.data import (
    ChatDataLoader,
    ChatDataset,
    RecordError,
    SourceError,
    split_sample_id,
    to_conversation,
)
from turnpack.data.sharding import Shard
from turnpack.data.sources import iter_epoch, resolve_sources

SEQ_LEN = 256
KEYS = {"input_ids", "labels", "position_ids", "document_ids", "cu_seqlens", "sample_ids"}


@pytest.fixture(scope="module")
def tok():
    return T.qwen3()


@pytest.fixture(scope="module")
def records():
    return T.conversations(240, seed=11, max_turns=3, words=30)


@pytest.fixture(scope="module")
def encoded(tok, records):
    """Sample id (= row of a single source) -> (input_ids, mask), encoded one by one."""
    return {i: (e.input_ids, e.mask) for i, e in enumerate(tok.encode_batch(records, num_threads=2))}


def same_batches(a, b, keys=KEYS) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in keys) for x, y in zip(a, b)
    )


def sample_ids(batches) -> list[int]:
    return [int(s) for b in batches for s in b["sample_ids"].flatten() if s >= 0]


# ---------------------------------------------------------------------------------------------- batches


def test_batches_hold_every_sample_once_exactly_as_encoded(tok, records, encoded):
    ds = ChatDataset(records, tok, SEQ_LEN, batch_size=3, buffer=64, shuffle_buffer=40)
    batches = list(ds)
    seen = []
    for batch in batches:
        assert set(batch) == KEYS
        assert batch["input_ids"].dtype == batch["labels"].dtype == torch.int64
        assert batch["position_ids"].dtype == batch["document_ids"].dtype == torch.int64
        assert batch["cu_seqlens"].dtype == torch.int32 and batch["sample_ids"].dtype == torch.int64
        assert batch["input_ids"].shape[1] == SEQ_LEN
        seen += check_rows(batch, encoded)
    assert sorted(seen) == list(range(len(records)))
    # Full batches, then one smaller last batch (no padded rows).
    sizes = [len(b["input_ids"]) for b in batches]
    assert all(s == 3 for s in sizes[:-1]) and 1 <= sizes[-1] <= 3
    s = ds.stats
    assert s["samples"] == s["packed"] == len(records) and s["pending"] == 0 and s["dropped"] == 0
    assert s["rows"] == sum(sizes) and s["batches"] == len(batches)
    assert s["tokens"] == sum(len(ids) for ids, _ in encoded.values())
    assert s["trained_tokens"] == sum(int(b["labels"].ne(-100).sum()) for b in batches)
    assert s["efficiency"] == pytest.approx(s["tokens"] / (s["rows"] * SEQ_LEN))


def test_drop_last_drops_the_short_batch_and_counts_its_samples(tok, records):
    rows = ChatDataset(records, tok, SEQ_LEN, batch_size=1, shuffle=False)
    n_rows = sum(len(b["input_ids"]) for b in rows)
    size = next(b for b in range(3, 10) if n_rows % b)  # a batch size that leaves a partial batch
    kept = list(ChatDataset(records, tok, SEQ_LEN, batch_size=size, shuffle=False))
    ds = ChatDataset(records, tok, SEQ_LEN, batch_size=size, shuffle=False, drop_last=True)
    batches = list(ds)
    assert all(len(b["input_ids"]) == size for b in batches)
    assert same_batches(batches, kept[:-1])
    s = ds.stats
    assert s["dropped_last_batch"] == len(sample_ids(kept[-1:])) > 0
    assert s["packed"] == len(sample_ids(batches))
    assert s["samples"] == s["packed"] + s["dropped_last_batch"] == len(records) and s["pending"] == 0


def test_encode_kwargs_reach_the_encoder(tok, records, encoded):
    ds = ChatDataset(records, tok, SEQ_LEN, batch_size=8, encode_kwargs={"supervise": "last_assistant"})
    last_only = {
        i: (e.input_ids, e.mask) for i, e in enumerate(tok.encode_batch(records, supervise="last_assistant"))
    }
    seen = [sid for b in ds for sid in check_rows(b, last_only)]
    assert sorted(seen) == list(range(len(records)))
    assert ds.stats["trained_tokens"] < sum(int(m[1:].sum()) for _, m in encoded.values())


def test_packing_options_are_the_loose_keyword_arguments(tok, records):
    loose = ChatDataset(
        records, tok, SEQ_LEN, batch_size=3, buffer=64, overflow="truncate",
        encode_kwargs={"supervise": "last_assistant"},
    )  # fmt: skip
    options = turnpack.PackingOptions(supervise="last_assistant", buffer=64, overflow="truncate")
    whole = ChatDataset(records, tok, SEQ_LEN, batch_size=3, options=options)
    assert same_batches(list(loose), list(whole))
    whole.load_state_dict(loose.state_dict())  # the same resume fingerprint
    assert turnpack.PackingOptions.from_encode_kwargs({"supervise": "all", "enable_thinking": False}) == (
        turnpack.PackingOptions(supervise="all", template_kwargs={"enable_thinking": False})
    )
    assert pickle.loads(pickle.dumps(options)) == options
    with pytest.raises(ValueError, match="not both"):
        ChatDataset(records, tok, SEQ_LEN, batch_size=3, options=options, buffer=8)
    with pytest.raises(ValueError, match="overflow must be"):
        turnpack.PackingOptions(overflow="wrap")  # checked when made, not when the first row is packed
    with pytest.raises(ValueError, match="options of their own"):
        turnpack.PackingOptions(template_kwargs={"supervise": "all"})


# ---------------------------------------------------------------------------------------------- sources


def _collect(source, tok, **kw):
    return list(ChatDataset(source, tok, SEQ_LEN, batch_size=4, shuffle=False, **kw))


def test_every_source_kind_gives_the_same_batches(tmp_path, tok, records):
    expected = _collect(records, tok)
    jsonl = T.write_jsonl(tmp_path / "a.jsonl", records)
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl.read_bytes()))
    array = tmp_path / "a.json"
    array.write_text(json.dumps(records))
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet, row_group_size=50)
    datasets = pytest.importorskip("datasets")
    sources = {
        "jsonl": str(jsonl),
        "jsonl path object": jsonl,
        "jsonl.gz": gz,
        "json array": array,
        "parquet": parquet,
        "hf dataset": datasets.Dataset.from_list(records),
        "tuple": tuple(records),
        "function": lambda: iter(records),
    }
    for name, source in sources.items():
        assert same_batches(_collect(source, tok), expected), name
        # Split 6 ways (2 ranks x 3 workers): each source skips the rows it does not own its own way.
        got = {}
        for index in range(6):
            for sample_id, record in iter_epoch(resolve_sources(source), [0], Shard(index, 6)):
                assert sample_id % 6 == index and sample_id not in got, name
                got[sample_id] = record
        assert sorted(got) == list(range(len(records))), name
        assert all(to_conversation(got[i]) == records[i] for i in got), name


def test_several_files_are_one_stream(tmp_path, tok, records):
    expected = _collect(records, tok)
    (tmp_path / "d").mkdir()
    T.write_jsonl(tmp_path / "d" / "part-0.jsonl", records[:100])
    T.write_jsonl(tmp_path / "d" / "part-1.jsonl", records[100:])
    (tmp_path / "d" / "notes.txt").write_text("not data")
    for source in (
        str(tmp_path / "d" / "*.jsonl"),
        tmp_path / "d",
        [tmp_path / "d" / "part-0.jsonl", tmp_path / "d" / "part-1.jsonl"],
    ):
        batches = _collect(source, tok)
        assert same_batches(batches, expected, KEYS - {"sample_ids"}), source
        # Sample ids name (file, line): the second file's rows are source 1.
        ids = {split_sample_id(s) for s in sample_ids(batches)}
        assert ids == {(0, r) for r in range(100)} | {(1, r) for r in range(140)}


def test_sharegpt_records_match_their_messages_form(tok, records):
    speakers = {"system": "system", "user": "human", "assistant": "gpt"}
    sharegpt = [
        {"conversations": [{"from": speakers[m["role"]], "value": m["content"]} for m in r["messages"]]}
        for r in records
    ]
    assert same_batches(_collect(sharegpt, tok), _collect(records, tok))
    assert same_batches(_collect(sharegpt, tok, fields="sharegpt"), _collect(records, tok, fields="messages"))
    bare_lists = [r["messages"] for r in records]
    assert same_batches(_collect(bare_lists, tok), _collect(records, tok))


def test_field_mapping():
    tools = [{"type": "function", "function": {"name": "add", "parameters": {}}}]
    record = {
        "system": "be brief",
        "tools": json.dumps(tools),
        "conversations": [
            {"from": "human", "value": "1+2?"},
            {"from": "function_call", "value": '{"name": "add", "arguments": {"a": 1, "b": 2}}'},
            {"from": "observation", "value": "3"},
            {"from": "gpt", "value": "3", "weight": 1},
        ],
    }
    out = to_conversation(record)
    assert out["tools"] == tools
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert out["messages"][2]["tool_calls"] == [
        {"type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}
    ]
    assert out["messages"][4] == {"role": "assistant", "content": "3", "weight": 1}
    messages = [{"role": "user", "content": "hi"}]
    assert to_conversation({"messages": json.dumps(messages), "tools": None}) == {"messages": messages}
    assert to_conversation({"conversations": messages}) == {
        "messages": messages
    }  # role/content: not ShareGPT
    with pytest.raises(RecordError, match="unknown speaker 'robot'"):
        to_conversation({"conversations": [{"from": "robot", "value": "x"}]})
    with pytest.raises(RecordError, match="no 'messages' field"):
        to_conversation({"conversations": messages}, "messages")
    with pytest.raises(RecordError, match="function_call value must be a JSON object"):
        to_conversation({"conversations": [{"from": "function_call", "value": "[1]"}]})
    with pytest.raises(RecordError, match="not valid JSON"):
        to_conversation({"messages": "[{oops"})


def test_per_row_tools_are_rendered(tok):
    tools = [{"type": "function", "function": {"name": "lookup", "description": "find", "parameters": {}}}]
    messages = [{"role": "user", "content": "find x"}, {"role": "assistant", "content": "found"}]
    ds = ChatDataset([{"messages": messages, "tools": tools}], tok, SEQ_LEN, batch_size=1)
    with_tools = tok.encode(messages, tools=tools)
    assert len(with_tools.input_ids) > len(tok.encode(messages).input_ids)
    (batch,) = list(ds)
    assert check_rows(batch, {0: (with_tools.input_ids, with_tools.mask)}) == [0]


# ---------------------------------------------------------------------------------------------- errors


DEFECTS = {
    3: '{"messages": [oops',  # not JSON
    5: json.dumps({"messages": [{"role": "wizard", "content": "x"}]}),  # unknown role
    7: json.dumps({"text": "no conversation"}),  # no messages field
    9: "",  # blank: not a sample
}


def _broken_file(tmp_path, records, defects) -> Path:
    lines = [json.dumps(r) for r in records[:10]]
    for line, text in defects.items():
        lines[line - 1] = text
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        (3, RecordError, r"broken\.jsonl:3: invalid JSON"),
        (5, turnpack.ConversationError, r"broken\.jsonl:5: .*wizard"),
        (7, RecordError, r"broken\.jsonl:7: the record has no 'messages' or 'conversations' field"),
    ],
)
def test_bad_records_raise_naming_file_and_line(tmp_path, tok, records, line, error, message):
    path = _broken_file(tmp_path, records, {line: DEFECTS[line]})
    with pytest.raises(error, match=message):
        list(ChatDataset(path, tok, SEQ_LEN, batch_size=1))


def test_errors_keep_their_type_through_a_worker(tmp_path, tok, records):
    # (torch takes ~5 s to shut down a DataLoader whose worker raised: only one such test.)
    path = _broken_file(tmp_path, records, {5: DEFECTS[5]})
    with pytest.raises(turnpack.ConversationError, match=r"broken\.jsonl:5: "):
        list(ChatDataLoader(ChatDataset(path, tok, SEQ_LEN, batch_size=1), num_workers=1))


def test_bad_records_are_counted_when_skipped(tmp_path, tok, records):
    path = _broken_file(tmp_path, records, DEFECTS)
    ds = ChatDataset(path, tok, SEQ_LEN, batch_size=2, on_error="skip")
    batches = list(ds)
    s = ds.stats
    assert s["dropped_error"] == 3 and s["samples"] == 9 and s["packed"] == 6 and s["pending"] == 0
    assert sorted(r for _, r in map(split_sample_id, sample_ids(batches))) == [0, 1, 3, 5, 7, 9]


def test_packer_drops_are_counted(tok, records):
    long = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x " * 400}]}
    untrained = {"messages": [{"role": "user", "content": "only a question"}]}
    ds = ChatDataset([*records[:20], long, untrained], tok, SEQ_LEN, batch_size=2)
    ids = sample_ids(list(ds))
    s = ds.stats
    assert (s["dropped_too_long"], s["dropped_nothing_to_train"], s["packed"]) == (1, 1, 20)
    assert sorted(ids) == list(range(20))
    truncating = ChatDataset([*records[:20], long], tok, SEQ_LEN, batch_size=2, overflow="truncate")
    assert sorted(sample_ids(list(truncating))) == list(range(21)) and truncating.stats["truncated"] == 1


def test_source_and_argument_errors(tmp_path, tok, records):
    with pytest.raises(SourceError, match=r"missing\.jsonl: no such file"):
        ChatDataset(tmp_path / "missing.jsonl", tok, SEQ_LEN, batch_size=1)
    with pytest.raises(SourceError, match="no file matches"):
        ChatDataset(str(tmp_path / "*.jsonl"), tok, SEQ_LEN, batch_size=1)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(SourceError, match="unknown file type"):
        ChatDataset(tmp_path / "data.csv", tok, SEQ_LEN, batch_size=1)
    (tmp_path / "list.json").write_text('{"messages": []}')
    with pytest.raises(SourceError, match="must hold a JSON list"):
        list(ChatDataset(tmp_path / "list.json", tok, SEQ_LEN, batch_size=1))
    with pytest.raises(TypeError, match="iterated only once"):
        ChatDataset(iter(records), tok, SEQ_LEN, batch_size=1)
    with pytest.raises(TypeError, match="DatasetDict"):
        ChatDataset({"train": records}, tok, SEQ_LEN, batch_size=1)
    with pytest.raises(ValueError, match="tokenizer is needed"):
        ChatDataset(records, None, SEQ_LEN, batch_size=1)
    with pytest.raises(ValueError, match="batch_size"):
        ChatDataset(records, tok, SEQ_LEN, batch_size=0)
    with pytest.raises(ValueError, match="may not set num_threads"):
        ChatDataset(records, tok, SEQ_LEN, batch_size=1, encode_kwargs={"num_threads": 4})
    with pytest.raises(ValueError, match="fields must be one of"):
        ChatDataset(records, tok, SEQ_LEN, batch_size=1, fields="alpaca")


# ---------------------------------------------------------------------------------------------- sharding


def _rank_dataset(records, tok, rank, **kw):
    base = {"batch_size": 2, "buffer": 32, "shuffle_buffer": 50, "epochs": 1, "rank": rank, "world_size": 2}
    return ChatDataset(records, tok, SEQ_LEN, **{**base, **kw})


def test_each_sample_is_read_by_exactly_one_worker_of_one_rank_per_epoch(tok, records):
    loaders = [ChatDataLoader(_rank_dataset(records, tok, rank), num_workers=2) for rank in (0, 1)]
    orders = []
    for epoch in (0, 1):
        per_rank = [sample_ids(list(loader)) for loader in loaders]  # each pass is the next epoch
        assert all(loader.epoch == epoch + 1 for loader in loaders)
        assert not set(per_rank[0]) & set(per_rank[1])
        assert sorted(per_rank[0] + per_rank[1]) == list(range(len(records)))
        orders.append(per_rank[0])
        for loader, ids in zip(loaders, per_rank):
            s = loader.epoch_stats[epoch]
            assert s["samples"] == s["packed"] == len(ids) and s["pending"] == 0
    assert orders[0] != orders[1], "each epoch is shuffled differently"


def test_shuffle_is_seeded(tok, records):
    def order(**kw):
        return sample_ids(list(ChatDataset(records, tok, SEQ_LEN, batch_size=4, shuffle_buffer=64, **kw)))

    assert order(seed=1) == order(seed=1)
    assert order(seed=1) != order(seed=2)
    assert sorted(order(seed=1)) == sorted(order(shuffle=False))


# ---------------------------------------------------------------------------------------------- resume


def _resumed(make, num_workers, cut):
    """Batches of a loader interrupted after `cut` batches, checkpointed (through JSON) and resumed."""
    first = ChatDataLoader(make(), num_workers=num_workers)
    head = list(itertools.islice(iter(first), cut))
    state = json.loads(json.dumps(first.state_dict()))
    second = ChatDataLoader(make(), num_workers=num_workers)
    second.load_state_dict(state)
    return head + list(second), second


@pytest.mark.parametrize("rank", [0, 1])
def test_exact_resume_with_two_workers_and_two_ranks(tok, records, rank):
    def make():
        return _rank_dataset(records, tok, rank, epochs=2)

    full_loader = ChatDataLoader(make(), num_workers=2)
    full = list(full_loader)
    n = len(full)
    assert n > 20
    # Start, odd/even positions (the round-robin rotation), both epochs and their boundary, the end.
    for cut in (1, 4, n // 2 - 1, n // 2 + 2, n - 1):
        batches, resumed = _resumed(make, 2, cut)
        assert same_batches(batches, full), f"rank {rank}, resumed after {cut} of {n} batches"
        assert resumed.stats == full_loader.stats, "statistics survive the resume"


def test_exact_resume_when_one_worker_runs_dry(tok):
    # Stream positions alternate long and short conversations, so worker 0 (even positions) has about
    # four times the rows of worker 1 and the DataLoader serves worker 0 alone at the end.
    long_ = T.conversations(60, seed=3, max_turns=6, words=40)
    short = T.conversations(60, seed=4, max_turns=1, words=4)
    skewed = [r for pair in zip(long_, short) for r in pair]

    def make():
        return ChatDataset(skewed, tok, SEQ_LEN, batch_size=2, buffer=16, shuffle_buffer=20)

    loader = ChatDataLoader(make(), num_workers=2)
    full, dry = [], []  # dry: cut points where worker 1 has finished its epoch and worker 0 has not
    for batch in loader:
        full.append(batch)
        positions = loader.state_dict()["positions"]
        if positions[1] == [1, 0] and positions[0][0] == 0:
            dry.append(len(full))
    assert len(dry) >= 3 and dry[0] < len(full) - 2
    for cut in (dry[0], dry[len(dry) // 2]):
        batches, _ = _resumed(make, 2, cut)
        assert same_batches(batches, full), f"resumed after {cut} of {len(full)} batches"


def test_exact_resume_in_process_at_every_batch(tok, records):
    def make():
        return _rank_dataset(records[:50], tok, 0, world_size=1, epochs=2)

    full = list(make())
    for cut in range(len(full) + 1):
        batches, _ = _resumed(make, 0, cut)
        assert same_batches(batches, full), f"resumed after {cut} of {len(full)} batches"
    # The dataset itself is exact when iterated directly.
    ds = make()
    head = list(itertools.islice(iter(ds), 7))
    again = make()
    again.load_state_dict(json.loads(json.dumps(ds.state_dict())))
    assert same_batches(head + list(again), full)
    reference = make()
    list(reference)
    assert again.stats == reference.stats and again.stats["samples"] == 2 * 50


def test_exact_resume_when_looping_forever(tok, records):
    def make():
        return ChatDataset(records[:60], tok, SEQ_LEN, batch_size=2, epochs=None)

    per_epoch = len(list(ChatDataset(records[:60], tok, SEQ_LEN, batch_size=2)))
    total = 3 * per_epoch
    full = list(itertools.islice(iter(ChatDataLoader(make(), num_workers=2)), total))
    seen = Counter(sample_ids(full))
    assert set(seen) == set(range(60)) and min(seen.values()) >= 2, "it loops over epochs"
    cut = per_epoch + per_epoch // 2
    first = ChatDataLoader(make(), num_workers=2)
    head = list(itertools.islice(iter(first), cut))
    second = ChatDataLoader(make(), num_workers=2)
    second.load_state_dict(first.state_dict())
    assert same_batches(head + list(itertools.islice(iter(second), total - cut)), full)
    assert set(second.worker_stats) >= {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_breaking_out_continues_and_set_epoch_restarts(tok, records):
    loader = ChatDataLoader(_rank_dataset(records, tok, 0, world_size=1), num_workers=2)
    full = list(ChatDataLoader(_rank_dataset(records, tok, 0, world_size=1), num_workers=2))
    head = list(itertools.islice(iter(loader), 5))
    assert same_batches(head + list(loader), full), "a new pass continues after the last batch handed out"
    assert loader.epoch == 1
    loader.set_epoch(0)
    assert same_batches(list(loader), full)
    loader.set_epoch(1)
    assert not same_batches(list(loader), full)


def test_resume_refuses_another_configuration(tok, records):
    loader = ChatDataLoader(_rank_dataset(records, tok, 0), num_workers=2)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="num_workers=2"):
        ChatDataLoader(_rank_dataset(records, tok, 0), num_workers=1).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size=2"):
        ChatDataLoader(_rank_dataset(records, tok, 0, batch_size=3), num_workers=2).load_state_dict(state)
    with pytest.raises(ValueError, match="rank=0"):
        ChatDataLoader(_rank_dataset(records, tok, 1), num_workers=2).load_state_dict(state)
    with pytest.raises(ValueError, match="does not take 'batch_size'"):
        ChatDataLoader(_rank_dataset(records, tok, 0), batch_size=4)


# ---------------------------------------------------------------------------------------------- processes


def test_forked_workers_after_parallel_encoding_do_not_hang(tok, records):
    tok.encode_batch(records, num_threads=2)  # the parent's worker threads exist before the fork
    ds = ChatDataset(records, tok, SEQ_LEN, batch_size=4, num_threads=2)
    batches = list(ChatDataLoader(ds, num_workers=2, timeout=120, multiprocessing_context="fork"))
    assert sorted(sample_ids(batches)) == list(range(len(records)))


def test_pickled_dataset_reloads_its_tokenizer(tmp_path, records):
    # What spawn/forkserver workers do: unpickle the dataset, then iterate it.
    def make(tokenizer):
        return ChatDataset(records, tokenizer, SEQ_LEN, batch_size=4, buffer=64)

    expected = list(make(T.qwen3("chatml")))
    # A tokenizer object travels with the dataset (ChatTokenizer pickles).
    clone = pickle.loads(pickle.dumps(make(T.qwen3("chatml"))))
    assert isinstance(clone._tokenizer, turnpack.ChatTokenizer)
    assert same_batches(list(clone), expected), "tokenizer object"
    for spec in (T.qwen3_chatml, T.write_model_dir(tmp_path / "model", "chatml")):
        ds = make(spec)
        clone = pickle.loads(pickle.dumps(ds))
        assert clone._tokenizer is None, "the tokenizer object itself is not pickled"
        assert same_batches(list(clone), expected), spec


def test_import_turnpack_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import turnpack, turnpack.data, turnpack.prepare, turnpack.cli, turnpack.demo\n"
        "import turnpack.train, turnpack.train.config, turnpack.train.examples, turnpack.integrations\n"
        "try:\n    turnpack.data.ChatDataset\nexcept ImportError:\n    print('lazy')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lazy"


def test_sample_ids_map_back_to_rows(tok, records):
    batch = next(iter(ChatDataset(records, tok, SEQ_LEN, batch_size=2)))
    for sid in batch["sample_ids"].flatten().tolist():
        if sid >= 0:
            assert split_sample_id(sid) == (0, sid)
    assert np.all(batch["cu_seqlens"][:, 0].numpy() == 0)
