"""turnpack.render_template must render every fixture template exactly like transformers.

Matrix: every template in tests/fixtures/templates x (every context in tests/fixtures/contexts + every
conversation in tests/fixtures/conversations.json) x add_generation_prompt in (False, True).

* transformers renders -> turnpack's rendering must be equal byte for byte.
* transformers raises  -> turnpack must raise turnpack.TemplateError (sandbox refusals such as
  `list.append` included).

Templates that call `strftime_now` print the current date: both renderers read the clock a few
microseconds apart, so they normally agree exactly. Only if they do not, the comparison is repeated with
every occurrence of today's date (local or UTC, +-1 day, in the formats the corpus uses) replaced by
`<DATE>`, which only forgives a clock race, not a wrong date or a different format.

One known divergence is counted separately, never silently: Jinja2's `Markup` (what `|safe` returns)
HTML-escapes any plain string added to it with `+`, so functionary-v3.1's
`"..."|safe + name + ... + t|tojson` renders `&#34;` for every quote of the tool JSON under
transformers. minijinja's `+` cannot be overloaded, so turnpack renders the JSON unescaped. The outcome
`markup-escape` is only granted when HTML-unescaping transformers' output gives turnpack's exactly.
"""

from __future__ import annotations

import collections
import html

import pytest
import reference as R
import turnpack

TEMPLATES = R.template_names()
CASES = R.all_cases()
CASE_BY_NAME = {c.name: c for c in CASES}

# outcome per (template, case, add_generation_prompt)
RESULTS: dict[tuple[str, str, bool], str] = {}
DETAILS: dict[tuple[str, str, bool], str] = {}


def _check_one(template_name: str, case: R.Case, agp: bool) -> tuple[str, str]:
    """Returns (outcome, detail). outcome in equal / equal-modulo-date / both-raise / mismatch."""
    template = R.load_template(template_name)
    try:
        expected = R.render_reference(template, case.messages, case.tools, agp, **case.template_vars)
        ref_error = None
    except Exception as e:  # noqa: BLE001 - any transformers failure means "must raise"
        expected, ref_error = None, e

    try:
        actual = turnpack.render_template(
            template, case.messages, tools=case.tools, add_generation_prompt=agp, **case.template_vars
        )
        tp_error = None
    except Exception as e:  # noqa: BLE001
        actual, tp_error = None, e

    where = f"template={template_name} case={case.name} add_generation_prompt={agp}"
    if ref_error is not None:
        if isinstance(tp_error, turnpack.TemplateError):
            return "both-raise", ""
        if tp_error is not None:
            return "mismatch", (
                f"{where}: transformers raised {type(ref_error).__name__}: {ref_error}; turnpack raised "
                f"{type(tp_error).__name__} (not TemplateError): {tp_error}"
            )
        return "mismatch", (
            f"{where}: transformers raised {type(ref_error).__name__}: {ref_error}; turnpack rendered "
            f"{len(actual)} chars: {actual[:300]!r}"
        )
    if tp_error is not None:
        return "mismatch", (
            f"{where}: transformers rendered {len(expected)} chars but turnpack raised "
            f"{type(tp_error).__name__}: {tp_error}"
        )
    if not isinstance(actual, str):
        return "mismatch", f"{where}: turnpack returned {type(actual).__name__}, not str"
    if actual == expected:
        return "equal", ""
    if "|safe +" in template and html.unescape(expected) == actual:
        return "markup-escape", ""
    if R.template_uses_strftime_now(template):
        dates = R.date_strings_near_now()
        exp_m, act_m = R.mask_dates(expected, dates), R.mask_dates(actual, dates)
        if exp_m != expected and exp_m == act_m:
            return "equal-modulo-date", ""
    return "mismatch", f"{where}:\n{R.first_difference(expected, actual)}"


@pytest.mark.parametrize("case_name", [c.name for c in CASES])
@pytest.mark.parametrize("template_name", TEMPLATES)
def test_render_matches_transformers(template_name, case_name):
    case = CASE_BY_NAME[case_name]
    failures = []
    for agp in (False, True):
        outcome, detail = _check_one(template_name, case, agp)
        RESULTS[(template_name, case_name, agp)] = outcome
        if outcome == "mismatch":
            DETAILS[(template_name, case_name, agp)] = detail
            failures.append(detail)
    assert not failures, "\n\n".join(failures)


def test_render_conformance_summary(pytestconfig):
    """Counts over the whole matrix (computes it here if the parametrized tests were not run)."""
    expected_keys = [(t, c.name, agp) for t in TEMPLATES for c in CASES for agp in (False, True)]
    for key in expected_keys:
        if key not in RESULTS:
            t, c, agp = key
            outcome, detail = _check_one(t, CASE_BY_NAME[c], agp)
            RESULTS[key] = outcome
            if outcome == "mismatch":
                DETAILS[key] = detail
    counts = collections.Counter(RESULTS[k] for k in expected_keys)
    per_template = collections.Counter(k[0] for k in expected_keys if RESULTS[k] == "mismatch")
    lines = [
        f"render conformance: {len(TEMPLATES)} templates x {len(CASES)} cases x 2 = {len(expected_keys)}: "
        + ", ".join(
            f"{k}={counts.get(k, 0)}"
            for k in ("equal", "equal-modulo-date", "both-raise", "markup-escape", "mismatch")
        )
    ]
    if per_template:
        lines.append(
            "mismatches per template: " + ", ".join(f"{t}={n}" for t, n in per_template.most_common())
        )
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    for line in lines:
        print(line)
        if reporter is not None:
            reporter.write_line(line)
    # the matrix must exercise both branches, or the fixtures are broken
    assert counts["equal"] > 0 and counts["both-raise"] > 0
    assert counts["mismatch"] == 0, "\n".join(lines)


def test_sandbox_refuses_list_append():
    """transformers refuses `list.append` in templates; turnpack must too (known sandbox behaviour)."""
    tpl = "{% set xs = [] %}{% set _ = xs.append(1) %}{{ xs }}"
    with pytest.raises(Exception, match="unsafe"):
        R.render_reference(tpl, [{"role": "user", "content": "hi"}])
    with pytest.raises(turnpack.TemplateError):
        turnpack.render_template(tpl, [{"role": "user", "content": "hi"}])


def test_kimi_k2_with_tools_raises_like_transformers():
    """Kimi-K2-Instruct calls `.append` on a list when tools are given: transformers' sandbox refuses it."""
    case = CASE_BY_NAME["conv:tool_call_dict_arguments"]
    template = R.load_template("Kimi-K2-Instruct.jinja")
    with pytest.raises(Exception, match="unsafe"):
        R.render_reference(template, case.messages, case.tools, False, **case.template_vars)
    with pytest.raises(turnpack.TemplateError):
        turnpack.render_template(template, case.messages, tools=case.tools, **case.template_vars)


def test_none_values_are_dropped():
    """transformers drops message keys whose value is None before rendering."""
    tpl = "{% for m in messages %}{{ m.role }}:{{ m.tool_calls is defined }}|{% endfor %}"
    msgs = [{"role": "user", "content": "a", "tool_calls": None}, {"role": "assistant", "content": "b"}]
    expected = R.render_reference(tpl, msgs)
    assert expected == "user:False|assistant:False|"
    assert turnpack.render_template(tpl, msgs) == expected


def test_reasoning_fields_are_aliased():
    """transformers copies reasoning_content / thinking / reasoning into both thinking and reasoning_content."""
    tpl = "{% for m in messages %}[{{ m.thinking }}|{{ m.reasoning_content }}]{% endfor %}"
    for key in ("reasoning_content", "thinking", "reasoning"):
        msgs = [{"role": "assistant", "content": "c", key: "r"}]
        expected = R.render_reference(tpl, msgs)
        assert expected == "[r|r]"
        assert turnpack.render_template(tpl, msgs) == expected, key


def test_render_does_not_mutate_inputs():
    case = CASE_BY_NAME["conv:reasoning_content_history"]
    import copy

    msgs = copy.deepcopy(case.messages)
    turnpack.render_template(R.load_template("Qwen-Qwen3-0.6B.jinja"), msgs, **case.template_vars)
    assert msgs == case.messages
