"""`supervise` as a list of roles (axolotl's `roles_to_train`) and per-message loss weights (OpenAI's
`weight`, any non-negative number), from the encoding through packing to the loss."""

from __future__ import annotations

import numpy as np
import pytest
import turnpack
from test_history import tokenizer_for

CHATML = "Qwen-Qwen2.5-7B-Instruct.jinja"

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3 + 3?"},
    {"role": "assistant", "content": "6"},
]


def trained_text(enc) -> str:
    return "".join(enc.text[a:b] for (a, b), m in zip(enc.offsets.tolist(), enc.mask) if m)


def test_roles_train_those_messages_and_their_end_of_turn():
    tok = tokenizer_for(CHATML)
    # axolotl's roles_to_train: the turn's content and, with train_on_eos "turn", its end-of-turn token
    users = tok.encode(CONVERSATION, supervise=["user"])
    assert trained_text(users) == "What is 2 + 2?<|im_end|>And 3 + 3?<|im_end|>"
    assert users.span_messages == [1, 3]
    both = tok.encode(CONVERSATION, supervise=["user", "assistant"])
    assert trained_text(both) == "What is 2 + 2?<|im_end|>4<|im_end|>And 3 + 3?<|im_end|>6<|im_end|>"
    assert both.span_messages == [1, 2, 3, 4]
    # assistant spans keep starting after the generation prompt; the user ones at their content
    assistant = tok.encode(CONVERSATION)
    assert both.spans[1] == assistant.spans[0] and both.spans[3] == assistant.spans[1]
    assert tok.encode(CONVERSATION, supervise=["assistant"]).spans == assistant.spans


def test_roles_with_tools_and_weights():
    tok = tokenizer_for(CHATML)
    call = {"type": "function", "function": {"name": "lookup", "arguments": {"word": "w"}}}
    msgs = [
        {"role": "user", "content": "Look w up."},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "a letter"},
        {"role": "assistant", "content": "w is a letter.", "weight": 0},
    ]
    enc = tok.encode(msgs, supervise=["assistant", "tool"])
    assert enc.span_messages == [1, 2]  # weight 0 leaves the last answer out
    assert "a letter" in trained_text(enc) and "w is a letter." not in trained_text(enc)


@pytest.mark.parametrize("name", [CHATML, "Qwen-Qwen3-0.6B.jinja", "meta-llama-Llama-3.1-8B-Instruct.jinja"])
def test_role_spans_equal_per_message_method(name):
    tok = tokenizer_for(name)
    msgs = [m for i in range(4) for m in CONVERSATION[1:3]]
    msgs = [dict(m, content=f"{m['content']} #{i}") for i, m in enumerate(msgs)]
    fast = tok.encode(msgs, supervise=["user", "assistant"])
    slow = tok.encode(msgs, supervise=["user", "assistant"], method="per_message")
    assert fast.spans == slow.spans and np.array_equal(fast.mask, slow.mask)
    assert fast.span_messages == list(range(len(msgs)))


def test_bad_supervise_values():
    tok = tokenizer_for(CHATML)
    with pytest.raises(ValueError, match='unknown role "robot"'):
        tok.encode(CONVERSATION, supervise=["robot"])
    with pytest.raises(ValueError, match="at least one role"):
        tok.encode(CONVERSATION, supervise=[])
    with pytest.raises(ValueError, match="supervise must be one of"):
        tok.encode(CONVERSATION, supervise="users")


def weighted(w_first: float, w_second: float) -> list[dict]:
    msgs = [dict(m) for m in CONVERSATION]
    msgs[2]["weight"] = w_first
    msgs[4]["weight"] = w_second
    return msgs


def test_weights_travel_as_loss_weights():
    tok = tokenizer_for(CHATML)
    assert tok.encode(CONVERSATION).loss_weights is None
    assert tok.encode(weighted(1, 1.0)).loss_weights is None
    enc = tok.encode(weighted(0.5, 2.0))
    w = enc.loss_weights
    assert w is not None and w.dtype == np.float32 and len(w) == len(enc)
    first, second = (
        [t for t, (a, _) in enumerate(enc.offsets.tolist()) if a >= s and enc.mask[t]] for s, _ in enc.spans
    )
    second = set(second)
    first = [t for t in first if t not in second]
    assert set(w[first].tolist()) == {0.5} and set(w[sorted(second)].tolist()) == {2.0}
    assert (w[~enc.mask] == 0).all()
    packed = turnpack.pack([enc, tok.encode(CONVERSATION)], seq_len=256)
    lw = packed.loss_weights
    assert lw is not None and lw.shape == packed.labels.shape
    trained = packed.labels != -100
    assert (lw[~trained] == 0).all()
    assert sorted(set(lw[trained].tolist())) == [0.5, 1.0, 2.0]
    # the label at t carries the weight of token t + 1
    n = len(enc)
    assert lw[0, : n - 1].tolist() == [float(x) if m else 0.0 for x, m in zip(w[1:], enc.mask[1:])]
    assert turnpack.pack([tok.encode(CONVERSATION)], seq_len=256).loss_weights is None


def test_bad_weights_are_typed_errors():
    tok = tokenizer_for(CHATML)
    for bad in (-1, "heavy"):
        with pytest.raises(turnpack.ConversationError, match="message 2: 'weight' must be a non-negative"):
            tok.encode(weighted(bad, 1))
    with pytest.raises(turnpack.ConversationError, match=r"messages\[2\]\.weight: non-finite float NaN"):
        tok.encode(weighted(float("nan"), 1))
    with pytest.raises(ValueError, match="loss_weights has 1 values for 3 tokens"):
        turnpack.pack([{"input_ids": [1, 2, 3], "mask": [0, 1, 1], "loss_weights": [1.0]}], seq_len=8)
    with pytest.raises(ValueError, match="is not a non-negative number"):
        turnpack.pack(
            [{"input_ids": [1, 2, 3], "mask": [0, 1, 1], "loss_weights": [1.0, -2.0, 1.0]}], seq_len=8
        )


def test_weighted_loss_of_packed_rows_equals_the_unpacked_weighted_loss():
    torch = pytest.importorskip("torch")
    from turnpack.train.model import Transformer, config_tiny, next_token_loss

    tok = tokenizer_for(CHATML)
    encs = [tok.encode(weighted(0.5, 2.0)), tok.encode(weighted(3.0, 0.25)), tok.encode(CONVERSATION)]
    packed = turnpack.pack(encs, seq_len=512)
    assert len(packed) == 1
    torch.manual_seed(0)
    model = Transformer(
        config_tiny(512, dim=32, n_heads=4, n_kv_heads=2, ffn_hidden=64, max_seq_len=512)
    ).double()

    def t(a):
        return torch.from_numpy(np.asarray(a, dtype=np.int64))

    masks = model.build_attention_mask(t(packed.document_ids))
    weights = torch.from_numpy(packed.loss_weights)
    _, loss = model(
        t(packed.input_ids), t(packed.position_ids), labels=t(packed.labels), loss_weights=weights, **masks
    )
    # each conversation alone: the weighted sum of its token losses, over the weights' sum
    num = den = 0.0
    for e in encs:
        ids = e.input_ids.tolist()
        labels = [ids[i + 1] if e.mask[i + 1] else -100 for i in range(len(ids) - 1)] + [-100]
        w = e.loss_weights if e.loss_weights is not None else e.mask.astype(np.float32)
        lw = torch.tensor(np.append(w[1:], 0.0))[None]
        lg = model(torch.tensor([ids]))
        num += next_token_loss(lg, torch.tensor([labels]), "sum", lw).item()
        den += float((lw * (torch.tensor([labels]) != -100)).sum())
    assert loss.item() == pytest.approx(num / den, abs=1e-6)
    # and it is not the unweighted mean
    _, plain = model(t(packed.input_ids), t(packed.position_ids), labels=t(packed.labels), **masks)
    assert abs(plain.item() - loss.item()) > 1e-4


def weighted_records(tmp_path):
    import json

    path = tmp_path / "weighted.jsonl"
    rows = [{"messages": weighted(0.5, 2.0)}, {"messages": CONVERSATION}, {"messages": weighted(1, 3)}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_datasets_and_prepared_shards_carry_loss_weights(tmp_path):
    pytest.importorskip("torch")
    from turnpack.data.dataset import _tensors
    from turnpack.data.shards import ShardReader, ShardWriter

    tok = tokenizer_for(CHATML)
    encs = [tok.encode(weighted(0.5, 2.0)), tok.encode(CONVERSATION), tok.encode(weighted(1, 3))]
    packed = turnpack.pack(encs, seq_len=128)
    from turnpack.data.batching import Rows

    rows = Rows.from_packed(packed)
    assert rows.loss_weights is not None
    batch = _tensors(rows)
    assert batch["loss_weights"].dtype.is_floating_point
    assert np.array_equal(batch["loss_weights"].numpy(), packed.loss_weights)
    # rows without weights joined with weighted ones weigh their trained labels 1
    plain = Rows.from_packed(turnpack.pack([encs[1]], seq_len=128))
    joined = Rows.concat([plain, rows])
    assert joined.loss_weights is not None
    assert np.array_equal(joined.loss_weights[0], (plain.labels[0] != -100).astype(np.float32))
    # prepared shards store and read them back
    writer = ShardWriter(tmp_path / "out", seq_len=128, pad_id=0, rows_per_shard=2)
    writer.add(rows)
    writer.close()
    back = ShardReader(tmp_path / "out").rows(np.arange(len(rows)))
    assert back.loss_weights is not None
    assert np.array_equal(back.loss_weights, rows.loss_weights)


def test_hf_collator_refuses_loss_weights_it_cannot_apply():
    pytest.importorskip("transformers")
    from turnpack.integrations.hf import DataCollatorForPackedRows

    collator = DataCollatorForPackedRows(attn_implementation="sdpa")
    row = {"input_ids": [1, 2], "labels": [2, -100], "position_ids": [0, 1], "document_ids": [0, 0]}
    with pytest.raises(ValueError, match="does not apply yet"):
        collator([{**row, "loss_weights": [0.5, 0.0]}])


def test_options_that_cannot_apply_where_spans_belong_to_no_message():
    tok = tokenizer_for("Qwen-Qwen3-0.6B.jinja")
    with pytest.raises(ValueError, match='supervise="all": its spans belong to no message'):
        tok.encode(CONVERSATION, supervise="all", history="expand")
    with pytest.raises(ValueError, match=r'supervise="all": message 2 has weight 0\.5'):
        tok.encode(weighted(0.5, 1), supervise="all")
    tok.encode(CONVERSATION, supervise="all")  # the default history still works


def test_weights_that_vanish_as_float32_are_refused():
    tok = tokenizer_for(CHATML)
    with pytest.raises(turnpack.ConversationError, match="'weight' must be a non-negative finite number"):
        tok.encode(weighted(1e-50, 1))


def test_float64_loss_weights_are_taken():
    sample = {"input_ids": [1, 2, 3], "mask": [0, 1, 1], "loss_weights": np.array([0.0, 0.5, 2.0])}
    packed = turnpack.pack([sample], seq_len=4)
    assert packed.loss_weights[0].tolist() == [0.5, 2.0, 0.0, 0.0]


def test_assistant_turns_keep_their_prompt_start_beside_other_roles():
    """The generation prompt's shortcuts are checked on assistant turns only: with user turns first and
    last among the targets, the assistant spans still start after their prompt."""
    tok = tokenizer_for(CHATML)
    msgs = [
        {"role": "user", "content": f"q{i}"} if i % 2 == 0 else {"role": "assistant", "content": f"a{i}"}
        for i in range(9)
    ]
    both = tok.encode(msgs, supervise=["user", "assistant"])
    alone = tok.encode(msgs)
    assistant_spans = [s for s, m in zip(both.spans, both.span_messages) if m % 2 == 1]
    assert assistant_spans == alone.spans
    assert both.spans == tok.encode(msgs, supervise=["user", "assistant"], method="per_message").spans


def test_blanked_tool_messages_keep_their_other_fields():
    """A tool result is blanked with its content only replaced: templates that need `tool_call_id` or
    `name` still render it."""
    tok = tokenizer_for("mistralai-Mistral-Nemo-Instruct-2407.jinja")
    call = {"id": "abc123def", "type": "function", "function": {"name": "lookup", "arguments": {"word": "w"}}}
    msgs = [
        {"role": "user", "content": "Look w up."},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "a letter", "tool_call_id": "abc123def", "name": "lookup"},
        {"role": "assistant", "content": "w is a letter."},
    ]
    enc = tok.encode(msgs, supervise=["tool"])
    assert enc.span_messages == [2]
    assert "a letter" in trained_text(enc)


def test_loop_step_with_loss_weights_is_the_weighted_mean():
    torch = pytest.importorskip("torch")
    from turnpack.train.loop import forward_backward
    from turnpack.train.model import Transformer, config_tiny

    tok = tokenizer_for(CHATML)
    packed = turnpack.pack([tok.encode(weighted(0.5, 2.0)), tok.encode(CONVERSATION)], seq_len=256)
    keys = ("input_ids", "labels", "position_ids", "document_ids")
    batch = {k: torch.from_numpy(np.asarray(getattr(packed, k), dtype=np.int64)) for k in keys}
    batch["loss_weights"] = torch.from_numpy(packed.loss_weights)
    torch.manual_seed(0)
    model = Transformer(config_tiny(512, dim=32, n_layers=1, max_seq_len=256))
    # two micro-batches, the same row with and without weights: one weighted mean over both, whose
    # normaliser is the weights' sum plus the unweighted batch's count
    plain = {k: v for k, v in batch.items() if k != "loss_weights"}
    loss_sum, trained, _, weight = forward_backward(model, model, [batch, plain])
    assert int(trained) == 2 * int((packed.labels != -100).sum())
    w = packed.loss_weights[packed.labels != -100]
    assert float(weight) == pytest.approx(float(w.sum()) + int((packed.labels != -100).sum()))
    masks = model.build_attention_mask(batch["document_ids"])
    with torch.no_grad():
        _, s1 = model(
            batch["input_ids"],
            batch["position_ids"],
            labels=batch["labels"],
            loss_reduction="sum",
            loss_weights=batch["loss_weights"],
            **masks,
        )
        _, s2 = model(
            plain["input_ids"], plain["position_ids"], labels=plain["labels"], loss_reduction="sum", **masks
        )
    assert float(loss_sum) == pytest.approx(float(s1 + s2), rel=1e-5)
