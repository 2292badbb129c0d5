"""Two builds of turnpack side by side: the same workload timed in alternating child processes.

On a shared machine the absolute speed drifts from hour to hour (other tenants, CPU frequency), so a
figure measured today cannot be held against one measured yesterday. This script answers "is build B
slower than build A?" from one run: each round runs build A's and build B's child (in alternating
order) on the same conversations, and the report gives per-measurement medians and the B/A ratio.

    python bench/ab.py --a /tmp/benchvenv-old/bin/python --a-bench /tmp/old-tree/bench \
        --b /tmp/benchvenv/bin/python --rounds 5 [--out bench/results/ab.md]

`--a-bench`/`--b-bench`: the `bench/` folder whose `oracle.py` and `workload.py` that build's child
imports (default: this one). Each child measures, with the thread CPU clock (`time.thread_time`) for
one thread and the wall clock for two threads:
- `encode`: one call per conversation over `workload.conversations(n)`;
- `encode_batch` with 1 and 2 threads over the same conversations;
- `encode` per token at 2 and 40 assistant turns (`workload.conversations_with_turns`);
- `Packer.extend` of the encodings at seq_len 4096.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import oracle as O, workload as W, turnpack

def best(fn, repeat, clock):
    fn()
    times = []
    for _ in range(repeat):
        t0 = clock(); fn(); times.append(clock() - t0)
    return min(times)

model, n, repeat = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tok = O.load_model(model).tok
convs = W.conversations(n)
encs = [tok.encode(c["messages"], tools=c["tools"]) for c in convs]
tokens = sum(len(e) for e in encs)
cpu, wall = time.thread_time, time.perf_counter
out = {"tokens": tokens}
out["encode"] = best(lambda: [tok.encode(c["messages"], tools=c["tools"]) for c in convs], repeat, cpu)
out["encode_batch_1"] = best(lambda: tok.encode_batch(convs, num_threads=1), repeat, cpu)
out["encode_batch_1_wall"] = best(lambda: tok.encode_batch(convs, num_threads=1), repeat, wall)
out["encode_batch_2_wall"] = best(lambda: tok.encode_batch(convs, num_threads=2), repeat, wall)
for turns in (2, 40):
    tc = W.conversations_with_turns(turns, 12 if turns > 2 else 40)
    t_tokens = sum(len(tok.encode(c["messages"], tools=c["tools"])) for c in tc)
    secs = best(lambda: [tok.encode(c["messages"], tools=c["tools"]) for c in tc], repeat, cpu)
    out[f"encode_{turns}_turns_us_per_token"] = secs / t_tokens * 1e6

def pack():
    p = turnpack.Packer(4096)
    for _ in range(10):
        p.extend(encs)
    p.flush()

out["pack_10_copies"] = best(pack, repeat, cpu)
print(json.dumps(out))
"""


def child(python: str, bench: str, model: str, n: int, repeat: int) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", RAYON_NUM_THREADS="1")
    out = subprocess.run(
        [python, "-c", CHILD, bench, model, str(n), str(repeat)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(model: str, runs: dict[str, list[dict]], args: argparse.Namespace) -> list[str]:
    a, b = runs["a"], runs["b"]
    tokens = a[0]["tokens"]
    lines = [
        f"### {model}: {args.n} conversations, {tokens} tokens, {args.rounds} rounds (median of each build's"
        " best-of-repeat times)",
        "",
        "| measurement | A | B | B / A time |",
        "|---|---:|---:|---:|",
    ]
    ratios = {}
    for key in a[0]:
        if key == "tokens":
            continue
        ma = statistics.median(r[key] for r in a)
        mb = statistics.median(r[key] for r in b)
        ratios[key] = mb / ma
        unit = "us/token" if key.endswith("per_token") else "s"
        lines.append(f"| {key} | {ma:.4f} {unit} | {mb:.4f} {unit} | {mb / ma:.3f} |")
    for build, rs in (("A", a), ("B", b)):
        speedup = statistics.median(r["encode_batch_1_wall"] / r["encode_batch_2_wall"] for r in rs)
        lines.append(f"| encode_batch 2 threads over 1 (wall), build {build} | | | {speedup:.2f}x |")
    scale = {
        build: statistics.median(
            r["encode_40_turns_us_per_token"] / r["encode_2_turns_us_per_token"] for r in rs
        )
        for build, rs in (("A", a), ("B", b))
    }
    lines.append(f"| per-token cost 40 turns / 2 turns | {scale['A']:.2f}x | {scale['B']:.2f}x | |")
    lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="python of build A (the baseline)")
    ap.add_argument("--b", default=sys.executable, help="python of build B")
    ap.add_argument("--a-bench", default=str(HERE))
    ap.add_argument("--b-bench", default=str(HERE))
    ap.add_argument("--a-name", default="A")
    ap.add_argument("--b-name", default="B")
    ap.add_argument("--models", default="qwen3,llama3")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lines = [
        f"# A/B: {args.a_name} (A) vs {args.b_name} (B)",
        "",
        f"`bench/ab.py --n {args.n} --rounds {args.rounds} --repeat {args.repeat}`; started "
        f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}, load average {os.getloadavg()}.",
        "",
    ]
    for model in args.models.split(","):
        runs: dict[str, list[dict]] = {"a": [], "b": []}
        for r in range(args.rounds):
            order = ("a", "b") if r % 2 == 0 else ("b", "a")
            for build in order:
                python = args.a if build == "a" else args.b
                bench = args.a_bench if build == "a" else args.b_bench
                runs[build].append(child(python, bench, model, args.n, args.repeat))
            print(f"{model} round {r + 1}/{args.rounds} done", file=sys.stderr)
        lines += report(model, runs, args)
    lines.append(f"Finished with load average {os.getloadavg()}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
