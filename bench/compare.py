"""turnpack against the per-turn reference and against tokenizing once, on the same conversations.

    .venv/bin/python bench/compare.py [--n 300] [--out bench/results] [--models qwen3,llama3]
                                      [--repeat 5] [--clock wall|cpu] [--stream-rss N]

(Use a release build: see bench/README.md.)

Everything is single-threaded except `encode_batch(num_threads=2)` and the streaming run. For each
tokenizer (Qwen3 and Llama 3.1 with their own templates) it times, on the workload of
bench/workload.py:

(a) the per-turn reference: transformers renders the conversation and `tokenizers` tokenizes it, then
    once per assistant turn again with that turn blanked, and the token lists are diffed (the seed
    oracle of tests/reference.py);
(b) tokenize once: `tokenizers` encoding the already rendered text of each conversation, one text per
    call (the same BPE as turnpack's, from `ChatTokenizer.to_tokenizer_json()`); and the same texts
    through `ChatTokenizer.tokenize` with turnpack's own BPE encoder and with `tokenizers` as its
    backend (same call path and allocator: the fair comparison of the two encoders);
(c) turnpack: `encode` per conversation, `encode_batch` with 1 and 2 threads (plus `render` alone,
    `encode(start="content")`, which skips the generation-prompt renderings, and
    `encode(method="per_message")` where available, to see where time goes, and `encode` with
    `tokenizers` as the BPE backend);
(d) packing the encodings into rows of 4096 tokens: `turnpack.pack` and a streaming `Packer`.

Then the scaling table (per-token cost with exactly 2, 10, 40 and 80 assistant turns, as a ratio to
2 turns), a breakdown of `encode` on 40-turn conversations, and pass/fail against the targets.
Results go to <out>/compare-<tokenizer>.md and .json, with the machine description.

Timings are the best of `--repeat` runs, by wall clock or (`--clock cpu`) process CPU time, with the
garbage collector off and caches warmed by one untimed run; both clocks are recorded. Thread scaling is
always wall clock. The token count of a conversation is that of its full rendering, the same for every
method.

`--stream-rss N` (opt-in, slow) additionally encodes N tiny conversations in a fresh process with
`encode_batch` in chunks, streams them through a `Packer`, and records the resident memory over time
(<out>/stream-rss.md and .json); with `--n 0` only that runs.
"""

from __future__ import annotations

import os

# Single-threaded baselines: tokenizers must not use its own thread pool. Set before importing it.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import datetime
import gc
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import oracle as O
import turnpack
import workload as W

SEQ_LEN = 4096
# Which clock single-threaded results use ("wall" or "cpu", set by --clock). Thread scaling is wall time.
CLOCK = "wall"
SCALING_TURNS = (2, 10, 40, 80)
SCALING_COLUMNS = ("encode", "encode_content", "encode_per_message", "render", "tokenize_once", "reference")

# (key, description, threshold, "min" when the value must be at least the threshold, else "max")
TARGETS = [
    ("speedup_vs_per_turn", "encode >= 10x the per-turn reference (a), per token", 10.0, "min"),
    ("slowdown_vs_tokenize_once", "encode time <= 1.3x tokenize once (b)", 1.3, "max"),
    ("scaling_40_vs_2", "per-token encode cost at 40 turns <= 1.5x that at 2 turns", 1.5, "max"),
    ("batch_2_vs_1_threads", "encode_batch 2 threads >= 1.7x its 1-thread throughput", 1.7, "min"),
    ("pack_tokens_per_s", "packing >= 20M tokens/s", 20e6, "min"),
    (
        "bpe_speedup_vs_tokenizers",
        "turnpack's BPE encoder >= 2x tokenizers, single-threaded, same texts and call path",
        2.0,
        "min",
    ),
]


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Several runs of one measurement: the fastest wall-clock time and the smallest CPU time."""

    wall: float
    cpu: float
    runs: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        """Seconds by the clock chosen with `--clock` (wall by default)."""
        return self.cpu if CLOCK == "cpu" else self.wall


def measure(fn: Callable[[], object], repeat: int, warmup: bool = True) -> Timing:
    """Times `fn()` `repeat` times (after one untimed run when `warmup`), garbage collector off."""
    if warmup:
        fn()
    runs: list[tuple[float, float]] = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            c0, t0 = time.process_time(), time.perf_counter()
            result = fn()
            t1, c1 = time.perf_counter(), time.process_time()
        finally:
            gc.enable()
        del result  # freed outside the timed region
        runs.append((t1 - t0, c1 - c0))
    return Timing(min(r[0] for r in runs), min(r[1] for r in runs), [r[0] for r in runs])


def loadavg() -> list[float]:
    return list(os.getloadavg())


# --------------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    try:
        return version(module)
    except PackageNotFoundError:
        return None


def _run(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine(build_note: str | None = None) -> dict:
    """CPU, cores, memory, date, versions, and which turnpack build is measured."""
    core = Path(turnpack._core.__file__)
    repo = O.REPO
    editable = repo in core.resolve().parents
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_at_start": loadavg(),
        "python": platform.python_version(),
        "turnpack": turnpack.__version__,
        "turnpack_core": str(core),
        "turnpack_build": "editable (maturin develop; debug unless built with --release)"
        if editable
        else "installed wheel",
        "build_note": build_note,
        "git_commit": _run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(_run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"])),
        "rustc": _run(["rustc", "--version"]),
        "tokenizers": _version("tokenizers"),
        "transformers": _version("transformers"),
        "jinja2": _version("jinja2"),
        "numpy": _version("numpy"),
        "env": {k: os.environ.get(k) for k in ("RAYON_NUM_THREADS", "TOKENIZERS_PARALLELISM")},
    }


# --------------------------------------------------------------------------------------------------
# The comparison for one tokenizer
# --------------------------------------------------------------------------------------------------


def has_per_message(tok: turnpack.ChatTokenizer) -> bool:
    """Whether this turnpack has `encode(method="per_message")` (the one-rendering-per-turn method)."""
    try:
        tok.encode(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], method="per_message"
        )
    except TypeError:
        return False
    return True


def check_same_tokens(model: O.Model, convs: list[dict], texts: list[str], encs) -> dict:
    """The baselines see what turnpack produces: same rendering as transformers, same token ids."""
    render_mismatch = [i for i, (c, t) in enumerate(zip(convs, texts)) if O.render_reference(model, c) != t]
    hf_ids = [model.hf.encode(t, add_special_tokens=False).ids for t in texts]
    id_mismatch = [i for i, (ids, e) in enumerate(zip(hf_ids, encs)) if ids != e.input_ids.tolist()]
    bpe_mismatch = [
        i
        for i, (t, ids) in enumerate(zip(texts, hf_ids))
        if hasattr(model.tok, "bpe_backend") and model.tok.tokenize(t) != ids
    ]
    return {"render_mismatch": render_mismatch, "token_mismatch": id_mismatch, "bpe_mismatch": bpe_mismatch}


def throughput_rows(model: O.Model, convs: list[dict], repeat: int, ref_repeat: int) -> tuple[dict, dict]:
    """Times (a) to (d) on `convs`; returns (rows by key, extra facts)."""
    tok, hf = model.tok, model.hf
    texts = [tok.render(c["messages"], c["tools"]) for c in convs]
    encs = tok.encode_batch(convs, num_threads=1)
    tokens = sum(len(e) for e in encs)
    facts = {
        "conversations": len(convs),
        "tokens": tokens,
        "tokens_per_conversation": tokens / len(convs),
        "assistant_turns_per_conversation": statistics.mean(W.assistant_turns(c) for c in convs),
        "trained_fraction": sum(e.num_trained for e in encs) / tokens,
        "checks": check_same_tokens(model, convs, texts, encs),
    }

    def encode_loop():
        return [tok.encode(c["messages"], c["tools"]) for c in convs]

    def encode_content():
        return [tok.encode(c["messages"], c["tools"], start="content") for c in convs]

    rows: dict[str, dict] = {}

    def row(key: str, label: str, timing: Timing, n_tokens: int = tokens) -> None:
        rows[key] = {
            "label": label,
            "wall_s": timing.wall,
            "cpu_s": timing.cpu,
            "runs_s": timing.runs,
            "tokens": n_tokens,
            "seconds": timing.best,
            "tokens_per_s": n_tokens / timing.best,
            "us_per_token": timing.best / n_tokens * 1e6,
        }

    print(f"  (a) per-turn reference ({ref_repeat} run(s)) ...", flush=True)
    row(
        "a_per_turn",
        "(a) per-turn reference: transformers render + tokenizers, once per assistant turn",
        measure(lambda: [O.per_turn_reference(model, c) for c in convs], ref_repeat, warmup=False),
    )
    print("  (b) tokenize once, (c) turnpack ...", flush=True)
    row(
        "b_tokenize_once",
        "(b) tokenize once: tokenizers.encode of the rendered text",
        measure(lambda: [hf.encode(t, add_special_tokens=False) for t in texts], repeat),
    )
    if hasattr(tok, "with_bpe_backend"):
        facts["bpe_backend"] = tok.bpe_backend
        via_tokenizers = tok.with_bpe_backend("tokenizers")
        row(
            "b_turnpack_bpe",
            f"(b) tokenize once with turnpack's tokenize (backend: {tok.bpe_backend})",
            measure(lambda: [tok.tokenize(t) for t in texts], repeat),
        )
        row(
            "b_tokenizers_in_turnpack",
            "(b) tokenize once with turnpack's tokenize, backend tokenizers",
            measure(lambda: [via_tokenizers.tokenize(t) for t in texts], repeat),
        )
        row(
            "c_encode_tokenizers_backend",
            "(c) turnpack encode, BPE backend tokenizers",
            measure(lambda: [via_tokenizers.encode(c["messages"], c["tools"]) for c in convs], repeat),
        )
    row("c_encode", "(c) turnpack encode (one call per conversation)", measure(encode_loop, repeat))
    row(
        "c_batch_1",
        "(c) turnpack encode_batch, 1 thread",
        measure(lambda: tok.encode_batch(convs, num_threads=1), repeat),
    )
    row(
        "c_batch_2",
        "(c) turnpack encode_batch, 2 threads",
        measure(lambda: tok.encode_batch(convs, num_threads=2), repeat),
    )
    row(
        "c_batch_of_one",
        "turnpack encode_batch([conversation], num_threads=1) per conversation (on the calling thread)",
        measure(lambda: [tok.encode_batch([c], num_threads=1) for c in convs], repeat),
    )
    row(
        "render",
        "turnpack render only (one rendering per conversation)",
        measure(lambda: [tok.render(c["messages"], c["tools"]) for c in convs], repeat),
    )
    row(
        "render_reference",
        "transformers render only (one rendering per conversation)",
        measure(lambda: [O.render_reference(model, c) for c in convs], max(1, repeat // 2)),
    )
    row(
        "c_encode_content",
        'turnpack encode(start="content") (no prompt renderings)',
        measure(encode_content, repeat),
    )
    if has_per_message(tok):
        row(
            "c_encode_per_message",
            'turnpack encode(method="per_message") (one blanked and one prompt rendering per turn)',
            measure(
                lambda: [tok.encode(c["messages"], c["tools"], method="per_message") for c in convs], repeat
            ),
        )
    facts["renders_per_conversation"] = statistics.mean(getattr(e, "renders", float("nan")) for e in encs)

    # (d) Packing: enough copies of the encodings for a measurable run.
    copies = max(1, 4_000_000 // tokens)
    samples = encs * copies

    def pack_all():
        return turnpack.pack(samples, SEQ_LEN)

    def pack_stream():
        packer = turnpack.Packer(SEQ_LEN)
        for k in range(0, len(samples), 1024):
            packer.extend(samples[k : k + 1024])
            while packer.pop_ready() is not None:
                pass
        return packer.flush()

    print(f"  (d) packing {copies} copies ...", flush=True)
    row("d_pack", f"(d) turnpack.pack, seq_len {SEQ_LEN}", measure(pack_all, repeat), tokens * copies)
    row(
        "d_packer",
        f"(d) turnpack.Packer streaming, seq_len {SEQ_LEN}",
        measure(pack_stream, repeat),
        tokens * copies,
    )
    facts["pack_stats"] = dict(turnpack.pack(encs, SEQ_LEN).stats)
    facts["pack_copies"] = copies
    return rows, facts


def scaling_row(model: O.Model, turns: int, n: int, ref_convs: int, repeat: int) -> dict:
    """Per-token costs on `n` conversations with exactly `turns` assistant turns."""
    tok, hf = model.tok, model.hf
    convs = W.conversations_with_turns(turns, n)
    texts = [tok.render(c["messages"], c["tools"]) for c in convs]
    lens = [len(hf.encode(t, add_special_tokens=False)) for t in texts]
    tokens = sum(lens)
    enc = measure(lambda: [tok.encode(c["messages"], c["tools"]) for c in convs], repeat)
    content = measure(lambda: [tok.encode(c["messages"], c["tools"], start="content") for c in convs], repeat)
    render = measure(lambda: [tok.render(c["messages"], c["tools"]) for c in convs], repeat)
    once = measure(lambda: [hf.encode(t, add_special_tokens=False) for t in texts], repeat)
    O.per_turn_reference(model, convs[-1])  # warm: the first call compiles transformers' template
    ref = measure(lambda: [O.per_turn_reference(model, c) for c in convs[:ref_convs]], 1, warmup=False)
    per_message = None
    if has_per_message(tok):
        per_message = measure(
            lambda: [tok.encode(c["messages"], c["tools"], method="per_message") for c in convs], repeat
        )
    renders = [getattr(tok.encode(c["messages"], c["tools"]), "renders", float("nan")) for c in convs]
    return {
        "turns": turns,
        "conversations": n,
        "tokens_per_conversation": tokens / n,
        "encode_us_per_token": enc.best / tokens * 1e6,
        "encode_content_us_per_token": content.best / tokens * 1e6,
        "encode_per_message_us_per_token": per_message.best / tokens * 1e6 if per_message else None,
        "renders_per_conversation": statistics.mean(renders),
        "render_us_per_token": render.best / tokens * 1e6,
        "tokenize_once_us_per_token": once.best / tokens * 1e6,
        "reference_conversations": ref_convs,
        "reference_us_per_token": ref.best / sum(lens[:ref_convs]) * 1e6,
    }


def scaling(model: O.Model, n: int, ref_convs: int, repeat: int) -> list[dict]:
    """Per-token costs with exactly 2, 10, 40, 80 assistant turns, and their ratios to 2 turns."""
    out = []
    for turns in SCALING_TURNS:
        # At least ~80 assistant turns per row: a row of a dozen 2-turn conversations takes a few
        # milliseconds and its per-token cost is then at the mercy of the machine.
        out.append(scaling_row(model, turns, max(n, 80 // turns), ref_convs, repeat))
        print(f"  {turns} turns: {out[-1]['encode_us_per_token']:.3f} us/token", flush=True)
    base = out[0]
    for r in out:
        for k in SCALING_COLUMNS:
            v, b = r[f"{k}_us_per_token"], base[f"{k}_us_per_token"]
            r[f"{k}_ratio"] = v / b if v is not None and b is not None else None
    return out


def breakdown(model: O.Model, turns: int, n: int, repeat: int) -> dict:
    """Where `encode` spends its time on `turns`-turn conversations, by difference of Python calls.

    `encode` converts the messages from Python, renders the conversation once, tokenizes it, finds each
    assistant turn's blanked rendering (from a constant number of renderings when the template is local,
    else one per turn) and diffs it, and, with `start="prompt"` (the default), finds where the generation
    prompt ends (three renderings from 3 turns on, else one per turn). So:

    - prompt renderings = encode - encode(start="content");
    - conversion + main rendering ~ render (one call);
    - tokenization ~ tokenize (one call on the rendered text);
    - blanked renderings + diffs + mask + output = encode(start="content") - render - tokenize.

    (Timing each blanked rendering as its own Python call would convert the messages every time, which
    costs more than the rendering; the Rust benchmark `parts_40_turns` times the pieces exactly.)
    """
    tok = model.tok
    convs = W.conversations_with_turns(turns, n)
    texts = [tok.render(c["messages"], c["tools"]) for c in convs]
    tokens = sum(len(tok.tokenize(t)) for t in texts)

    def per_conv(fn) -> float:
        return measure(fn, repeat).best / n * 1e3

    ms = {
        "encode": per_conv(lambda: [tok.encode(c["messages"], c["tools"]) for c in convs]),
        "encode_content": per_conv(
            lambda: [tok.encode(c["messages"], c["tools"], start="content") for c in convs]
        ),
        "render": per_conv(lambda: [tok.render(c["messages"], c["tools"]) for c in convs]),
        "tokenize": per_conv(lambda: [tok.tokenize(t) for t in texts]),
    }
    parts = {
        "conversion + main rendering": ms["render"],
        "tokenization": ms["tokenize"],
        "blanked renderings + diffs + mask + output": ms["encode_content"] - ms["render"] - ms["tokenize"],
        "generation-prompt renderings": ms["encode"] - ms["encode_content"],
    }
    return {
        "turns": turns,
        "conversations": n,
        "tokens_per_conversation": tokens / n,
        "ms_per_conversation": ms,
        "parts_ms": parts,
        "parts_share": {k: v / ms["encode"] for k, v in parts.items()},
    }


def _ratio(rows: dict, slow: str, fast: str) -> float | None:
    """Time of row `slow` over time of row `fast`, when both were measured."""
    if slow not in rows or fast not in rows:
        return None
    return rows[slow]["seconds"] / rows[fast]["seconds"]


def targets(rows: dict, scale: list[dict]) -> list[dict]:
    by_turns = {r["turns"]: r for r in scale}
    values = {
        "speedup_vs_per_turn": rows["a_per_turn"]["seconds"] / rows["c_encode"]["seconds"],
        "slowdown_vs_tokenize_once": rows["c_encode"]["seconds"] / rows["b_tokenize_once"]["seconds"],
        "scaling_40_vs_2": by_turns[40]["encode_ratio"],
        "batch_2_vs_1_threads": rows["c_batch_1"]["wall_s"] / rows["c_batch_2"]["wall_s"],
        "pack_tokens_per_s": rows["d_pack"]["tokens_per_s"],
        "bpe_speedup_vs_tokenizers": _ratio(rows, "b_tokenizers_in_turnpack", "b_turnpack_bpe"),
    }
    out = []
    for key, desc, threshold, kind in TARGETS:
        v = values[key]
        if v is None:
            continue  # a turnpack build without this feature
        ok = v >= threshold if kind == "min" else v <= threshold
        out.append({"key": key, "target": desc, "value": v, "threshold": threshold, "pass": ok})
    return out


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k"


def _machine_md(m: dict) -> list[str]:
    return [
        (
            f"- CPU: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), "
            f"{m['memory_gib']} GiB RAM, Linux {m['kernel']}"
        ),
        (
            f"- date: {m['date']}; load average at start {m['loadavg_at_start']}, "
            f"at end {m.get('loadavg_at_end')} (other processes share this machine)"
        ),
        (
            f"- turnpack {m['turnpack']} ({m['turnpack_build']}: `{m['turnpack_core']}`"
            + (f"; {m['build_note']}" if m.get("build_note") else "")
            + f"); bench scripts at git {m['git_commit']}{' (dirty tree)' if m['git_dirty'] else ''}; "
            f"{m['rustc']}"
        ),
        (
            f"- Python {m['python']}, tokenizers {m['tokenizers']}, transformers {m['transformers']}, "
            f"jinja2 {m['jinja2']}, numpy {m['numpy']}; env {m['env']}"
        ),
    ]


def _bpe_lines(ratios: dict) -> list[str]:
    if ratios.get("bpe_speedup_vs_tokenizers") is None:
        return []
    return [
        (
            f"- turnpack's BPE encoder over `tokenizers`, same texts, both through `ChatTokenizer.tokenize`: "
            f"**{ratios['bpe_speedup_vs_tokenizers']:.2f}x** faster "
            f"(over (b), `tokenizers`' own Python `encode`: {ratios['bpe_speedup_vs_tokenize_once']:.2f}x); "
            f"`encode` with it over `encode` with the `tokenizers` backend: {ratios['encode_speedup_from_bpe']:.2f}x"
        )
    ]


def markdown(res: dict) -> str:
    f, rows, m = res["facts"], res["rows"], res["machine"]
    lines = [
        f"# turnpack vs per-turn reference vs tokenize once: {res['model']}",
        "",
        f"Generated by `bench/compare.py --n {f['conversations']}` (see bench/README.md).",
        "",
        "## Machine",
        "",
        *_machine_md(m),
        "",
        "## Workload",
        "",
        (
            f"{f['conversations']} conversations of bench/workload.py, {f['tokens']} tokens "
            f"({f['tokens_per_conversation']:.0f} per conversation, "
            f"{f['assistant_turns_per_conversation']:.2f} assistant turns on average, "
            f"{f['trained_fraction']:.0%} of tokens trained). Rendering equal to transformers' for all but "
            f"{len(f['checks']['render_mismatch'])}, token ids equal to tokenizers' for all but "
            f"{len(f['checks']['token_mismatch'])}."
        ),
        "",
        f"## Throughput (single thread unless stated; best of {res['repeat']} runs)",
        "",
        (
            f"tokens/s and µs/token use the {res['clock']} clock (`--clock`); wall s is the fastest run's wall "
            "time, CPU s the smallest process CPU time (all threads)."
        ),
        "",
        "| method | wall s | CPU s | tokens/s | µs/token |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows.values():
        lines.append(
            f"| {r['label']} | {r['wall_s']:.4f} | {r['cpu_s']:.4f} | {_fmt_rate(r['tokens_per_s'])} "
            f"| {r['us_per_token']:.4f} |"
        )
    ps = f["pack_stats"]
    lines += [
        "",
        (
            f"Packing: {f['pack_copies']} copies of the encodings; one copy packs into {ps['rows']} rows with "
            f"efficiency {ps['efficiency']:.4f} (non-padding / all positions); {ps['dropped_too_long']} of "
            f"{ps['samples_in']} conversations dropped as longer than {SEQ_LEN} tokens."
        ),
        "",
        (
            f"`encode` renders the template {f.get('renders_per_conversation', float('nan')):.1f} times per conversation "
            "on average (`Encoding.renders`; nan when this turnpack does not report it)."
        ),
        "",
        "## Ratios",
        "",
        (
            f"- c/a, speedup of `encode` over the per-turn reference, per token: "
            f"**{res['ratios']['speedup_vs_per_turn']:.1f}x** "
            f"(encode_batch 1 thread: {res['ratios']['batch1_speedup_vs_per_turn']:.1f}x)"
        ),
        (
            f"- c/b, `encode` time over tokenize-once time: **{res['ratios']['slowdown_vs_tokenize_once']:.2f}x** "
            f"(encode_batch 1 thread: {res['ratios']['batch1_slowdown_vs_tokenize_once']:.2f}x; "
            f'encode(start="content"): {res["ratios"]["content_slowdown_vs_tokenize_once"]:.2f}x)'
        ),
        *_bpe_lines(res["ratios"]),
        (
            f"- encode_batch, 2 threads over 1 thread (wall clock): **{res['ratios']['batch_2_vs_1_threads']:.2f}x**"
            f" (CPU time of 2 threads / 1 thread: {res['ratios']['batch_cpu_2_vs_1_threads']:.2f})"
        ),
        "",
        "## Scaling: per-token cost by number of assistant turns (ratio to 2 turns)",
        "",
        (
            "µs/token (ratio to 2 turns). renders: template renderings per conversation by `encode` "
            '(`Encoding.renders`); per_message: `encode(method="per_message")`, one blanked and one prompt '
            "rendering per turn."
        ),
        "",
        (
            "| turns | tokens/conv | renders | encode | encode (start=content) | encode (per_message) | render only "
            "| tokenize once | per-turn reference |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(s: dict, k: str) -> str:
        v = s[k + "_us_per_token"]
        return "n/a" if v is None else f"{v:.3f} ({s[k + '_ratio']:.2f}x)"

    for s in res["scaling"]:
        lines.append(
            f"| {s['turns']} | {s['tokens_per_conversation']:.0f} | {s['renders_per_conversation']:.1f} | "
            + " | ".join(cell(s, k) for k in SCALING_COLUMNS)
            + " |"
        )
    s0 = res["scaling"][0]
    lines += [
        "",
        "Conversations per row: "
        + ", ".join(f"{s['conversations']} at {s['turns']} turns" for s in res["scaling"])
        + f" ({s0['reference_conversations']} for the reference). Measured first, in a fresh process.",
        "",
        f"## Where encode's time goes ({res['breakdown']['turns']} turns, from Python)",
        "",
        (
            "By difference of calls (see `breakdown` in bench/compare.py; the Rust benchmark `parts_40_turns` "
            "splits the renderings exactly)."
        ),
        "",
        "| call | ms per conversation |",
        "|---|---:|",
        *[f"| {k} | {v:.3f} |" for k, v in res["breakdown"]["ms_per_conversation"].items()],
        "",
        "| piece of encode | ms per conversation | share |",
        "|---|---:|---:|",
        *[
            f"| {k} | {v:.3f} | {res['breakdown']['parts_share'][k]:.1%} |"
            for k, v in res["breakdown"]["parts_ms"].items()
        ],
        "",
        (
            f"{res['breakdown']['conversations']} conversations of "
            f"{res['breakdown']['tokens_per_conversation']:.0f} tokens."
        ),
        "",
        "## Targets",
        "",
        "| target | measured | result |",
        "|---|---:|---|",
    ]
    for t in res["targets"]:
        v = _fmt_rate(t["value"]) + " tokens/s" if t["key"] == "pack_tokens_per_s" else f"{t['value']:.2f}x"
        lines.append(f"| {t['target']} | {v} | {'PASS' if t['pass'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def compare(name: str, args) -> dict:
    print(f"== {name}", flush=True)
    model = O.load_model(name)
    convs = W.conversations(args.n)
    m = machine(args.build_note)
    # The scaling table first, in a process that has done nothing heavy yet: measured after the
    # throughput rows (big reference renders, 2-thread batches, packing gigabytes), its short
    # 2-turn row came out 1.7-2.4x slower than alone, which hid the growth with turns.
    print("  scaling ...", flush=True)
    scale = scaling(model, args.scaling_convs, args.scaling_ref_convs, args.repeat)
    rows, facts = throughput_rows(model, convs, args.repeat, args.ref_repeat)
    print("  breakdown ...", flush=True)
    brk = breakdown(model, 40, args.scaling_convs, args.repeat)
    m["loadavg_at_end"] = loadavg()
    ratios = {
        "speedup_vs_per_turn": rows["a_per_turn"]["seconds"] / rows["c_encode"]["seconds"],
        "batch1_speedup_vs_per_turn": rows["a_per_turn"]["seconds"] / rows["c_batch_1"]["seconds"],
        "slowdown_vs_tokenize_once": rows["c_encode"]["seconds"] / rows["b_tokenize_once"]["seconds"],
        "batch1_slowdown_vs_tokenize_once": rows["c_batch_1"]["seconds"] / rows["b_tokenize_once"]["seconds"],
        "content_slowdown_vs_tokenize_once": rows["c_encode_content"]["seconds"]
        / rows["b_tokenize_once"]["seconds"],
        "batch_2_vs_1_threads": rows["c_batch_1"]["wall_s"] / rows["c_batch_2"]["wall_s"],
        "batch_cpu_2_vs_1_threads": rows["c_batch_2"]["cpu_s"] / rows["c_batch_1"]["cpu_s"],
        "bpe_speedup_vs_tokenizers": _ratio(rows, "b_tokenizers_in_turnpack", "b_turnpack_bpe"),
        "bpe_speedup_vs_tokenize_once": _ratio(rows, "b_tokenize_once", "b_turnpack_bpe"),
        "encode_speedup_from_bpe": _ratio(rows, "c_encode_tokenizers_backend", "c_encode"),
    }
    return {
        "clock": CLOCK,
        "model": name,
        "template": O.TEMPLATES[name],
        "repeat": args.repeat,
        "machine": m,
        "facts": facts,
        "rows": rows,
        "ratios": ratios,
        "scaling": scale,
        "breakdown": brk,
        "targets": targets(rows, scale),
    }


# --------------------------------------------------------------------------------------------------
# Streaming RSS (opt-in; runs in a fresh process so earlier benchmarks do not count)
# --------------------------------------------------------------------------------------------------


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stream_child(n: int, model_name: str, chunk: int) -> None:
    """Encodes `n` tiny conversations chunk by chunk into a Packer; prints a JSON summary."""
    model = O.load_model(model_name)
    rss_start = _rss_mib()
    packer = turnpack.Packer(SEQ_LEN)
    samples, rows, tokens = [], 0, 0
    convs = W.tiny_conversations(n)
    t0 = time.perf_counter()
    done = 0
    while done < n:
        batch = [next(convs) for _ in range(min(chunk, n - done))]
        encs = model.tok.encode_batch(batch)
        tokens += sum(len(e) for e in encs)
        packer.extend(encs)
        while (b := packer.pop_ready()) is not None:
            rows += len(b)
        done += len(batch)
        if done % (chunk * 25) == 0 or done == n:
            samples.append(
                {"conversations": done, "seconds": time.perf_counter() - t0, "rss_mib": _rss_mib()}
            )
    rows += len(packer.flush())
    elapsed = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "conversations": n,
                "chunk": chunk,
                "tokens": tokens,
                "rows": rows,
                "seconds": elapsed,
                "conversations_per_s": n / elapsed,
                "rss_after_load_mib": rss_start,
                "rss_end_mib": _rss_mib(),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "stats": dict(packer.stats),
                "samples": samples,
            }
        )
    )


def stream_rss(n: int, model_name: str, chunk: int, out: Path, build_note: str | None) -> dict:
    print(f"== streaming RSS: {n} tiny conversations ({model_name}) in a fresh process ...", flush=True)
    m = machine(build_note)
    proc = subprocess.run(
        [sys.executable, __file__, "--_stream-child", str(n), "--models", model_name, "--chunk", str(chunk)],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    m["loadavg_at_end"] = loadavg()
    res["machine"] = m
    (out / "stream-rss.json").write_text(json.dumps(res, indent=2) + "\n")
    s = res["samples"]
    lines = [
        f"# Streaming encode + Packer memory: {n} tiny conversations ({model_name})",
        "",
        *_machine_md(res["machine"]),
        "",
        (
            f"`encode_batch` in chunks of {chunk} (default threads), every chunk pushed into a `Packer({SEQ_LEN})` "
            f"and finished rows popped and dropped. {res['tokens']} tokens, {res['rows']} rows, "
            f"{res['seconds']:.1f} s ({res['conversations_per_s']:.0f} conversations/s)."
        ),
        "",
        f"- RSS after loading the tokenizer: {res['rss_after_load_mib']:.1f} MiB",
        f"- RSS at the end: {res['rss_end_mib']:.1f} MiB; peak RSS: {res['peak_rss_mib']:.1f} MiB",
        "",
        "| conversations | seconds | RSS MiB |",
        "|---:|---:|---:|",
        *[
            f"| {x['conversations']} | {x['seconds']:.1f} | {x['rss_mib']:.1f} |"
            for x in s[:: max(1, len(s) // 20)]
        ],
    ]
    if s and s[-1] not in s[:: max(1, len(s) // 20)]:
        lines.append(f"| {s[-1]['conversations']} | {s[-1]['seconds']:.1f} | {s[-1]['rss_mib']:.1f} |")
    (out / "stream-rss.md").write_text("\n".join(lines) + "\n")
    print(f"  peak RSS {res['peak_rss_mib']:.1f} MiB, {res['seconds']:.1f} s", flush=True)
    return res


# --------------------------------------------------------------------------------------------------


def print_summary(res: dict) -> None:
    print(f"-- {res['model']}: tokens/s")
    for r in res["rows"].values():
        print(f"  {_fmt_rate(r['tokens_per_s']):>9}  {r['label']}")
    rt = res["ratios"]
    print(
        f"  c/a speedup vs per-turn {rt['speedup_vs_per_turn']:.1f}x; "
        f"c/b slowdown vs tokenize-once {rt['slowdown_vs_tokenize_once']:.2f}x"
    )
    print(
        "  scaling (encode per-token cost, ratio to 2 turns): "
        + ", ".join(f"{s['turns']}: {s['encode_ratio']:.2f}x" for s in res["scaling"])
    )
    for t in res["targets"]:
        print(f"  [{'PASS' if t['pass'] else 'FAIL'}] {t['target']}: {t['value']:.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="workload conversations (default 300; 0: skip)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--models", default="qwen3,llama3", help="comma-separated: qwen3, llama3")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (best is kept)")
    ap.add_argument("--ref-repeat", type=int, default=2, help="timed runs of the (slow) per-turn reference")
    ap.add_argument(
        "--scaling-convs",
        type=int,
        default=12,
        help="conversations per row of the scaling table (at least 80 assistant turns per row)",
    )
    ap.add_argument("--scaling-ref-convs", type=int, default=3, help="of which timed with the reference")
    ap.add_argument("--stream-rss", type=int, default=0, metavar="N", help="also run the streaming RSS test")
    ap.add_argument("--chunk", type=int, default=4096, help="encode_batch chunk of the streaming test")
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="clock for single-threaded results: wall (default) or process CPU time (on a busy machine)",
    )
    ap.add_argument("--build-note", help="how the measured turnpack was built (recorded with the results)")
    ap.add_argument("--_stream-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    models = [s.strip() for s in args.models.split(",") if s.strip()]
    global CLOCK
    CLOCK = args.clock

    if args._stream_child:
        stream_child(args._stream_child, models[0], args.chunk)
        return

    args.out.mkdir(parents=True, exist_ok=True)
    if args.n > 0 and len(models) > 1:
        # One process per model, so that each model's scaling table is measured in a fresh process.
        for name in models:
            cmd = [sys.executable, *sys.argv, "--models", name, "--stream-rss", "0"]
            subprocess.run(cmd, check=True)
        models, args.n = models[:1], 0
    for name in models if args.n > 0 else []:  # --n 0: only the streaming test
        res = compare(name, args)
        (args.out / f"compare-{name}.json").write_text(json.dumps(res, indent=2, default=asdict) + "\n")
        (args.out / f"compare-{name}.md").write_text(markdown(res))
        print_summary(res)
    if args.stream_rss:
        stream_rss(args.stream_rss, models[0], args.chunk, args.out, args.build_note)
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
