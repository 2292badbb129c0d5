"""`boundary="split"` tokenizes the text before each span and each span on its own, so the trained tokens
are exactly the tokens of the span's text, as a model emits them after the prompt."""

from __future__ import annotations

import itertools

import numpy as np
import reference as R
import turnpack
from test_mask_conformance import model_tokenizers

# A template where the assistant's text follows "Falcon:" with no separator: merged tokenization joins
# the header's ":" with the message's first characters ("::" or ":\n"), split tokenization does not.
FALCON = (
    "{% for m in messages %}{% if m.role == 'user' %}{{ 'User: ' + m.content + '\\n' }}"
    "{% else %}{{ 'Falcon:' + m.content + '<|endoftext|>\\n' }}{% endif %}{% endfor %}"
)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def test_split_trains_exactly_the_span_tokens():
    tok, _ = model_tokenizers("qwen3")
    for case in R.all_cases():
        try:
            enc = tok.encode(case.messages, tools=case.tools, boundary="split")
        except Exception:  # noqa: BLE001 - cases the template refuses are covered elsewhere
            continue
        merged = tok.encode(case.messages, tools=case.tools)
        assert enc.text == merged.text and enc.spans == merged.spans, case.name
        # the ids are the pieces' tokenizations, one after the other
        cuts = [0, *[c for s in enc.spans for c in s], len(enc.text)]
        pieces = [enc.text[a:b] for a, b in itertools.pairwise(cuts) if a < b]
        assert enc.input_ids.tolist() == [i for p in pieces for i in tok.tokenize(p)], case.name
        # every trained run is exactly one span's tokens
        trained = [enc.input_ids[a:b].tolist() for a, b in runs(enc.mask)]
        assert trained == [tok.tokenize(enc.text[a:b]) for a, b in enc.spans], case.name


def test_split_differs_from_merge_where_bpe_joins_across_the_boundary():
    tok, _ = model_tokenizers("qwen3")

    falcon = turnpack.ChatTokenizer.from_tokenizer_json(tok.to_tokenizer_json(), chat_template=FALCON)
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ":\n- a list"}]
    # start="content": this template has no generation prompt, so by default "Falcon:" would be trained
    merged = falcon.encode(msgs, start="content")
    split = falcon.encode(msgs, start="content", boundary="split")
    assert merged.text == split.text
    start = merged.text.index("Falcon:") + len("Falcon:")
    assert merged.spans[0][0] == start == split.spans[0][0]
    # merged: the first trained token also covers the header's ':'; split: it starts at the span
    first_merged = int(np.flatnonzero(merged.mask)[0])
    first_split = int(np.flatnonzero(split.mask)[0])
    assert merged.offsets[first_merged][0] < start
    assert split.offsets[first_split][0] == start
    assert split.input_ids[split.mask].tolist() == tok.tokenize(":\n- a list<|endoftext|>")
