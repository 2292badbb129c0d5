"""History modes (`history=`): turns the template rewrites are found, reported, and trained in their
inference context, proved token by token against transformers' rendering of `messages[:i]` with the
generation prompt, on every fixture template."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import reference as R
import turnpack
from test_layout import TOOLS
from test_layout import reasoning as layout_reasoning
from tiny_tokenizer import tiny_tokenizer_json
from tokenizers import Tokenizer

SPECIALS = {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}


def reasoning(n: int) -> list[dict]:
    """Reasoning in every assistant turn, after a system prompt."""
    return [{"role": "system", "content": "You are terse."}, *layout_reasoning(n)]


def reasoning_tools(n: int) -> list[dict]:
    """Several turns, each a reasoning tool call, its result and a reasoned answer."""
    msgs: list[dict] = []
    for i in range(n):
        call = {"type": "function", "function": {"name": "lookup", "arguments": {"word": f"w{i}"}}}
        msgs += [
            {"role": "user", "content": f"What does w{i} mean?"},
            {
                "role": "assistant",
                "reasoning_content": f"I should look w{i} up.",
                "content": "",
                "tool_calls": [call],
            },
            {"role": "tool", "content": f"meaning {i}"},
            {"role": "assistant", "reasoning_content": f"The tool says {i}.", "content": f"w{i} means {i}."},
        ]
    return msgs


CONVERSATIONS = {
    "reasoning": (reasoning(3), None),
    "reasoning_no_system": (reasoning(3)[1:], None),
    "reasoning_tools": (reasoning_tools(2), TOOLS),
}


@cache
def tokenizer_for(template_name: str) -> turnpack.ChatTokenizer:
    return turnpack.ChatTokenizer.from_tokenizer_json(
        tiny_tokenizer_json(), chat_template=R.load_template(template_name), special_tokens=SPECIALS
    )


@cache
def plain_tokenizer() -> Tokenizer:
    return Tokenizer.from_str(tiny_tokenizer_json())


def tokens(text: str) -> list[int]:
    return plain_tokenizer().encode(text, add_special_tokens=False).ids


def reference(template: str, msgs, tools, add_generation_prompt: bool) -> str:
    return R.render_reference(template, msgs, tools, add_generation_prompt=add_generation_prompt, **SPECIALS)


def encode_all_modes(name: str, conversation: str):
    msgs, tools = CONVERSATIONS[conversation]
    tok = tokenizer_for(name)
    try:
        return {h: tok.encode(msgs, tools=tools, history=h) for h in ("rendered", "faithful", "expand")}
    except turnpack.TurnpackError as e:
        pytest.skip(f"{name} does not encode this conversation: {e}")


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("name", R.template_names())
def test_trained_tokens_see_their_inference_context(name, conversation):
    msgs, tools = CONVERSATIONS[conversation]
    template = R.load_template(name)
    if R.template_uses_strftime_now(template):
        pytest.skip("the rendering depends on the date")
    enc = encode_all_modes(name, conversation)
    if enc["rendered"].text != reference(template, msgs, tools, False):
        pytest.skip("turnpack's rendering differs from transformers' here (see test_render_conformance)")
    rendered, faithful, expand = enc["rendered"], enc["faithful"], enc["expand"]
    # the same turns are found rewritten in every mode, and the trunk's tokens never change
    assert rendered.rewritten == faithful.rewritten == expand.rewritten
    assert np.array_equal(rendered.input_ids, expand.input_ids)
    rewritten = set(rendered.rewritten)
    trained_in_trunk = {m for m in rendered.span_messages if m is not None}
    assert rewritten <= trained_in_trunk
    assert {m for m in faithful.span_messages} == trained_in_trunk - rewritten
    assert [r["training"] for r in rendered.rewrites] == ["rendered"] * len(rewritten)
    assert [r["training"] for r in faithful.rewrites] == ["context"] * len(rewritten)

    ids = expand.input_ids.tolist()
    # each turn trained in the trunk: the tokens before its first trained token are those of its
    # inference context, and what it trains is its inference target
    for (a, b), i in zip(expand.spans, expand.span_messages, strict=True):
        assert i is not None and i not in rewritten
        prompt = reference(template, msgs[:i], tools, True)
        last = reference(template, msgs[: i + 1], tools, False)
        first = int(np.argmax((expand.offsets[:, 1] > a) & expand.mask))
        assert expand.mask[first]
        context = expand.text[: expand.offsets[first, 0]]
        if expand.text.startswith(prompt) and len(prompt) <= a:
            assert ids[:first] == tokens(context)
            assert context.startswith(prompt)
        # what it trains is what the model writes after that context: the rendering with the turn
        # last (some templates' spans also reach into the next message's header, as the diff finds
        # them in every mode)
        head = expand.text[:b]
        assert last.startswith(head) or head.startswith(last), f"message {i} is trained as it is not written"

    # each rewritten turn: a branch whose visible context is its inference context's tokens and
    # whose tokens are its target's
    branches = {b["message"]: b for b in expand.branches}
    for r in expand.rewrites:
        i = r["message"]
        prompt = reference(template, msgs[:i], tools, True)
        last = reference(template, msgs[: i + 1], tools, False)
        assert last.startswith(r["context"] + r["target"])
        assert not rendered.text.startswith(r["context"] + r["target"])
        if r["training"] == "empty":
            assert r["target"] == "" and i not in branches
            continue
        b = branches[i]
        branch_ids = b["input_ids"].tolist()
        target = tokens(r["target"])
        if r["training"] == "branch":
            visible = ids[: b["prefix_len"]] + branch_ids[:1]
            assert visible == tokens(r["context"])
            assert rendered.text.startswith(r["context"])
        else:
            assert r["training"] == "sample" and b["prefix_len"] == 0
            assert branch_ids[: len(branch_ids) - len(target)] == tokens(r["context"])
        assert branch_ids[len(branch_ids) - len(target) :] == target
        assert b["mask"].tolist() == [False] * (len(branch_ids) - len(target)) + [True] * len(target)
        if last.startswith(prompt):  # start="prompt": the context is the generation prompt's rendering
            assert r["context"] == prompt

    # nothing is lost: every turn trained when rendered is trained once in expand
    assert trained_in_trunk == {m for m in expand.span_messages} | {
        r["message"] for r in expand.rewrites if r["training"] != "empty"
    }


def qwen3() -> turnpack.ChatTokenizer:
    return tokenizer_for("Qwen-Qwen3-0.6B.jinja")


def test_qwen3_rewrites_every_turn_before_the_last_user_message():
    msgs = reasoning(3)
    enc = qwen3().encode(msgs)
    assert enc.rewritten == [2, 4]
    for r in enc.rewrites:
        assert "<think>" in r["target"] and msgs[r["message"]]["reasoning_content"] in r["target"]
        a, b = r["rendered"]
        assert msgs[r["message"]]["reasoning_content"] not in enc.text[a:b]
        assert r["target"].endswith("<|im_end|>")
    expand = qwen3().encode(msgs, history="expand")
    assert [b["message"] for b in expand.branches] == [2, 4]
    assert [r["training"] for r in expand.rewrites] == ["branch", "branch"]
    assert expand.span_messages == [6]
    # a conversation whose assistant turns all follow the last user message rewrites nothing
    assert qwen3().encode(reasoning(1)).rewritten == []


def test_templates_that_keep_history_rewrite_nothing():
    enc = tokenizer_for("Qwen-Qwen2.5-7B-Instruct.jinja").encode(reasoning(3), history="expand")
    assert enc.rewritten == [] and enc.branches == []


def test_history_option_is_checked():
    with pytest.raises(ValueError, match="history must be one of 'rendered', 'faithful', 'expand'"):
        qwen3().encode(reasoning(2), history="all")


def test_tree_samples_pack_with_their_prefix():
    expand = qwen3().encode(reasoning(3), history="expand")
    packed = turnpack.pack([expand], seq_len=1024)
    n = len(expand)
    assert packed.stats["packed"] == 1 and packed.stats["branches_packed"] == 2
    assert packed.doc_roles.tolist() == [0, 1, 1]
    assert packed.prefix_starts is not None and packed.prefix_ends is not None
    ids = packed.input_ids[0]
    assert ids[:n].tolist() == expand.input_ids.tolist()
    at = n
    for b in expand.branches:
        m = len(b["input_ids"])
        assert ids[at : at + m].tolist() == b["input_ids"].tolist()
        assert packed.prefix_starts[0, at : at + m].tolist() == [0] * m
        assert packed.prefix_ends[0, at : at + m].tolist() == [b["prefix_len"]] * m
        assert packed.position_ids[0, at : at + m].tolist() == list(
            range(b["prefix_len"], b["prefix_len"] + m)
        )
        # the branch's first token predicts the target's first token
        assert packed.labels[0, at] == b["input_ids"][1]
        at += m
    assert packed.stats["trained_tokens"] == int((packed.labels != -100).sum())
    trained = int(expand.mask[1:].sum()) + sum(int(b["mask"][1:].sum()) for b in expand.branches)
    assert packed.stats["trained_tokens"] == trained
    # ordinary samples packed beside it keep today's layout, with empty prefixes
    plain = qwen3().encode(reasoning(3))
    both = turnpack.pack([plain, expand], seq_len=4096)
    assert both.doc_roles.tolist() == [0, 0, 1, 1] or both.doc_roles.tolist() == [0, 1, 1, 0]
    alone = turnpack.pack([plain], seq_len=4096)
    assert alone.prefix_starts is None and alone.doc_roles is None


def test_a_tree_too_long_for_a_row_is_split_with_its_prefix():
    expand = qwen3().encode(reasoning(3), history="expand")
    n = len(expand)
    longest = max(len(b["input_ids"]) for b in expand.branches)
    seq_len = n + longest - 1  # the trunk fits, never the trunk and a branch
    packed = turnpack.pack([expand], seq_len=seq_len)
    s = packed.stats
    assert s["packed"] == 1 and s["dropped"] == 0
    assert s["branches_packed"] + s["branches_dropped"] == 2
    assert s["tree_splits"] >= 1
    roles = packed.doc_roles.tolist()
    assert roles.count(0) == 1 and roles.count(2) == s["tree_splits"]
    # every branch in a continuation row sees a context copy of the trunk's first tokens
    for r in range(len(packed)):
        ps, pe = packed.prefix_starts[r], packed.prefix_ends[r]
        for t in np.nonzero(pe > ps)[0]:
            a, b = int(ps[t]), int(pe[t])
            assert packed.input_ids[r, a:b].tolist() == expand.input_ids[: b - a].tolist()
    trained = int(expand.mask[1:].sum()) + sum(int(b["mask"][1:].sum()) for b in expand.branches)
    assert s["trained_tokens"] == trained == int((packed.labels != -100).sum())
    # a row shorter than the trunk: the tree is dropped with its branches, or cut and counted
    short = turnpack.pack([expand], seq_len=64)
    assert short.stats["dropped_too_long"] == 1 and short.stats["branches_dropped"] == 2
    cut = turnpack.pack([expand], seq_len=64, overflow="truncate")
    assert cut.stats["packed"] == 1 and cut.stats["truncated"] == 1
    assert cut.stats["branches_truncated"] + cut.stats["branches_dropped"] == 2
    assert cut.stats["trained_tokens"] == int((cut.labels != -100).sum())


def test_packer_and_pack_agree_on_trees():
    encs = [qwen3().encode(reasoning(k), history="expand") for k in (1, 2, 3, 4)]
    a = turnpack.pack(encs, seq_len=512)
    p = turnpack.Packer(512)
    for e in encs:
        p.push(e)
    b = p.flush()
    for key in ("input_ids", "labels", "position_ids", "document_ids", "prefix_starts", "prefix_ends"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert a.stats == b.stats


def test_encode_extend_packs_trees():
    convs = [reasoning(k) for k in (1, 2, 3)]
    p = turnpack.Packer(1024)
    p.encode_extend(qwen3(), convs, history="expand")
    rows = p.flush()
    direct = turnpack.pack([qwen3().encode(c, history="expand") for c in convs], seq_len=1024)
    assert np.array_equal(rows.input_ids, direct.input_ids)
    assert np.array_equal(rows.prefix_ends, direct.prefix_ends)
    assert rows.stats["branches_packed"] == 0 + 1 + 2


def test_tree_rows_train_like_the_expanded_samples_one_by_one():
    """The loss and gradients of a tree-packed row equal those of every supervised turn trained alone in
    its inference context (float64 reference model, within 1e-5), and differ without the tree mask."""
    torch = pytest.importorskip("torch")
    from test_attention_tree import grads_of, sharpen
    from turnpack.train.model import Transformer, config_tiny

    expand = qwen3().encode(reasoning(3), history="expand")
    assert len(expand.branches) == 2
    packed = turnpack.pack([expand], seq_len=256)
    keys = ("input_ids", "labels", "position_ids", "document_ids", "prefix_starts", "prefix_ends")
    batch = {k: torch.from_numpy(np.asarray(getattr(packed, k), dtype=np.int64)) for k in keys}
    torch.manual_seed(0)
    config = config_tiny(512, dim=32, n_heads=4, n_kv_heads=2, ffn_hidden=64, max_seq_len=256)
    model = sharpen(Transformer(config).double())
    trained = int((batch["labels"] != -100).sum())

    def tree_loss(prefixes: bool):
        masks = model.build_attention_mask(
            batch["document_ids"],
            prefix_starts=batch["prefix_starts"] if prefixes else None,
            prefix_ends=batch["prefix_ends"] if prefixes else None,
        )
        _, s = model(
            batch["input_ids"], batch["position_ids"], labels=batch["labels"], loss_reduction="sum", **masks
        )
        return s / trained

    loss = tree_loss(True)
    loss.backward()
    tree_grads = grads_of(model)

    def alone(ids: list[int], mask: list[bool]):
        labels = [ids[t + 1] if mask[t + 1] else -100 for t in range(len(ids) - 1)] + [-100]
        _, s = model(torch.tensor([ids]), labels=torch.tensor([labels]), loss_reduction="sum")
        return s, sum(lab != -100 for lab in labels)

    ids = expand.input_ids.tolist()
    total, count = torch.zeros((), dtype=torch.float64), 0
    for a, b in expand.spans:  # each turn trained in the trunk, alone with its context
        mine = [bool(m) and int(s) < b and int(e) > a for m, (s, e) in zip(expand.mask, expand.offsets)]
        end = max(t for t, m in enumerate(mine) if m) + 1
        s, n = alone(ids[:end], mine[:end])
        total, count = total + s / trained, count + n
    for br in expand.branches:  # each rewritten turn: its context's tokens, then its target's
        prefix = ids[: br["prefix_len"]]
        s, n = alone(prefix + br["input_ids"].tolist(), [False] * len(prefix) + br["mask"].tolist())
        total, count = total + s / trained, count + n
    assert count == trained
    total.backward()
    assert loss.item() == pytest.approx(total.item(), abs=1e-5)
    alone_grads = grads_of(model)
    for name, g in tree_grads.items():
        torch.testing.assert_close(g, alone_grads[name], atol=1e-5, rtol=1e-5, msg=name)
    with torch.no_grad():
        assert abs(tree_loss(False).item() - loss.item()) > 1e-3


def test_dataset_options_take_every_history_and_check_it():
    for history in ("faithful", "expand"):
        assert turnpack.PackingOptions(history=history).encode_kwargs() == {"history": history}
        assert turnpack.PackingOptions.from_encode_kwargs({"history": history}).history == history
    assert turnpack.PackingOptions().encode_kwargs() == {}
    # checked when made: it decides whether rows carry prefix trees (tests/test_dataset_tree.py)
    with pytest.raises(ValueError, match="history must be one of 'rendered', 'faithful', 'expand'"):
        turnpack.PackingOptions(history="all")
