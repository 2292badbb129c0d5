"""Reference side of the conformance tests: what transformers does, and the seed-PR mask oracle.

Nothing here imports turnpack. Everything is computed with transformers (rendering, the
`{% generation %}` assistant mask) and the `tokenizers` library (tokenization), so the tests compare
turnpack against an independent implementation.

* `render_reference` is exactly `tokenizer.apply_chat_template(conversation, tokenize=False, ...)`:
  transformers normalises the messages (`_normalize_chat_messages`: drops keys whose value is None) and
  renders them with `render_jinja_template`, passing the tokenizer's special tokens map merged with the
  call's keyword arguments (`{**tokenizer.special_tokens_map, **kwargs}`) as template variables. Here the
  special tokens (`bos_token`, `eos_token`, ...) are simply passed as keyword arguments.
* `seed_oracle` is the "seed PR" per-turn mask algorithm at token level (see its docstring).
* `generation_mask_reference` is transformers' `return_assistant_tokens_mask` for `{% generation %}`
  templates, through a `PreTrainedTokenizerFast` built on the same `tokenizers.Tokenizer`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATES_DIR = FIXTURES / "templates"
CONTEXTS_DIR = FIXTURES / "contexts"

# Template variables used for our own conversations (contexts bring their own).
DEFAULT_TEMPLATE_VARS = {"bos_token": "<s>", "eos_token": "</s>"}

# Keys of a context file that are not template variables.
_CONTEXT_NON_VARS = {"messages", "tools", "add_generation_prompt"}


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


def template_names() -> list[str]:
    return sorted(p.name for p in TEMPLATES_DIR.glob("*.jinja"))


def load_template(name: str) -> str:
    # newline="" keeps the file byte for byte (a template with \r\n must not be normalised)
    with open(TEMPLATES_DIR / name, encoding="utf-8", newline="") as f:
        return f.read()


def context_names() -> list[str]:
    return sorted(p.stem for p in CONTEXTS_DIR.glob("*.json"))


def load_context(name: str) -> dict:
    with open(CONTEXTS_DIR / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)


@cache
def _conversations_raw() -> str:
    return (FIXTURES / "conversations.json").read_text(encoding="utf-8")


def load_conversations() -> list[dict]:
    """Our own named conversation cases (a fresh deep copy on every call)."""
    return json.loads(_conversations_raw())


@dataclass
class Case:
    """One conversation to render: messages, tools and template variables (special tokens + kwargs)."""

    name: str
    messages: list
    tools: list | None = None
    template_vars: dict = field(default_factory=dict)


def all_cases() -> list[Case]:
    """Every context file and every own conversation, as `Case`s (name prefixed `ctx:` / `conv:`)."""
    cases = []
    for name in context_names():
        ctx = load_context(name)
        tvars = {k: v for k, v in ctx.items() if k not in _CONTEXT_NON_VARS}
        cases.append(Case(f"ctx:{name}", ctx["messages"], ctx.get("tools"), tvars))
    for conv in load_conversations():
        tvars = dict(DEFAULT_TEMPLATE_VARS)
        tvars.update(conv.get("kwargs") or {})
        cases.append(Case(f"conv:{conv['name']}", conv["messages"], conv.get("tools"), tvars))
    return cases


def get_case(name: str) -> Case:
    for c in all_cases():
        if c.name == name:
            return c
    raise KeyError(name)


# --------------------------------------------------------------------------------------------------
# transformers rendering
# --------------------------------------------------------------------------------------------------


def render_reference(
    template: str, messages, tools=None, add_generation_prompt: bool = False, **kwargs
) -> str:
    """Exactly `apply_chat_template(messages, tools=tools, chat_template=template, tokenize=False,
    add_generation_prompt=..., **kwargs)` of transformers, special tokens passed in `kwargs`.

    Raises whatever transformers raises (jinja2.TemplateError and subclasses, TypeError, ...).
    """
    from transformers.utils.chat_template_utils import _normalize_chat_messages, render_jinja_template

    if isinstance(messages, (list, tuple)) and len(messages) == 0:
        raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
    conversation = _normalize_chat_messages(copy.deepcopy(messages))
    rendered, _ = render_jinja_template(
        conversations=[conversation],
        tools=copy.deepcopy(tools),
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        **copy.deepcopy(kwargs),
    )
    return rendered[0]


def render_reference_generation(
    template: str, messages, tools=None, add_generation_prompt: bool = False, **kwargs
) -> tuple[str, list[tuple[int, int]]]:
    """Rendering plus transformers' `{% generation %}` char spans (what `return_assistant_tokens_mask` uses)."""
    from transformers.utils.chat_template_utils import _normalize_chat_messages, render_jinja_template

    conversation = _normalize_chat_messages(copy.deepcopy(messages))
    rendered, indices = render_jinja_template(
        conversations=[conversation],
        tools=copy.deepcopy(tools),
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        return_assistant_tokens_mask=True,
        **copy.deepcopy(kwargs),
    )
    return rendered[0], [tuple(x) for x in indices[0]]


def template_uses_strftime_now(template: str) -> bool:
    return "strftime_now" in template


# Formats passed to strftime_now by the corpus templates (plus a few common ones).
_DATE_FORMATS = ("%Y-%m-%d", "%d %b %Y", "%B %d, %Y", "%d %B %Y", "%b %d, %Y")


def date_strings_near_now() -> set[str]:
    """Today's date (local and UTC, +-1 day for a midnight race) in every strftime format the corpus uses."""
    out = set()
    for now in (_dt.datetime.now(), _dt.datetime.now(_dt.timezone.utc)):
        for delta in (-1, 0, 1):
            day = now + _dt.timedelta(days=delta)
            for fmt in _DATE_FORMATS:
                out.add(day.strftime(fmt))
    return out


def mask_dates(text: str, dates: set[str]) -> str:
    """Replace every occurrence of one of `dates` (longest first) with `<DATE>`."""
    if not dates:
        return text
    pattern = "|".join(re.escape(d) for d in sorted(dates, key=len, reverse=True))
    return re.sub(pattern, "<DATE>", text)


def first_difference(a: str, b: str, context: int = 40) -> str:
    """Human-readable description of the first differing character of two strings."""
    n = min(len(a), len(b))
    i = next((k for k in range(n) if a[k] != b[k]), n)
    lo = max(0, i - context)
    return (
        f"first difference at char {i} (len {len(a)} vs {len(b)}):\n"
        f"  expected ...{a[lo : i + context]!r}\n"
        f"  actual   ...{b[lo : i + context]!r}"
    )


# --------------------------------------------------------------------------------------------------
# tokenizers helpers
# --------------------------------------------------------------------------------------------------


def tokenizer_from_tiktoken(ranks_path: str, pattern: str, special_tokens: dict[str, int]):
    """A `tokenizers.Tokenizer` equivalent to a tiktoken encoding, built by transformers' own converter
    (`TikTokenConverter`: byte-level BPE from the ranks, Split(pattern) + ByteLevel pre-tokenizer,
    ignore_merges), with the special tokens added at their given ids. Independent of turnpack."""
    return _tokenizer_from_tiktoken_cached(
        str(ranks_path), pattern, tuple(sorted(special_tokens.items(), key=lambda kv: kv[1]))
    )


@lru_cache(maxsize=8)
def _tokenizer_from_tiktoken_cached(ranks_path: str, pattern: str, specials: tuple):
    import tokenizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tok = TikTokenConverter(vocab_file=ranks_path, pattern=pattern).converted()
    data = json.loads(tok.to_str())
    # tokenizers numbers added tokens consecutively after the vocabulary, whatever id they were given:
    # fill any gap before a special id (cl100k has none at 100256) with a placeholder that never occurs
    # in text, so every special token gets its own id.
    taken = {int(i) for _, i in specials}
    gaps = [
        (f"<|reference_unused_{i}|>", i)
        for i in range(len(data["model"]["vocab"]), max(taken, default=0))
        if i not in taken
    ]
    data["added_tokens"] = [
        {
            "id": int(i),
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for t, i in sorted([*specials, *gaps], key=lambda ti: ti[1])
    ]
    out = tokenizers.Tokenizer.from_str(json.dumps(data))
    for t, i in specials:
        got = out.token_to_id(t)
        if got != i:
            raise AssertionError(f"special token {t!r} got id {got}, wanted {i}")
    return out


def load_tokenizer_json(path) -> Any:
    """`tokenizers.Tokenizer` from a tokenizer.json with truncation and padding reset (as transformers does)."""
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


def special_token_ids(tokenizer) -> set[int]:
    """Ids of the added tokens flagged `special` in a `tokenizers.Tokenizer`."""
    return {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}


def encode_plain(tokenizer, text: str):
    """`tokenizer.encode(text, add_special_tokens=False)` (an `Encoding`: ids, char offsets)."""
    return tokenizer.encode(text, add_special_tokens=False)


# --------------------------------------------------------------------------------------------------
# The seed-PR oracle
# --------------------------------------------------------------------------------------------------


@dataclass
class OracleTurn:
    message_index: int
    diff: tuple[int, int]  # [start, end) token indices of the diff in the full token list
    eot_index: int | None  # the special token marked after the diff, if any
    char_prefix: int  # common char prefix of the full and blanked renderings
    char_suffix: int  # common char suffix (not overlapping the prefix)
    empty: bool  # blanking the message changes nothing: it has no text of its own


@dataclass
class OracleResult:
    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    mask: list[bool]
    turns: list[OracleTurn]


def _common_prefix(a, b) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _common_suffix(a, b, prefix: int) -> int:
    # the suffix may not overlap the prefix in either sequence
    n = min(len(a), len(b)) - prefix
    i = 0
    while i < n and a[len(a) - 1 - i] == b[len(b) - 1 - i]:
        i += 1
    return i


def blanked(messages: list, i: int) -> list:
    out = copy.deepcopy(messages)
    out[i] = {"role": "assistant", "content": ""}
    return out


def seed_oracle(tokenizer, template: str, messages: list, tools=None, **template_vars) -> OracleResult:
    """The seed-PR per-turn mask algorithm, at token level, in plain Python.

    For each assistant message i: render the full conversation and the conversation with message i
    replaced by {"role": "assistant", "content": ""} (transformers rendering, no generation prompt),
    tokenize both (`add_special_tokens=False`), diff the token id lists from the front and from the back
    (common prefix, then common suffix not overlapping it), mark the full rendering's tokens inside the
    diff as trained, and also mark the token right after the diff if it is a special token. A message
    whose diff is empty marks nothing (not even a following special token).
    """
    specials = special_token_ids(tokenizer)
    text = render_reference(template, messages, tools=tools, add_generation_prompt=False, **template_vars)
    enc = encode_plain(tokenizer, text)
    ids = list(enc.ids)
    mask = [False] * len(ids)
    turns = []
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and m.get("role") == "assistant"):
            continue
        btext = render_reference(
            template, blanked(messages, i), tools=tools, add_generation_prompt=False, **template_vars
        )
        bids = list(encode_plain(tokenizer, btext).ids)
        p = _common_prefix(ids, bids)
        s = _common_suffix(ids, bids, p)
        start, end = p, len(ids) - s
        eot = None
        if end > start:
            for k in range(start, end):
                mask[k] = True
            if end < len(ids) and ids[end] in specials:
                mask[end] = True
                eot = end
        cp = _common_prefix(text, btext)
        cs = _common_suffix(text, btext, cp)
        turns.append(OracleTurn(i, (start, end), eot, cp, cs, text == btext))
    return OracleResult(text, ids, [tuple(o) for o in enc.offsets], mask, turns)


# --------------------------------------------------------------------------------------------------
# transformers' {% generation %} mask
# --------------------------------------------------------------------------------------------------


def generation_mask_reference(tokenizer, template: str, messages, tools=None, **template_vars):
    """(input_ids, assistant_masks) from transformers' `apply_chat_template(return_assistant_tokens_mask=True)`
    with a `PreTrainedTokenizerFast` wrapping `tokenizer` (a `tokenizers.Tokenizer`)."""
    import transformers

    fast = _fast_wrapper(tokenizer)
    out = fast.apply_chat_template(
        copy.deepcopy(messages),
        tools=copy.deepcopy(tools),
        chat_template=template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        add_generation_prompt=False,
        **copy.deepcopy(template_vars),
    )
    assert isinstance(fast, transformers.PreTrainedTokenizerFast)
    return list(out["input_ids"]), [bool(x) for x in out["assistant_masks"]]


_FAST_CACHE: dict[int, Any] = {}


def _fast_wrapper(tokenizer):
    import transformers

    key = id(tokenizer)
    if key not in _FAST_CACHE:
        _FAST_CACHE[key] = (tokenizer, transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer))
    return _FAST_CACHE[key][1]
