"""The training loop: schedule, loss normalisation, data order, config, checkpoint + exact resume.

DDP runs (two processes under torchrun) are in test_ddp.py.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import turnpack
from turnpack.data import IGNORE_INDEX
from turnpack.train import build_optimizer, examples, forward_backward, main, train
from turnpack.train.checkpoint import list_checkpoints, load_checkpoint
from turnpack.train.config import ConfigError, DataConfig, TrainConfig, apply_override, load_config
from turnpack.train.data import PackedBatches, build_loader
from turnpack.train.model import Transformer, config_tiny
from turnpack.train.schedule import WarmupCosine, warmup_cosine

# A model and data small enough that a training step takes a few milliseconds.
TINY = {
    "model.dim": 32,
    "model.n_layers": 2,
    "model.n_heads": 4,
    "model.n_kv_heads": 2,
    "model.ffn_hidden": 64,
    "data.num_examples": 120,
    "data.seq_len": 512,
    "data.batch_size": 2,
    "train.warmup_steps": 2,
    "train.lr": 1e-2,
    "train.log_every": 1,
    "train.device": "cpu",
}


def tiny_config(out_dir, **settings) -> TrainConfig:
    config = TrainConfig()
    for key, value in {**TINY, "train.out_dir": str(out_dir), **settings}.items():
        config = apply_override(config, f"{key}={json.dumps(value)}")
    return config


def losses(history: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in history}


# ------------------------------------------------------------------ schedule


def test_warmup_cosine_values():
    def f(s):
        return warmup_cosine(s, warmup_steps=4, total_steps=14, min_ratio=0.1)

    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]  # linear, never 0, full at the end
    assert f(4) == 1.0  # cosine starts at the peak
    assert f(9) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert f(14) == f(100) == 0.1  # floor after the end
    decay = [f(s) for s in range(4, 15)]
    assert all(a > b for a, b in itertools.pairwise(decay))  # strictly decreasing
    assert f(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    assert warmup_cosine(0, warmup_steps=0, total_steps=10, min_ratio=0.0) == 1.0  # no warmup
    with pytest.raises(ValueError):
        warmup_cosine(-1, warmup_steps=1, total_steps=2, min_ratio=0.0)


def test_schedule_object():
    schedule = WarmupCosine(2e-3, warmup_steps=3, total_steps=10, min_ratio=0.2)
    expected = [2e-3 * warmup_cosine(s, warmup_steps=3, total_steps=10, min_ratio=0.2) for s in range(12)]
    assert [schedule(s) for s in range(12)] == expected
    with pytest.raises(ValueError):
        WarmupCosine(1e-3, warmup_steps=1, total_steps=5, min_ratio=2.0)


# ------------------------------------------------------------------ the loss


def _random_batch(gen: torch.Generator, rows: int, seq: int, vocab: int, p_trained: float) -> dict:
    ids = torch.randint(0, vocab, (rows, seq), generator=gen)
    labels = torch.randint(0, vocab, (rows, seq), generator=gen)
    labels[torch.rand(rows, seq, generator=gen) > p_trained] = IGNORE_INDEX
    positions = torch.arange(seq).repeat(rows, 1)
    return {
        "input_ids": ids,
        "labels": labels,
        "position_ids": positions,
        "document_ids": torch.zeros(rows, seq, dtype=torch.long),
    }


def test_step_loss_is_mean_over_all_trained_tokens_of_the_batch():
    """Micro-batches with very different numbers of trained tokens: the step's loss and gradient
    are those of one mean over every trained token, not a mean of per-micro-batch means."""
    torch.manual_seed(0)
    model = Transformer(config_tiny(50, dim=32, n_layers=1, init_std=0.2))
    gen = torch.Generator().manual_seed(0)
    micro = [_random_batch(gen, 2, 16, 50, 0.9), _random_batch(gen, 2, 16, 50, 0.1)]
    counts = [int((b["labels"] != IGNORE_INDEX).sum()) for b in micro]
    assert counts[0] > 3 * counts[1] > 0

    loss_sum, count, positions, weight = forward_backward(model, model, micro)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    # Reference: all rows in one batch, cross-entropy averaged over trained tokens.
    full = {k: torch.cat([b[k] for b in micro]) for k in micro[0]}
    logits = model(full["input_ids"], full["position_ids"])
    reference = torch.nn.functional.cross_entropy(
        logits.view(-1, 50), full["labels"].view(-1), ignore_index=IGNORE_INDEX
    )
    reference.backward()
    assert int(count) == sum(counts) and int(positions) == 4 * 16
    assert float(weight) == sum(counts)  # unweighted rows: the loss's normaliser is the count
    torch.testing.assert_close(loss_sum / count, reference.detach(), rtol=1e-6, atol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-7)

    # Control: the mean of the two micro-batch means is a different number.
    with torch.no_grad():
        means = [model(b["input_ids"], b["position_ids"], labels=b["labels"])[1] for b in micro]
    assert abs((means[0] + means[1]).item() / 2 - reference.item()) > 1e-3


def test_optimizer_decays_matrices_only():
    model = Transformer(config_tiny(40, dim=16, n_layers=1, tie_embeddings=True))
    opt = build_optimizer(model, TrainConfig().train, torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] > 0 and no_decay["weight_decay"] == 0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))  # tied once


# ------------------------------------------------------------------ data


def _rows(n: int, seq: int = 8) -> dict[str, np.ndarray]:
    ids = np.arange(n * seq).reshape(n, seq)
    return {"input_ids": ids, "labels": ids, "position_ids": ids % seq, "document_ids": ids * 0}


def test_packed_batches_ranks_split_the_global_batch():
    single = PackedBatches(_rows(13), 4, seed=3)  # 3 steps per epoch, 1 row left over
    ranks = [PackedBatches(_rows(13), 2, rank=r, world_size=2, seed=3) for r in range(2)]
    it_single, it_ranks = iter(single), [iter(r) for r in ranks]
    firsts = []
    for _ in range(7):  # across two epoch boundaries
        whole = next(it_single)["input_ids"]
        parts = [next(it)["input_ids"] for it in it_ranks]
        assert torch.equal(whole, torch.cat(parts))
        firsts.append(whole[:, 0])
    epoch0 = torch.cat(firsts[:3]) // 8
    assert len(set(epoch0.tolist())) == 12  # no row twice within an epoch
    assert not torch.equal(torch.cat(firsts[3:6]), torch.cat(firsts[:3]))  # reshuffled per epoch
    assert next(iter(single))["input_ids"].dtype == torch.int64


def test_packed_batches_state_resumes_exactly():
    loader = PackedBatches(_rows(10), 3, seed=1)
    it = iter(loader)
    for _ in range(4):
        next(it)
    state = loader.state_dict()
    expected = [next(it)["input_ids"] for _ in range(5)]
    resumed = PackedBatches(_rows(10), 3, seed=1)
    resumed.load_state_dict(state)
    got = [b["input_ids"] for b, _ in zip(resumed, range(5))]
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    with pytest.raises(ValueError, match="world_size"):
        PackedBatches(_rows(10), 1, rank=0, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        PackedBatches(_rows(3), 2, world_size=2)


def test_example_loader_batches_are_packed_dialogues():
    source = build_loader(DataConfig(num_examples=40, seq_len=512, batch_size=2))
    batch = next(iter(source.loader))
    assert source.vocab_size == examples.VOCAB_SIZE and source.seq_len == 512
    assert batch["input_ids"].shape == (2, 512) and batch["input_ids"].dtype == torch.int64
    trained = batch["labels"][batch["labels"] != IGNORE_INDEX]
    assert (trained == examples.IM_END_ID).any()  # each answer ends by emitting <|im_end|>
    assert batch["document_ids"][:, -1].min() >= 1  # several dialogues (or padding) per row


# ------------------------------------------------------------------ config and CLI


def test_config_files_and_overrides(tmp_path):
    (tmp_path / "run.toml").write_text(
        '[model]\npreset = "tiny"\ndim = 64\n[train]\nlr = 1e-3\nbetas = [0.9, 0.99]\n'
        '[data]\npath = "x.jsonl"\n'
    )
    (tmp_path / "run.json").write_text(json.dumps({"model": {"dim": 64}, "train": {"lr": 0.001}}))
    toml = load_config(tmp_path / "run.toml", ["train.lr=3e-4", "data.path=123", "model.dim=null"])
    assert toml.train.lr == 3e-4 and toml.train.betas == (0.9, 0.99)
    assert toml.data.path == "123"  # a string field takes the text verbatim
    assert toml.model.dim is None
    assert load_config(tmp_path / "run.json").model.dim == 64
    assert load_config(None, ["train.device=cuda:1"]).train.device == "cuda:1"
    example = load_config("example")  # the bundled example run
    assert example.data.source == "example" and example.model.n_heads == 6
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["train.learning_rate=1"])
    with pytest.raises(ConfigError, match="unknown config section"):
        load_config(None, ["optim.lr=1"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(None, ["train.max_steps=1.5"])
    with pytest.raises(ConfigError, match="expected one of"):
        load_config(None, ["data.source=parquet"])
    with pytest.raises(ConfigError, match="must be positive"):
        load_config(None, ["train.grad_accum_steps=0"])
    with pytest.raises(ConfigError, match=r"SECTION\.KEY=VALUE"):
        load_config(None, ["lr=1"])
    (tmp_path / "bad.json").write_text(json.dumps({"train": {"lr": "fast"}}))
    with pytest.raises(ConfigError, match=r"bad\.json: train\.lr: expected a number"):
        load_config(tmp_path / "bad.json")


def test_cli_print_config_and_errors(capsys):
    assert main(["--print-config", "--set", "train.lr=1e-3", "--set", "data.batch_size=4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"]["lr"] == 1e-3 and printed["data"]["batch_size"] == 4
    assert main(["--set", "train.nope=1"]) == 2
    assert "unknown key" in capsys.readouterr().err


# ------------------------------------------------------------------ train + resume


def test_training_reduces_loss_and_logs(tmp_path):
    result = train(tiny_config(tmp_path, **{"train.max_steps": 12}), echo=lambda _: None)
    history = losses(result.history)
    assert list(history) == list(range(1, 13))
    assert history[12] < history[1] - 1.0  # from ~log(259) = 5.6 well down
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in records] == list(history.values())
    first = records[0]
    assert first["tokens"] == 2 * 512 and 0 < first["trained_tokens"] < first["tokens"]
    assert first["tokens_per_s"] > first["trained_tokens_per_s"] > 0
    assert json.loads((tmp_path / "config.json").read_text())["train"]["max_steps"] == 12
    schedule = WarmupCosine(1e-2, warmup_steps=2, total_steps=12, min_ratio=0.1)  # TINY's settings
    assert [r["lr"] for r in records] == [schedule(s) for s in range(12)]


def test_gradient_accumulation_equals_the_large_batch(tmp_path):
    """2 micro-batches of 1 row == 1 batch of 2 rows (the same rows: see PackedBatches)."""
    big = train(tiny_config(tmp_path / "big", **{"train.max_steps": 4}), echo=lambda _: None)
    accumulated = train(
        tiny_config(
            tmp_path / "acc", **{"train.max_steps": 4, "data.batch_size": 1, "train.grad_accum_steps": 2}
        ),
        echo=lambda _: None,
    )
    expected = losses(big.history)
    assert losses(accumulated.history) == pytest.approx(expected, rel=1e-5)
    assert len(set(expected.values())) == 4  # the losses move: the comparison is not vacuous


def test_checkpoint_resume_gives_identical_losses(tmp_path):
    """Stop after step 4 (take that checkpoint into a fresh run directory) and continue: steps 5-8
    have exactly the losses of the uninterrupted run, and the final weights are identical."""
    settings = {"train.max_steps": 8, "checkpoint.every": 4, "checkpoint.keep": 0}
    # Random draws before training must not matter: the checkpoint restores every RNG.
    random.seed(123)
    full = train(tiny_config(tmp_path / "full", **settings), echo=lambda _: None)
    saved = [p.name for p in list_checkpoints(tmp_path / "full" / "checkpoints")]
    assert saved == ["step_00000004.pt", "step_00000008.pt"]
    ckpt = load_checkpoint(tmp_path / "full" / "checkpoints" / "step_00000004.pt")
    assert ckpt["step"] == 4 and ckpt["ranks"][0]["loader"]["step"] == 4
    assert set(ckpt["ranks"][0]["rng"]) >= {"python", "numpy", "torch"}

    resumed_dir = tmp_path / "resumed" / "checkpoints"
    resumed_dir.mkdir(parents=True)
    shutil.copy(tmp_path / "full" / "checkpoints" / "step_00000004.pt", resumed_dir)
    torch.manual_seed(999)
    lines: list[str] = []
    resumed = train(tiny_config(tmp_path / "resumed", **settings), echo=lines.append)
    assert any("resumed from" in line and "step 4" in line for line in lines)
    expected = {s: v for s, v in losses(full.history).items() if s > 4}
    assert losses(resumed.history) == expected  # bit for bit
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name

    # Control: continuing from step 4 with a different data position does change the losses.
    ckpt["ranks"][0]["loader"]["step"] += 1
    other = tmp_path / "other" / "checkpoints"
    other.mkdir(parents=True)
    torch.save(ckpt, other / "step_00000004.pt")
    shifted = train(tiny_config(tmp_path / "other", **settings), echo=lambda _: None)
    assert losses(shifted.history)[5] != expected[5]


def test_resume_auto_continues_a_finished_run_to_more_steps(tmp_path):
    train(tiny_config(tmp_path, **{"train.max_steps": 3}), echo=lambda _: None)
    again = train(tiny_config(tmp_path, **{"train.max_steps": 3}), echo=lambda _: None)
    assert again.step == 3 and again.history == []  # nothing left to do
    # Raising max_steps continues from step 3 on the new run's (longer) schedule.
    longer = train(tiny_config(tmp_path, **{"train.max_steps": 6}), echo=lambda _: None)
    schedule = WarmupCosine(1e-2, warmup_steps=2, total_steps=6, min_ratio=0.1)
    assert [(r["step"], r["lr"]) for r in longer.history] == [(s + 1, schedule(s)) for s in range(3, 6)]
    with pytest.raises(FileNotFoundError):
        train(tiny_config(tmp_path, **{"checkpoint.resume": str(tmp_path / "missing.pt")}))


def test_dataset_source_trains_and_resumes_through_chat_data_loader(tmp_path):
    """The `dataset` source: ChatDataset streaming a JSONL file, with exact resume of its position."""
    path = tmp_path / "dialogues.jsonl"
    path.write_text("".join(json.dumps({"messages": d}) + "\n" for d in examples.register_dialogues(60)))
    settings = {
        "data.source": "dataset",
        "data.path": str(path),
        "data.tokenizer": "example",
        "train.max_steps": 6,
        "checkpoint.every": 3,
        "checkpoint.keep": 0,
    }
    full = train(tiny_config(tmp_path / "full", **settings), echo=lambda _: None)
    assert full.source is not None and full.source.vocab_size == examples.VOCAB_SIZE
    resumed_dir = tmp_path / "resumed" / "checkpoints"
    resumed_dir.mkdir(parents=True)
    shutil.copy(tmp_path / "full" / "checkpoints" / "step_00000003.pt", resumed_dir)
    resumed = train(tiny_config(tmp_path / "resumed", **settings), echo=lambda _: None)
    assert losses(resumed.history) == {s: v for s, v in losses(full.history).items() if s > 3}


def test_vocab_size_of_loaded_tokenizers():
    from turnpack import load_tokenizer

    assert load_tokenizer("example").vocab_size == examples.VOCAB_SIZE
    assert isinstance(load_tokenizer(str(examples.TOKENIZER_PATH)), turnpack.ChatTokenizer)


# ------------------------------------------------------------------ example dataset


def test_bundled_tokenizer_file_is_the_generated_one():
    assert json.loads(examples.TOKENIZER_PATH.read_text(encoding="utf-8")) == examples.build_tokenizer_json()


def test_example_tokenizer_is_chatml_bpe():
    tok = examples.example_tokenizer()
    dialogue = [
        {"role": "user", "content": "set a to 3 ü"},
        {"role": "assistant", "content": "a = 3"},
        {"role": "user", "content": "what is a?"},
        {"role": "assistant", "content": "a = 3"},
    ]
    enc = tok.encode(dialogue)
    assert enc.text == (
        "<|im_start|>user\nset a to 3 ü<|im_end|>\n<|im_start|>assistant\na = 3<|im_end|>\n"
        "<|im_start|>user\nwhat is a?<|im_end|>\n<|im_start|>assistant\na = 3<|im_end|>\n"
    )
    ids = [int(i) for i in enc.input_ids]
    pieces = [tok.decode([i]) for i in ids]
    assert tok.decode(ids) == enc.text
    assert pieces[:6] == ["<|im_start|>", "user", "\n", "set a to ", "3", " "]  # learned merges
    assert ids[6:8] == list("ü".encode())  # unseen text falls back to bytes (id = byte value)
    assert all(i < 256 for i, p in zip(ids, pieces) if p.isdigit() or p == "\n")  # never merged
    assert max(ids) < examples.VOCAB_SIZE
    # Trained: each assistant answer and the <|im_end|> that closes it, nothing else.
    trained = [p for p, m in zip(pieces, enc.mask) if m]
    assert trained == ["a = ", "3", "<|im_end|>"] * 2
    prompt = tok.render(dialogue[:3], add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tok.tokenize("<|im_end|>") == [examples.IM_END_ID]


def test_learn_merges_is_bpe():
    # "ab" is the most frequent pair (3x), then "ab" + "c" (2x).
    assert examples.learn_merges(["abcabc", "abd"], 2) == [("a", "b"), ("ab", "c")]
    # Ties go to the larger pair; it stops when every piece is a single symbol.
    assert examples.learn_merges(["abcabc", "abd"], 99)[2:] == [("abc", "abc"), ("ab", "d")]
    assert examples.learn_merges(["12 12\n12", "3\n3"], 5) == []  # digits and newlines never merge
    assert examples.learn_merges(["<|im_end|>x<|im_end|>x"], 5) == []  # nor special tokens


def test_example_tokenizer_matches_hugging_face_tokenizers():
    tokenizers = pytest.importorskip("tokenizers")
    reference = tokenizers.Tokenizer.from_file(str(examples.TOKENIZER_PATH))
    tok = examples.example_tokenizer()
    for dialogue in examples.register_dialogues(5, seed=7):
        enc = tok.encode(dialogue)
        assert reference.encode(enc.text, add_special_tokens=False).ids == [int(i) for i in enc.input_ids]


def _replay(dialogue: list[dict[str, str]]) -> list[str]:
    """Run the register machine on the user turns; return the answers it must give."""
    values: dict[str, int] = {}
    answers, changed = [], ""
    for message in dialogue[::2]:
        words = message["content"].rstrip("?").split()
        if words[0] == "set":
            changed = words[1]
            values[changed] = int(words[3])
        elif words[0] == "add":
            changed = words[3]
            values[changed] += int(words[1])
        else:
            asked = words[2]
            assert asked != changed  # never the register just changed
            answers.append(f"{asked} = {values[asked]}")
            continue
        answers.append(f"{changed} = {values[changed]}")
    return answers


def test_register_dialogues_are_deterministic_and_correct():
    dialogues = examples.register_dialogues(300, seed=5, min_turns=3, max_turns=9)
    assert dialogues == examples.register_dialogues(300, seed=5, min_turns=3, max_turns=9)
    assert dialogues != examples.register_dialogues(300, seed=6, min_turns=3, max_turns=9)
    kinds = set()
    for d in dialogues:
        assert 6 <= len(d) <= 18 and [m["role"] for m in d] == ["user", "assistant"] * (len(d) // 2)
        assert [m["content"] for m in d[1::2]] == _replay(d)
        assert d[-2]["content"].startswith("what is")  # the final turn is a question
        kinds.update(m["content"].split()[0] for m in d[::2])
        assert all(0 <= int(m["content"][-1]) <= 9 for m in d[1::2])
    assert kinds == {"set", "add", "what"}
    with pytest.raises(ValueError):
        examples.register_dialogue(random.Random(0), 2)


def test_run_demo_smoke(tmp_path):
    from turnpack.train.demo import run_demo

    lines: list[str] = []
    result = run_demo(
        6,
        num_eval=3,
        out_dir=tmp_path,
        echo=lines.append,
        **{key: value for key, value in TINY.items() if key.startswith("model.")},
    )
    assert [step for step, _ in result.losses] == list(range(1, 7))
    assert result.losses[-1][1] < result.losses[0][1]
    assert result.num_eval == 3 and len(result.samples) == 3
    assert result.prompt[-1]["role"] == "user"
    assert (result.prompt[-1]["content"], result.expected, result.answer) in result.samples
    text = "\n".join(lines)
    assert "expected" in text and "unseen dialogues" in text
    assert (tmp_path / "log.jsonl").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_uses_flex_and_bf16(tmp_path):
    """The GPU path: FlexAttention BlockMask, bf16 autocast, fused AdamW; the loss falls."""
    config = tiny_config(tmp_path, **{"train.device": "cuda", "train.max_steps": 20})
    result = train(config, echo=lambda _: None)
    assert result.model.resolved_backend() == "flex"
    assert next(result.model.parameters()).dtype == torch.float32  # autocast, fp32 master weights
    history = losses(result.history)
    assert history[20] < history[1] - 1.0


# ------------------------------------------------------------------ GPU benchmark (CPU parts)


def _load_gpu_bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_train.py"
    spec = importlib.util.spec_from_file_location("gpu_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_layouts_hold_the_same_data_and_run_on_cpu(tmp_path, capsys):
    bench = _load_gpu_bench()
    if not torch.cuda.is_available():
        assert bench.main(["--out-dir", str(tmp_path)]) == 0
        assert "no CUDA device" in capsys.readouterr().out
    conversations = bench.synthetic_conversations(200, 128, 300, seed=0)
    assert max(len(ids) for ids, _ in conversations) <= 128
    # One row per step (128 positions), so no partial last batch is cut: all data in every layout.
    expected = sum(int(mask[1:].sum()) for _, mask in conversations)
    for name in ("packed", "padded", "padded-sorted"):
        batches = bench.make_batches(name, conversations, 128, 128)
        trained = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches)
        real = sum(int((b["input_ids"] != bench.PAD_ID).sum()) for b in batches)
        assert trained == expected, name  # every layout trains on exactly the same tokens
        assert real == sum(len(ids) for ids, _ in conversations), name
    packed = bench.make_batches("packed", conversations, 128, 512)
    assert all(b["input_ids"].shape == (4, 128) for b in packed)
    result = bench.run_mode(
        "packed-sdpa", packed, seq_len=128, vocab_size=300, warmup=1, steps=1,
        preset=config_tiny, device="cpu",
    )  # fmt: skip
    assert result["positions_per_step"] == 512 and 0 <= result["padding_share"] < 0.2
    assert result["mask_build_ms"] is not None and math.isfinite(result["final_loss"])
    bench.write_results([result, {"mode": "packed-flex", "seq_len": 128, "error": "OOM"}], {
        "gpu": "cpu", "model": "tiny", "parameters": 1, "vocab_size": 300, "tokens_per_step": 512,
        "warmup": 1, "steps": 1,
    }, [tmp_path])  # fmt: skip
    assert "| 128 | packed-flex | failed: OOM" in (tmp_path / "gpu_train.md").read_text()
    assert json.loads((tmp_path / "gpu_train.json").read_text())["results"][0]["mode"] == "packed-sdpa"


def test_prune_removes_the_leftovers_of_unfinished_saves(tmp_path):
    from turnpack.train.checkpoint import TRAINER_STATE, prune_checkpoints

    for step in (1, 2, 3):
        (tmp_path / f"step_{step:08d}.pt").write_bytes(b"x")
    (tmp_path / "step_00000004.pt.tmp").write_bytes(b"half")  # a file save killed midway
    (tmp_path / "step_00000005.tmp").mkdir()  # a distributed save killed midway
    (tmp_path / "step_00000006").mkdir()  # a complete distributed checkpoint
    (tmp_path / "step_00000006" / TRAINER_STATE).write_bytes(b"x")
    (tmp_path / "notes.tmp").write_bytes(b"not ours")
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tmp", "step_00000003.pt", "step_00000006"]
