"""Error reporting: ConversationError / TemplateError, and `enc.skipped`."""

from __future__ import annotations

import re

import jinja2
import pytest
import reference as R
import turnpack
from tiny_tokenizer import tiny_tokenizer_json

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CHATML_TOOLS = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] }}"
    "{% for tc in message.tool_calls or [] %}{{ '<tool_call>' + tc.function.name + '</tool_call>' }}{% endfor %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
)

GOOD = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


@pytest.fixture(scope="module")
def tiny_tokenizer_path(tmp_path_factory):
    """A small byte-level BPE tokenizer.json with ChatML special tokens."""
    path = tmp_path_factory.mktemp("tiny") / "tokenizer.json"
    path.write_text(tiny_tokenizer_json())
    return str(path)


def make_tok(path, template=CHATML):
    return turnpack.ChatTokenizer(
        tokenizer=path,
        chat_template=template,
        special_tokens={"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"},
    )


def names_index(err: Exception, index: int) -> bool:
    return re.search(rf"(message|index)\D{{0,12}}\b{index}\b", str(err)) is not None


def test_exception_hierarchy():
    assert issubclass(turnpack.TurnpackError, ValueError)
    assert issubclass(turnpack.TemplateError, turnpack.TurnpackError)
    assert issubclass(turnpack.ConversationError, turnpack.TurnpackError)
    assert not issubclass(turnpack.TemplateError, turnpack.ConversationError)


BAD_CONVERSATIONS = [
    ("not_a_list", "hello", None),
    ("dict_not_list", {"role": "user", "content": "hi"}, None),
    ("message_not_a_dict", [{"role": "user", "content": "hi"}, "just a string"], 1),
    (
        "missing_role",
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}, {"content": "x"}],
        2,
    ),
    ("unknown_role", [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "abracadabra"}], 1),
    (
        "content_int",
        [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": 42},
        ],
        2,
    ),
]


@pytest.mark.parametrize("name,messages,index", BAD_CONVERSATIONS, ids=[b[0] for b in BAD_CONVERSATIONS])
def test_conversation_error_render_template(name, messages, index):
    with pytest.raises(turnpack.ConversationError) as exc:
        turnpack.render_template(CHATML, messages)
    if index is not None:
        assert names_index(exc.value, index), f"error does not name message {index}: {exc.value}"


@pytest.mark.parametrize("name,messages,index", BAD_CONVERSATIONS, ids=[b[0] for b in BAD_CONVERSATIONS])
def test_conversation_error_encode(tiny_tokenizer_path, name, messages, index):
    tok = make_tok(tiny_tokenizer_path)
    with pytest.raises(turnpack.ConversationError) as exc:
        tok.encode(messages)
    if index is not None:
        assert names_index(exc.value, index), f"error does not name message {index}: {exc.value}"
    with pytest.raises(turnpack.ConversationError):
        tok.render(messages)


def test_conversation_error_in_batch_names_message(tiny_tokenizer_path):
    tok = make_tok(tiny_tokenizer_path)
    with pytest.raises(turnpack.ConversationError) as exc:
        tok.encode_batch([GOOD, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3.5}]])
    assert names_index(exc.value, 1)


def test_conversation_error_is_value_error():
    with pytest.raises(ValueError):
        turnpack.render_template(CHATML, [{"content": "no role"}])


def test_template_error_raise_exception_message():
    tpl = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('A system message is required here!') }}{% endif %}"
    with pytest.raises(Exception, match="A system message is required here!"):
        R.render_reference(tpl, GOOD)  # transformers raises the same
    with pytest.raises(turnpack.TemplateError, match="A system message is required here!"):
        turnpack.render_template(tpl, GOOD)


def test_template_error_raise_exception_via_tokenizer(tiny_tokenizer_path):
    tpl = "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    tok = make_tok(tiny_tokenizer_path, tpl)
    with pytest.raises(turnpack.TemplateError, match="Conversation roles must alternate"):
        tok.encode(GOOD)
    with pytest.raises(turnpack.TemplateError, match="Conversation roles must alternate"):
        tok.render(GOOD)


@pytest.mark.parametrize(
    "tpl",
    [
        "{% for message in messages %}{{ message.content }}",  # missing endfor
        "{{ messages[0].content ",  # unclosed expression
        "{% if %}x{% endif %}",  # empty condition
        "{% endif %}",  # stray end tag
    ],
)
def test_template_error_syntax(tpl, tiny_tokenizer_path):
    with pytest.raises(jinja2.TemplateSyntaxError):
        R.render_reference(tpl, GOOD)
    with pytest.raises(turnpack.TemplateError):
        turnpack.render_template(tpl, GOOD)
    with pytest.raises(turnpack.TemplateError):
        tok = make_tok(tiny_tokenizer_path, tpl)  # at construction, or at the latest when used
        tok.encode(GOOD)


def test_template_error_undefined_attribute():
    """A template error that transformers raises as jinja2.UndefinedError must be a TemplateError too."""
    tpl = "{{ messages[0].content.upper() }}{{ messages[5].content.strip() }}"
    with pytest.raises(jinja2.UndefinedError):
        R.render_reference(tpl, GOOD)
    with pytest.raises(turnpack.TemplateError):
        turnpack.render_template(tpl, GOOD)


def test_skipped_empty_assistant(tiny_tokenizer_path):
    tok = make_tok(tiny_tokenizer_path)
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi user"},
    ]
    for start in ("prompt", "content"):
        enc = tok.encode(msgs, start=start)
        assert list(enc.skipped) == [1], start
        assert len(enc.spans) == 1, start
        s, e = map(int, enc.spans[0])
        assert enc.text[s:e].startswith("hi user"), (start, enc.text[s:e])
        # nothing of message 1's turn is trained: the first trained token lies inside the last turn
        first = int(enc.mask.argmax())
        assert int(enc.offsets[first][1]) > s, start


def test_not_skipped_tool_call_without_content(tiny_tokenizer_path):
    tok = make_tok(tiny_tokenizer_path, CHATML_TOOLS)
    msgs = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "fox", "arguments": {}}}],
        },
        {"role": "tool", "content": "brown"},
        {"role": "assistant", "content": "the quick"},
    ]
    enc = tok.encode(msgs, start="content")
    assert list(enc.skipped) == []
    assert len(enc.spans) == 2
    s, e = map(int, enc.spans[0])
    assert "<tool_call>fox</tool_call>" in enc.text[s:e]


def test_skipped_all_empty_trains_nothing(tiny_tokenizer_path):
    tok = make_tok(tiny_tokenizer_path)
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]
    enc = tok.encode(msgs, start="content")
    assert list(enc.skipped) == [1]
    assert list(enc.spans) == []
    assert not enc.mask.any()
