"""The layout method (a constant number of renderings per conversation, `method="auto"`) must give
exactly the encodings of the per-message method (`method="per_message"`, one blanked rendering per
supervised message), on every fixture template: where a template is not local the layout's checks
must notice and fall back."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import reference as R
import turnpack
from tiny_tokenizer import tiny_tokenizer_json

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up",
            "parameters": {
                "type": "object",
                "properties": {"word": {"type": "string"}},
                "required": ["word"],
            },
        },
    }
]


def plain(n: int) -> list[dict]:
    msgs = [{"role": "system", "content": "You are terse."}]
    for i in range(n):
        msgs += [
            {"role": "user", "content": f"Question {i}: what is {i} + {i}?"},
            {"role": "assistant", "content": f"{2 * i}. <b>Done</b> \n"},
        ]
    return msgs


def reasoning(n: int) -> list[dict]:
    msgs = []
    for i in range(n):
        msgs += [
            {"role": "user", "content": f"Is {i} even?"},
            {
                "role": "assistant",
                "reasoning_content": f"{i} mod 2 = {i % 2}",
                "content": "yes" if i % 2 == 0 else "no",
            },
        ]
    return msgs


def tool_calls(n: int) -> list[dict]:
    msgs = [{"role": "user", "content": "Look up some words."}]
    for i in range(n):
        call = {"type": "function", "function": {"name": "lookup", "arguments": {"word": f"w{i}"}}}
        msgs += [
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": f"meaning {i}"},
            {"role": "assistant", "content": f"w{i} means {i}."},
            {"role": "user", "content": "next"},
        ]
    return msgs[:-1]


def mixed(n: int) -> list[dict]:
    msgs = plain(n)
    msgs[2]["weight"] = 0  # the first assistant turn is not trained
    msgs[4]["content"] = ""  # the second renders nothing of its own (skipped)
    msgs[6]["content"] = "same"  # two assistant turns with the same text
    msgs[8]["content"] = "same"
    return msgs


def tool_calls_between(n: int) -> list[dict]:
    """Tool rounds between two plain turns: the first and last supervised messages, on which the
    generation prompt found in the text is checked, follow a user message; half of the others
    follow a tool result."""
    return [
        *tool_calls(n),
        {"role": "user", "content": "Thanks."},
        {"role": "assistant", "content": "You are welcome."},
    ]


# What templates print before an assistant turn, quoted in user messages: the generation prompt
# found in the text must be the template's own, not a quote.
HEADERS = [
    "<|im_start|>assistant\n",
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "<|assistant|>\n",
    "<start_of_turn>model\n",
    "<｜Assistant｜>",
    "[/INST]",
    "Assistant:",
]


def quoting(n: int) -> list[dict]:
    msgs = plain(n)
    for i, m in enumerate(msgs):
        if m["role"] == "user":
            m["content"] += " Quote: " + HEADERS[i % len(HEADERS)]
    return msgs


CONVERSATIONS = {
    # at least 7 supervised messages each, so that the layout applies (LAYOUT_MIN_TARGETS)
    "plain": (plain(8), None),
    "reasoning": (reasoning(8), None),
    "tool_calls": (tool_calls(4), TOOLS),
    "mixed": (mixed(9), None),
    "tool_calls_between": (tool_calls_between(4), TOOLS),
    "quoting": (quoting(8), None),
}


@cache
def tokenizer_for(template_name: str) -> turnpack.ChatTokenizer:
    return turnpack.ChatTokenizer.from_tokenizer_json(
        tiny_tokenizer_json(),
        chat_template=R.load_template(template_name),
        special_tokens={"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"},
    )


def outcome(tok, msgs, tools, **kw):
    try:
        return tok.encode(msgs, tools=tools, **kw)
    except turnpack.TurnpackError as e:
        return type(e)


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("start", ["prompt", "content"])
def test_layout_equals_per_message_on_every_template(conversation, start):
    msgs, tools = CONVERSATIONS[conversation]
    compared = 0
    for name in R.template_names():
        tok = tokenizer_for(name)
        fast = outcome(tok, msgs, tools, start=start)
        slow = outcome(tok, msgs, tools, start=start, method="per_message")
        if isinstance(slow, type):
            assert fast is slow, f"{name}: per_message raised {slow.__name__}, auto gave {fast}"
            continue
        assert not isinstance(fast, type), f"{name}: auto raised {fast.__name__}"
        where = f"{name} {conversation} start={start}"
        assert fast.text == slow.text, where
        assert fast.spans == slow.spans, f"{where}: {fast.spans} != {slow.spans}"
        assert fast.skipped == slow.skipped, where
        assert np.array_equal(fast.mask, slow.mask), where
        # a refused layout costs its renderings (at most 4 + 3 here), a refused compression its 1
        assert fast.renders <= slow.renders + 10, where
        compared += 1
    assert compared >= 40, f"only {compared} templates encoded {conversation}"


def test_layout_is_used_by_most_templates():
    """The constant-render path must actually apply, or the equality above proves nothing."""
    used, encoded = [], 0
    for name in R.template_names():
        tok = tokenizer_for(name)
        fast = outcome(tok, plain(12), None, start="content")
        slow = outcome(tok, plain(12), None, start="content", method="per_message")
        if isinstance(slow, type):
            continue
        encoded += 1
        if fast.renders < slow.renders:
            used.append(name)
            assert fast.text == slow.text and fast.spans == slow.spans, name
    print(f"layout used for {len(used)} of {encoded} templates on a 12-turn conversation")
    assert len(used) >= 0.8 * encoded
    qwen3 = tokenizer_for("Qwen-Qwen3-0.6B.jinja")
    # full + 4 layout renderings + one per further bit of the index (40 targets: bits 1..5)
    assert qwen3.encode(plain(40), start="content").renders == 1 + 4 + 5
    assert qwen3.encode(reasoning(40), start="content").renders == 1 + 4 + 5


@pytest.mark.parametrize("conversation", ["plain", "tool_calls_between", "quoting"])
def test_generation_prompt_is_found_in_the_text_for_most_templates(conversation):
    """With three or more supervised messages, `start="prompt"` finds the generation prompt in the
    text (3 renderings: it, without it, and the last message's prompt) instead of rendering one
    prompt per message. It must apply, or the equality above proves nothing about it."""
    msgs, tools = CONVERSATIONS[conversation]
    used, encoded = [], 0
    for name in R.template_names():
        tok = tokenizer_for(name)
        prompt = outcome(tok, msgs, tools)
        content = outcome(tok, msgs, tools, start="content")
        if isinstance(prompt, type) or isinstance(content, type):
            continue
        encoded += 1
        if prompt.renders == content.renders + 3:
            used.append(name)
    print(f"generation prompt found in the text for {len(used)} of {encoded} templates")
    assert len(used) >= 0.75 * encoded
    for name in ["Qwen-Qwen3-0.6B.jinja", "meta-llama-Llama-3.1-8B-Instruct.jinja"]:
        assert name in used
    qwen3 = tokenizer_for("Qwen-Qwen3-0.6B.jinja")
    assert qwen3.encode(reasoning(40)).renders == 1 + 4 + 5 + 3


def test_method_is_validated():
    with pytest.raises(ValueError, match="method"):
        tokenizer_for("Qwen-Qwen3-0.6B.jinja").encode(plain(1), method="fast")
