"""Cost of faithful history: tokens in rows per trained token, and encode time, for conversations with
reasoning in every turn (Qwen3's tokenizer and template, which drop the reasoning of every turn before
the last user message), at 2, 5, 10, 20 and 40 turns, side by side in one run:

- naive: one sample per assistant turn (its inference context, then its target), the usual fix;
- tree: `history="expand"` packed as prefix-tree rows (the trunk once, each rewritten turn's target
  once, plus one token per branch: the context's last token, which predicts the target's first);
- rendered: today's single sample (`history="rendered"`), which trains rewritten turns as rendered.

Run: `python bench/history.py [--out bench/results/history.json]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

import compare as C
import oracle as O
import turnpack
import workload as W

TURNS = (2, 5, 10, 20, 40)


def reasoning_conversation(turns: int, seed: int) -> list[dict]:
    """A conversation of the workload's kind with reasoning in every assistant turn and no tools."""
    import random

    rng = random.Random(f"turnpack-bench/history/{seed}/{turns}")
    w = W._Writer(rng)
    messages: list[dict] = [{"role": "system", "content": rng.choice(W.SYSTEM_PROMPTS)}]
    for _ in range(turns):
        messages.append({"role": "user", "content": w.user()})
        messages.append({"role": "assistant", "content": w.assistant(), "reasoning_content": w.reasoning()})
    return messages


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def tokens_of(hf, text: str) -> list[int]:
    return hf.encode(text, add_special_tokens=False).ids


def measure(model: O.Model, turns: int, n: int, repeat: int) -> dict:
    tok, model_tok = model.tok, model.hf
    convs = [reasoning_conversation(turns, s) for s in range(n)]
    rendered = [tok.encode(c) for c in convs]
    expand = [tok.encode(c, history="expand") for c in convs]
    naive_tokens = naive_trained = 0
    for c in convs:
        # one sample per assistant turn: the tokens of messages[:i+1] rendered with it last
        for i, m in enumerate(c):
            if m["role"] != "assistant":
                continue
            one = tok.encode(c[: i + 1], supervise="last_assistant")
            naive_tokens += len(one)
            naive_trained += int(one.mask[1:].sum())
    tree_tokens = sum(len(e) + sum(len(b["input_ids"]) for b in e.branches) for e in expand)
    tree_trained = sum(
        int(e.mask[1:].sum()) + sum(int(b["mask"][1:].sum()) for b in e.branches) for e in expand
    )
    rendered_tokens = sum(len(e) for e in rendered)
    rendered_trained = sum(int(e.mask[1:].sum()) for e in rendered)
    # the target: the conversation's tokens once, plus each rewritten turn's target tokens once, plus
    # one token per branch (a sample of its own would add its context: none here)
    bound = sum(len(e) + sum(len(r["target"]) and 1 for r in e.rewrites) for e in expand) + sum(
        len(tokens_of(model_tok, r["target"])) for e in expand for r in e.rewrites
    )
    assert all(b["prefix_len"] > 0 for e in expand for b in e.branches)
    packed = turnpack.pack(
        expand, seq_len=max(len(e) + sum(len(b["input_ids"]) for b in e.branches) for e in expand)
    )
    assert packed.stats["packed"] == n and packed.stats["branches_dropped"] == 0
    assert int(packed.stats["tokens"]) == tree_tokens
    t_rendered = best_time(lambda: [tok.encode(c) for c in convs], repeat)
    t_expand = best_time(lambda: [tok.encode(c, history="expand") for c in convs], repeat)
    return {
        "turns": turns,
        "conversations": n,
        "rewritten_turns": sum(len(e.rewritten) for e in expand),
        "naive_tokens_per_trained": naive_tokens / naive_trained,
        "tree_tokens_per_trained": tree_tokens / tree_trained,
        "rendered_tokens_per_trained": rendered_tokens / rendered_trained,
        "tree_tokens_over_bound": tree_tokens / bound,
        "naive_tokens_over_tree": naive_tokens / tree_tokens,
        "rendered_encode_ms_per_conv": 1e3 * t_rendered / n,
        "expand_encode_ms_per_conv": 1e3 * t_expand / n,
        "expand_encode_us_per_token": 1e6 * t_expand / tree_tokens,
        "renders_per_conv": sum(e.renders for e in expand) / n,
        "history_renders_per_conv": sum(e.history_renders for e in expand) / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conversations", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    model = O.load_model("qwen3")
    rows = [measure(model, t, args.conversations, args.repeat) for t in TURNS]
    head = f"{'turns':>5} {'naive':>7} {'tree':>6} {'rendered':>8} {'tree/bound':>10} {'naive/tree':>10} {'enc ms':>8} {'expand ms':>9} {'us/tok':>7}"
    print("tokens in rows per trained token, and encode time per conversation (one thread)")
    print(head)
    for r in rows:
        print(
            f"{r['turns']:>5} {r['naive_tokens_per_trained']:>7.2f} {r['tree_tokens_per_trained']:>6.2f}"
            f" {r['rendered_tokens_per_trained']:>8.2f} {r['tree_tokens_over_bound']:>10.3f}"
            f" {r['naive_tokens_over_tree']:>10.2f} {r['rendered_encode_ms_per_conv']:>8.2f}"
            f" {r['expand_encode_ms_per_conv']:>9.2f} {r['expand_encode_us_per_token']:>7.2f}"
        )
    if args.out:
        args.out.write_text(json.dumps({"machine": C.machine(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
