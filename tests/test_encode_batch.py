"""`encode_batch` is `encode` run in parallel: same results on every sample, errors in place, and no
hang when a process forks after the parent has used its worker threads (DataLoader workers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import reference as R
import turnpack
from test_mask_conformance import model_tokenizers

TESTS = Path(__file__).parent


def encodable_cases(tok) -> list:
    out = []
    for case in R.all_cases():
        try:
            tok.encode(case.messages, tools=case.tools)
        except turnpack.TurnpackError:
            continue
        out.append(case)
    return out


def assert_same(a: turnpack.Encoding, b: turnpack.Encoding, where: str) -> None:
    assert a.text == b.text, where
    assert np.array_equal(a.input_ids, b.input_ids), where
    assert np.array_equal(a.mask, b.mask), where
    assert np.array_equal(a.offsets, b.offsets), where
    assert a.spans == b.spans and a.skipped == b.skipped and a.span_messages == b.span_messages, where


@pytest.mark.parametrize("num_threads", [1, 2, 4])
def test_batch_equals_encode_on_every_sample(num_threads):
    tok, _ = model_tokenizers("qwen3")
    cases = encodable_cases(tok)
    assert len(cases) >= 10
    # many copies so that work is really spread over the threads; per-row tools via dict samples
    rows = [{"messages": c.messages, "tools": c.tools} for c in cases] * 8
    batch = tok.encode_batch(rows, num_threads=num_threads)
    assert len(batch) == len(rows)
    for i, (row, got) in enumerate(zip(rows, batch)):
        assert_same(tok.encode(row["messages"], tools=row["tools"]), got, f"sample {i}")


def test_batch_options_are_passed_through():
    tok, _ = model_tokenizers("qwen3")
    cases = encodable_cases(tok)[:6]
    convs = [c.messages for c in cases]
    for kwargs in (
        {"supervise": "last_assistant"},
        {"eot": None},
        {"start": "content"},
        {"supervise": "all"},
        {"enable_thinking": False},
    ):
        batch = tok.encode_batch(convs, num_threads=2, **kwargs)
        for i, (conv, got) in enumerate(zip(convs, batch)):
            assert_same(tok.encode(conv, **kwargs), got, f"{kwargs} sample {i}")


def test_on_error_skip_returns_errors_in_place():
    tok, _ = model_tokenizers("qwen3")
    good = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    bad_role = [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}]
    not_a_list = "just text"
    out = tok.encode_batch([good, bad_role, good, not_a_list], on_error="skip")
    assert isinstance(out[0], turnpack.Encoding) and isinstance(out[2], turnpack.Encoding)
    assert isinstance(out[1], turnpack.ConversationError) and "sample 1" in str(out[1])
    assert isinstance(out[3], turnpack.ConversationError) and "sample 3" in str(out[3])
    with pytest.raises(turnpack.ConversationError, match="sample 1"):
        tok.encode_batch([good, bad_role, good])
    with pytest.raises(ValueError, match="on_error"):
        tok.encode_batch([good], on_error="ignore")


@pytest.mark.parametrize("num_threads", [1, 3])
def test_samples_read_while_others_encode_keep_their_places(num_threads):
    """The calling thread reads samples (from any iterable) while workers encode earlier ones: results
    and errors must still come back in input order, and an iterable that raises must raise."""
    tok, _ = model_tokenizers("qwen3")
    good = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    bad_role = [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}]
    rows = [good if i % 3 else bad_role for i in range(30)]
    out = tok.encode_batch(iter(rows), num_threads=num_threads, on_error="skip")
    assert len(out) == len(rows)
    for i, got in enumerate(out):
        if i % 3:
            assert_same(tok.encode(good), got, f"sample {i}")
        else:
            assert isinstance(got, turnpack.ConversationError) and f"sample {i}:" in str(got)

    def broken_source():
        yield good
        yield good
        raise KeyError("the source broke")

    with pytest.raises(KeyError, match="the source broke"):
        tok.encode_batch(broken_source(), num_threads=num_threads)
    assert tok.encode_batch([], num_threads=num_threads) == []


def run_without_hanging(tmp_path: Path, script: str, hang: str) -> str:
    """Runs `script` (its `{tests}` filled in) in a fresh interpreter, so that a hang fails this test
    instead of stopping the suite; returns its output."""
    path = tmp_path / "check.py"
    path.write_text(script.format(tests=str(TESTS)))
    try:
        done = subprocess.run(
            [sys.executable, str(path)], check=False, capture_output=True, text=True, timeout=240
        )
    except subprocess.TimeoutExpired:
        pytest.fail(hang)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


CONCURRENT_SCRIPT = textwrap.dedent(
    """
    import sys
    import threading
    import time
    sys.path.insert(0, {tests!r})
    from test_mask_conformance import model_tokenizers

    tok, _ = model_tokenizers("qwen3")
    conv = [{{"role": "user", "content": "count"}}, {{"role": "assistant", "content": "1 2 3"}}]
    want = int(tok.encode(conv).mask.sum())

    def slow_source(n):
        for _ in range(n):
            time.sleep(0.001)  # gives the GIL away mid-read
            yield conv

    def nesting_source(n):
        for _ in range(n):
            # a source that itself encodes, while the outer call's workers wait for samples
            assert len(tok.encode_batch([conv] * 4, num_threads=2)) == 4
            yield conv

    results = []

    def work(source):
        out = tok.encode_batch(source, num_threads=2)
        results.append(sum(int(e.mask.sum()) for e in out))

    threads = [threading.Thread(target=work, args=(s,)) for s in
               [slow_source(40), slow_source(40), nesting_source(10), slow_source(40)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted([want * 40] * 3 + [want * 10]), results
    print("ok")
    """
)


def test_concurrent_and_nested_calls_do_not_hang(tmp_path):
    """Python threads calling `encode_batch` at once on sources that release the GIL, and a source
    that calls `encode_batch` itself: every call finishes with every sample."""
    out = run_without_hanging(tmp_path, CONCURRENT_SCRIPT, "concurrent or nested encode_batch calls hung")
    assert out == "ok"


FORK_SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp
    import sys
    sys.path.insert(0, {tests!r})
    from test_mask_conformance import model_tokenizers

    tok, _ = model_tokenizers("qwen3")
    conv = [{{"role": "user", "content": "count"}}, {{"role": "assistant", "content": "1 2 3"}}]
    # the parent starts its worker threads first: a fork copies the list of them, not the threads
    parent = tok.encode_batch([conv] * 64, num_threads=2)

    def work(_):
        out = tok.encode_batch([conv] * 64, num_threads=2)
        return sum(int(e.mask.sum()) for e in out)

    with mp.get_context("fork").Pool(2) as pool:
        got = pool.map(work, range(4))
    assert got == [sum(int(e.mask.sum()) for e in parent)] * 4, got
    try:
        import torch.utils.data as tud
    except ImportError:
        print("ok (no torch)")
        sys.exit(0)

    class Stream(tud.IterableDataset):
        def __iter__(self):
            for _ in range(3):
                yield len(tok.encode_batch([conv] * 32, num_threads=2))

    loader = tud.DataLoader(Stream(), batch_size=None, num_workers=2, multiprocessing_context="fork")
    assert list(loader) == [32] * 6
    print("ok")
    """
)


def test_fork_after_encode_batch_does_not_hang(tmp_path):
    out = run_without_hanging(tmp_path, FORK_SCRIPT, "a forked worker hung in encode_batch")
    assert out.startswith("ok")


def test_tokenizer_pickles_for_spawned_workers():
    """DataLoader workers started with "spawn" receive the tokenizer pickled."""
    import pickle

    tok, _ = model_tokenizers("qwen3")
    clone = pickle.loads(pickle.dumps(tok))
    case = next(c for c in R.all_cases() if c.name == "conv:system_multi_turn")
    assert_same(tok.encode(case.messages), clone.encode(case.messages), "pickled")
    assert clone.special_tokens == tok.special_tokens
