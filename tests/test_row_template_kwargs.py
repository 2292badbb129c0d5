"""Per-row template variables: a batch item's (or a dataset record's) `chat_template_kwargs` apply to
that conversation only, on top of the call's (or the dataset's) template keywords, the row's winning.

Qwen3's template shows the difference: `enable_thinking=False` puts the empty think block into the
generation prompt, so it is context instead of trained (same text, another mask)."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
import reference as R
import turnpack
from tiny_tokenizer import tiny_tokenizer_json

QWEN3 = "Qwen-Qwen3-0.6B.jinja"
MESSAGES = [
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
]
TOOLS = [{"type": "function", "function": {"name": "add", "description": "add", "parameters": {}}}]
NO_THINKING = {"enable_thinking": False}


@cache
def qwen3() -> turnpack.ChatTokenizer:
    """A tiny tokenizer with Qwen3's template (as tests/test_layout.py makes it)."""
    return turnpack.ChatTokenizer.from_tokenizer_json(
        tiny_tokenizer_json(),
        chat_template=R.load_template(QWEN3),
        special_tokens={"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"},
    )


@cache
def showing() -> turnpack.ChatTokenizer:
    """A template that prints two variables, so that which value won shows in the text."""
    template = (
        "[{{ a | default('-') }} {{ b | default('-') }}]"
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return turnpack.ChatTokenizer.from_tokenizer_json(tiny_tokenizer_json(), chat_template=template)


def same(a: turnpack.Encoding, b: turnpack.Encoding) -> bool:
    return (
        a.text == b.text
        and np.array_equal(a.input_ids, b.input_ids)
        and np.array_equal(a.mask, b.mask)
        and a.spans == b.spans
    )


# ------------------------------------------------------------------------------------------ encode_batch


def test_the_thinking_switch_changes_the_encoding():
    # the premise of the tests below: the variable matters, through the mask, not the text
    tok = qwen3()
    default, off = tok.encode(MESSAGES), tok.encode(MESSAGES, **NO_THINKING)
    assert default.text == off.text
    assert off.mask.sum() < default.mask.sum()


@pytest.mark.parametrize("num_threads", [1, 3])
def test_a_rows_kwargs_apply_to_that_row_alone(num_threads):
    tok = qwen3()
    items = [
        MESSAGES,
        {"messages": MESSAGES, "chat_template_kwargs": NO_THINKING},
        {"messages": MESSAGES},
        {"messages": MESSAGES, "chat_template_kwargs": None},
        {"messages": MESSAGES, "chat_template_kwargs": {}},
        {"messages": MESSAGES, "tools": TOOLS, "chat_template_kwargs": NO_THINKING},
    ]
    got = tok.encode_batch(items, num_threads=num_threads)
    default, off = tok.encode(MESSAGES), tok.encode(MESSAGES, **NO_THINKING)
    assert same(got[1], off)
    for i in (0, 2, 3, 4):
        assert same(got[i], default), i
    assert same(got[5], tok.encode(MESSAGES, tools=TOOLS, **NO_THINKING))
    assert not same(got[0], got[1])


def test_a_rows_kwargs_win_over_the_calls():
    tok = qwen3()
    items = [MESSAGES, {"messages": MESSAGES, "chat_template_kwargs": {"enable_thinking": True}}]
    got = tok.encode_batch(items, **NO_THINKING)
    assert same(got[0], tok.encode(MESSAGES, **NO_THINKING))
    assert same(got[1], tok.encode(MESSAGES, enable_thinking=True))
    assert same(got[1], tok.encode(MESSAGES))  # True is Qwen3's default


def test_row_and_call_kwargs_merge():
    tok = showing()
    items = [
        MESSAGES,
        {"messages": MESSAGES, "chat_template_kwargs": {"b": "row"}},
        {"messages": MESSAGES, "chat_template_kwargs": {"a": "row", "b": None}},
    ]
    got = tok.encode_batch(items, a="call", b="call")
    assert [e.text[: e.text.index("]") + 1] for e in got] == ["[call call]", "[call row]", "[row None]"]
    assert same(got[1], tok.encode(MESSAGES, a="call", b="row"))
    assert same(got[2], tok.encode(MESSAGES, a="row", b=None))  # None is a value here, as in a call


def test_encode_extend_packs_what_each_row_encodes_to():
    tok = qwen3()
    items = [
        MESSAGES,
        {"messages": MESSAGES, "chat_template_kwargs": NO_THINKING},
        {"messages": MESSAGES, "chat_template_kwargs": {"enable_thinking": True}},
    ]
    packer = turnpack.Packer(128)
    assert packer.encode_extend(tok, items, **NO_THINKING) == [None, None, None]
    rows = packer.flush()
    # each row as encoded alone: the call's kwargs, the row's, the row's over the call's
    expected = turnpack.pack(
        [tok.encode(MESSAGES, **NO_THINKING), tok.encode(MESSAGES, **NO_THINKING), tok.encode(MESSAGES)], 128
    )
    for key in ("input_ids", "labels", "position_ids", "document_ids", "sample_ids"):
        np.testing.assert_array_equal(getattr(rows, key), getattr(expected, key), err_msg=key)


# ------------------------------------------------------------------------------------------------ errors

BAD = {
    "not a dict": (3, "chat_template_kwargs must be a dict of template variables, got int"),
    "a list": (
        [["enable_thinking", False]],
        "chat_template_kwargs must be a dict of template variables, got list",
    ),
    "a non-str key": ({1: True}, "chat_template_kwargs: keys must be str, got int"),
    "an unsupported value": ({"x": object()}, "chat_template_kwargs.x: unsupported value of type object"),
}
OWN_NAMES = ["supervise", "eot", "start", "spans", "boundary", "method", "history", "tools", "messages"]
OWN_NAMES += ["add_generation_prompt", "num_threads", "on_error", "sample_ids", "chat_template_kwargs"]


@pytest.mark.parametrize("kwargs, message", list(BAD.values()), ids=list(BAD))
def test_a_bad_value_is_a_typed_error_naming_the_sample(kwargs, message):
    tok = qwen3()
    items = [MESSAGES, MESSAGES, {"messages": MESSAGES, "chat_template_kwargs": kwargs}, MESSAGES]
    with pytest.raises(turnpack.ConversationError, match=f"^sample 2: {message}"):
        tok.encode_batch(items)
    got = tok.encode_batch(items, on_error="skip")
    assert isinstance(got[2], turnpack.ConversationError) and str(got[2]).startswith(f"sample 2: {message}")
    assert all(same(got[i], tok.encode(MESSAGES)) for i in (0, 1, 3))
    errors = turnpack.Packer(128).encode_extend(tok, items)
    assert errors[:2] == [None, None] and errors[3] is None
    assert isinstance(errors[2], turnpack.ConversationError) and str(errors[2]).startswith("sample 2: ")


@pytest.mark.parametrize("name", OWN_NAMES)
def test_turnpacks_own_names_are_not_template_variables(name):
    tok = qwen3()
    items = [MESSAGES, {"messages": MESSAGES, "chat_template_kwargs": {"enable_thinking": False, name: "x"}}]
    with pytest.raises(
        turnpack.ConversationError,
        match=f"^sample 1: chat_template_kwargs: '{name}' is not a template variable",
    ):
        tok.encode_batch(items)
    (error,) = [e for e in turnpack.Packer(128).encode_extend(tok, items) if e is not None]
    assert isinstance(error, turnpack.ConversationError) and f"'{name}'" in str(error)


# ------------------------------------------------------------------------------------------- field mapping


def test_records_carry_their_kwargs():
    from turnpack.data import RecordError, to_conversation

    record = {"messages": MESSAGES, "chat_template_kwargs": NO_THINKING}
    assert to_conversation(record) == {"messages": MESSAGES, "chat_template_kwargs": NO_THINKING}
    # JSON text, as Parquet or CSV-derived data may store it
    assert to_conversation({**record, "chat_template_kwargs": json.dumps(NO_THINKING)}) == record
    # null values are left out (Arrow fills the struct keys a row lacks with null); nothing left: absent
    assert (
        to_conversation({**record, "chat_template_kwargs": {"enable_thinking": False, "x": None}}) == record
    )
    for nothing in (None, "", " ", "null", {}, {"x": None}):
        assert to_conversation({**record, "chat_template_kwargs": nothing}) == {"messages": MESSAGES}, nothing
    # an Arrow map column: (key, value) pairs
    assert to_conversation({**record, "chat_template_kwargs": [("enable_thinking", False)]}) == record
    sharegpt = {
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
        "chat_template_kwargs": NO_THINKING,
    }
    assert to_conversation(sharegpt, "sharegpt")["chat_template_kwargs"] == NO_THINKING
    with pytest.raises(RecordError, match="chat_template_kwargs must be an object of template variables"):
        to_conversation({**record, "chat_template_kwargs": [1, 2]})
    with pytest.raises(RecordError, match="chat_template_kwargs is a string but not valid JSON"):
        to_conversation({**record, "chat_template_kwargs": "{oops"})


# -------------------------------------------------------------------------------------- datasets, prepare

SEQ_LEN = 256


def _records():
    """Conversations that fit a row: every third without thinking, every fifth with thinking on, every
    seventh with only a variable the template does not use."""
    import tokenizers_for_tests as T

    tok = T.qwen3()
    records = T.conversations(90, seed=5, max_turns=3, words=25)
    records = [r for r, e in zip(records, tok.encode_batch(records)) if len(e.input_ids) <= SEQ_LEN]
    for i, r in enumerate(records):
        if i % 3 == 0:
            r["chat_template_kwargs"] = {"enable_thinking": False}
        elif i % 5 == 0:
            r["chat_template_kwargs"] = {"enable_thinking": True, "unused": 1}
        elif i % 7 == 0:
            r["chat_template_kwargs"] = {"unused": 2}
    return records


def _each_alone(tok, records, **call):
    """Sample id -> (input_ids, mask) of each record encoded alone, its kwargs over `call`'s."""
    out = {}
    for i, r in enumerate(records):
        e = tok.encode(r["messages"], **{**call, **r.get("chat_template_kwargs", {})})
        out[i] = (e.input_ids, e.mask)
    return out


def test_chat_dataset_encodes_each_row_with_its_kwargs(tmp_path):
    pytest.importorskip("torch")
    import tokenizers_for_tests as T
    from tokenizers_for_tests import check_rows
    from turnpack.data import ChatDataset

    tok, records = T.qwen3(), _records()
    jsonl = T.write_jsonl(tmp_path / "chats.jsonl", records)
    for call in ({}, NO_THINKING):
        expected = _each_alone(tok, records, **call)
        ds = ChatDataset(jsonl, tok, SEQ_LEN, batch_size=4, shuffle=False, encode_kwargs=call)
        seen = [sid for batch in ds for sid in check_rows(batch, expected)]
        assert sorted(seen) == list(range(len(records))), call
    # the rows differ from encoding without them
    plain = _each_alone(tok, [{"messages": r["messages"]} for r in records])
    assert not np.array_equal(plain[0][1], expected[0][1])


def test_parquet_and_datasets_rows_read_like_jsonl(tmp_path):
    torch = pytest.importorskip("torch")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    datasets = pytest.importorskip("datasets")
    import tokenizers_for_tests as T
    from turnpack.data import ChatDataset

    tok, records = T.qwen3(), _records()
    # Arrow makes one struct of every key any row uses: rows lacking a key get it as null, which must
    # not override the dataset's default (enable_thinking=False below) for them
    parquet = tmp_path / "chats.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet, row_group_size=20)
    # or as JSON text ("null" where a row has none)
    as_text = tmp_path / "as_text.parquet"
    text = [{**r, "chat_template_kwargs": json.dumps(r.get("chat_template_kwargs"))} for r in records]
    pq.write_table(pa.Table.from_pylist(text), as_text)
    sources = {
        "jsonl": T.write_jsonl(tmp_path / "chats.jsonl", records),
        "parquet": parquet,
        "hf dataset": datasets.Dataset.from_list(records),
        "json text in parquet": as_text,
    }

    def batches(source):
        return list(ChatDataset(source, tok, SEQ_LEN, batch_size=4, shuffle=False, encode_kwargs=NO_THINKING))

    expected = batches(records)
    for name, source in sources.items():
        got = batches(source)
        assert len(got) == len(expected), name
        for a, b in zip(got, expected):
            assert all(torch.equal(a[k], b[k]) for k in b), name


def test_prepare_encodes_each_row_with_its_kwargs(tmp_path, capsys):
    import tokenizers_for_tests as T
    from turnpack import prepare
    from turnpack.data.shards import ShardReader

    tok, records = T.qwen3(), _records()
    model_dir = T.write_model_dir(tmp_path / "model")
    jsonl = T.write_jsonl(tmp_path / "chats.jsonl", records)
    out = tmp_path / "out"
    args = [str(jsonl), "--tokenizer", str(model_dir), "--seq-len", str(SEQ_LEN), "--no-progress"]
    assert prepare.main([*args, "--out", str(out), "--encode-kwargs", json.dumps(NO_THINKING)]) == 0
    each = [
        tok.encode(r["messages"], **{**NO_THINKING, **r.get("chat_template_kwargs", {})}) for r in records
    ]
    expected = turnpack.pack(each, SEQ_LEN)
    reader = ShardReader(out)
    assert reader.num_rows == len(expected)
    rows = reader.rows(np.arange(len(expected)))
    for key in ("input_ids", "labels", "position_ids", "document_ids", "sample_ids"):
        np.testing.assert_array_equal(getattr(rows, key), getattr(expected, key), err_msg=key)
    # a bad row fails naming its file and line
    bad = [dict(r) for r in records[:10]]
    bad[6]["chat_template_kwargs"] = {"supervise": "all"}
    data = T.write_jsonl(tmp_path / "bad.jsonl", bad)
    bad_args = [str(data), "--tokenizer", str(model_dir), "--seq-len", str(SEQ_LEN), "--no-progress"]
    assert prepare.main([*bad_args, "--out", str(tmp_path / "bad")]) == 1
    assert (
        "bad.jsonl:7: chat_template_kwargs: 'supervise' is not a template variable" in capsys.readouterr().err
    )
