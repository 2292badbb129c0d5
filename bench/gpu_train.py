"""GPU training throughput: packed rows + FlexAttention vs one padded conversation per row.

For a ~100M-parameter model (``config_100m``) at each sequence length, the same
synthetic conversations (long-tailed lengths, random token ids, a random trained
suffix per conversation) are laid out in these modes and trained on, each step a
full one (forward, backward, AdamW) under bf16 autocast:

* ``packed-flex``: rows packed by ``turnpack.pack``, FlexAttention with the
  per-document ``BlockMask`` (built every step; its build time is reported);
* ``packed-sdpa`` (only with ``--modes``): the same rows with SDPA and a dense
  boolean document mask;
* ``padded-sdpa``: each conversation in its own row, right-padded to the
  longest in its batch, plain causal SDPA (flash) - the usual unpacked baseline;
* ``padded-sorted-sdpa``: the same with batches grouped by length (less padding).

Batches hold about ``--tokens-per-step`` positions in every mode, and all modes
draw their batches (in a fixed random order) from the same conversations.  Reported: step time, positions/s, real
(non-padding) tokens/s, trained tokens/s, padding share, peak memory and mask
build time (BlockMask for flex, dense boolean mask for packed SDPA).  Results
go to ``--out-dir`` (JSON + markdown table) and also to ``$OUT`` when that
variable is set.

``--check`` instead verifies on the GPU what CPU tests cannot (FlexAttention
has no backward pass on CPU; FSDP2's CPU offload pins host memory), and exits
non-zero on a failure:

* FlexAttention with the document BlockMask matches SDPA with the dense mask,
  forward and backward: attention alone (also on prefix-tree rows, whose
  branches see their trunk: the tree BlockMask vs the dense tree mask), the
  reference model, and a Hugging
  Face Qwen3 model (``attn_implementation="flex_attention"``, the BlockMask
  passed as ``attention_mask``) against the same checkpoint with SDPA;
* a short ``turnpack.train`` loop of the reference model (flex + bf16
  autocast): the loss falls;
* ``turnpack train`` fine-tuning a Hugging Face checkpoint (``model.hf``) on
  the GPU: flex + bf16 + activation checkpointing, once replicated and once
  with FSDP2 in a process group of one with CPU offload and bf16 mixed
  precision; the loss falls, a resumed run repeats the uninterrupted losses,
  and ``final_model`` loads with ``from_pretrained``;
* a real torchtitan run (``torchrun -m torchtitan.train``, its Qwen3
  ``debugmodel`` with flex attention) on ``TurnpackDataLoader`` batches of the
  example dialogues: the loss falls;
* the test suite's CUDA-only tests (``pytest -k cuda`` over the files that hold
  them, e.g. the Hugging Face collator's FlexAttention gradients), which skip on CPU.

Runs in a few minutes on one H200; prints "no CUDA device" and exits 0 elsewhere.

    python bench/gpu_train.py                  # benchmark, seq_len 4096 and 8192
    python bench/gpu_train.py --check          # every GPU-only path
    python bench/gpu_train.py --check --check-parts attention loop hf   # then: torchtitan tests
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import turnpack
from turnpack.attention import dense_document_mask, document_block_mask, flex_attention_forward
from turnpack.data import IGNORE_INDEX
from turnpack.train.model import ModelConfig, Transformer, config_100m, config_tiny

MODES = ("packed-flex", "packed-sdpa", "padded-sdpa", "padded-sorted-sdpa")
#: packed-sdpa is off by default: SDPA has no fused kernel for a boolean mask with grouped-query heads,
#: so it falls back to the math kernel, which materialises every score matrix (OOM at these lengths).
DEFAULT_MODES = ("packed-flex", "padded-sdpa", "padded-sorted-sdpa")
#: Padding id in both layouts; synthetic token ids are drawn from 1..vocab_size-1, so it counts real tokens.
PAD_ID = 0
DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------ synthetic data


def synthetic_conversations(
    n: int, seq_len: int, vocab_size: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (input_ids, trained mask) pairs with chat-like, long-tailed lengths.

    Lengths are lognormal (median ~ seq_len / 8, a long tail up to seq_len); the
    trained part is a random final stretch (the "assistant answer"), 10-60 %.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.lognormal(mean=math.log(seq_len / 8), sigma=0.9, size=n)
    lengths = np.clip(lengths.astype(np.int64), 16, seq_len)
    out = []
    for length in lengths:
        ids = rng.integers(PAD_ID + 1, vocab_size, size=length, dtype=np.int32)
        mask = np.zeros(length, dtype=bool)
        mask[length - max(1, int(length * rng.uniform(0.1, 0.6))) :] = True
        out.append((ids, mask))
    return out


def packed_batches(
    conversations: list[tuple[np.ndarray, np.ndarray]], seq_len: int, rows: int
) -> list[dict[str, torch.Tensor]]:
    """Pack all conversations, cut into batches of ``rows`` rows (int64 tensors, CPU)."""
    packed = turnpack.pack(conversations, seq_len, buffer=4096, pad_id=PAD_ID)
    cols = {
        k: torch.from_numpy(np.asarray(getattr(packed, k), dtype=np.int64))
        for k in ("input_ids", "labels", "position_ids", "document_ids")
    }
    n = len(packed) // rows
    return _shuffled([{k: v[i * rows : (i + 1) * rows] for k, v in cols.items()} for i in range(n)])


def padded_batches(
    conversations: list[tuple[np.ndarray, np.ndarray]], tokens_per_step: int, *, sort: bool = False
) -> list[dict[str, torch.Tensor]]:
    """One conversation per row, right-padded to the batch's longest row.

    In data order, or with ``sort`` grouped by length (the usual trick to cut
    padding; it changes what a batch holds, which packing does not).

    Rows are added to a batch while ``rows * longest <= tokens_per_step``.
    Labels are shifted like the packer's: ``labels[t] = ids[t + 1]`` where ``mask[t + 1]``.
    """
    batches: list[dict[str, torch.Tensor]] = []
    current: list[tuple[np.ndarray, np.ndarray]] = []

    def flush() -> None:
        longest = max(len(ids) for ids, _ in current)
        ids_t = torch.full((len(current), longest), PAD_ID, dtype=torch.long)
        labels = torch.full((len(current), longest), IGNORE_INDEX, dtype=torch.long)
        for r, (ids, mask) in enumerate(current):
            ids_t[r, : len(ids)] = torch.from_numpy(ids.astype(np.int64))
            target = torch.from_numpy(ids[1:].astype(np.int64))
            labels[r, : len(ids) - 1] = torch.where(torch.from_numpy(mask[1:]), target, IGNORE_INDEX)
        positions = torch.arange(longest).expand(len(current), longest).contiguous()
        batches.append({"input_ids": ids_t, "labels": labels, "position_ids": positions})
        current.clear()

    for conv in sorted(conversations, key=lambda c: len(c[0])) if sort else conversations:
        longest = max([len(conv[0]), *(len(ids) for ids, _ in current)])
        if current and (len(current) + 1) * longest > tokens_per_step:
            flush()
        current.append(conv)
    if current:
        flush()
    return _shuffled(batches)


def make_batches(
    layout: str, conversations: list[tuple[np.ndarray, np.ndarray]], seq_len: int, tokens_per_step: int
) -> list[dict[str, torch.Tensor]]:
    """Batches of ``layout`` ("packed", "padded" or "padded-sorted") of ~tokens_per_step positions."""
    if layout == "packed":
        return packed_batches(conversations, seq_len, max(1, tokens_per_step // seq_len))
    return padded_batches(conversations, tokens_per_step, sort=layout == "padded-sorted")


def _shuffled(batches: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Batches in a fixed random order: the few timed steps then sample the whole set (the packer
    emits rows roughly longest-documents-first within its buffer)."""
    order = np.random.default_rng(0).permutation(len(batches))
    return [batches[i] for i in order]


# ------------------------------------------------------------------ timing


def _cycle(batches: list[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from batches


def run_mode(
    mode: str,
    batches: list[dict[str, torch.Tensor]],
    *,
    seq_len: int,
    vocab_size: int,
    warmup: int,
    steps: int,
    preset: Callable[..., ModelConfig] = config_100m,
    device: torch.device | str = "cuda",
) -> dict[str, Any]:
    """Time ``steps`` full training steps (after ``warmup``) of a fresh model in ``mode``."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    backend = "flex" if mode == "packed-flex" else "sdpa"
    model = Transformer(preset(vocab_size, max_seq_len=seq_len, attention_backend=backend)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    totals = {"rows": 0, "positions": 0, "real": 0, "trained": 0, "mask_s": 0.0, "step_s": 0.0}
    it = _cycle(batches)
    for i in range(warmup + steps):
        batch = {k: v.to(device, non_blocking=True) for k, v in next(it).items()}
        sync()
        start = time.perf_counter()
        masks: dict[str, Any] = {}
        if mode == "packed-flex":
            masks = {"block_mask": document_block_mask(batch["document_ids"])}
        elif mode == "packed-sdpa":
            masks = {"dense_mask": dense_document_mask(batch["document_ids"])}
        sync()
        mask_done = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            _, loss = model(batch["input_ids"], batch["position_ids"], labels=batch["labels"], **masks)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if i >= warmup:
            ids = batch["input_ids"]
            totals["step_s"] += time.perf_counter() - start
            totals["mask_s"] += mask_done - start
            totals["rows"] += ids.shape[0]
            totals["positions"] += ids.numel()
            totals["real"] += int((ids != PAD_ID).sum())  # conversations never contain PAD_ID
            totals["trained"] += int((batch["labels"] != IGNORE_INDEX).sum())
    step_s = totals["step_s"] / steps
    return {
        "mode": mode,
        "seq_len": seq_len,
        "rows_per_step": totals["rows"] / steps,
        "positions_per_step": totals["positions"] // steps,
        "step_ms": 1000 * step_s,
        "positions_per_s": totals["positions"] / totals["step_s"],
        "real_tokens_per_s": totals["real"] / totals["step_s"],
        "trained_tokens_per_s": totals["trained"] / totals["step_s"],
        "padding_share": 1 - totals["real"] / totals["positions"],
        "mask_build_ms": 1000 * totals["mask_s"] / steps if mode.startswith("packed") else None,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0,
        "final_loss": float(loss.item()),
    }


# ------------------------------------------------------------------ check mode


def _doc_ids(lengths_per_row: list[list[int]], seq_len: int, device: torch.device) -> torch.Tensor:
    rows = []
    for lengths in lengths_per_row:
        runs = [*lengths, seq_len - sum(lengths)]
        rows.append(torch.cat([torch.full((n,), i) for i, n in enumerate(runs) if n > 0]))
    return torch.stack(rows).to(device)


def _tree_rows(
    seq_len: int, device: torch.device, gen: np.random.Generator, rows: int = 2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prefix-tree rows ``(document_ids, prefix_starts, prefix_ends)``: per row an ordinary document,
    a trunk, three branches of it (each its own document after the trunk, seeing the trunk's first
    ``visible`` tokens), then padding; lengths cross 128-token blocks so many tiles are partial."""
    out: list[list[np.ndarray]] = [[], [], []]
    for _ in range(rows):
        doc = np.zeros(seq_len, np.int64)
        starts = np.zeros(seq_len, np.int64)
        ends = np.zeros(seq_len, np.int64)
        plain, trunk = int(gen.integers(50, 300)), int(gen.integers(300, 700))
        doc[plain : plain + trunk] = 1
        at, d = plain + trunk, 2
        for _ in range(3):
            length = int(gen.integers(50, 300))
            if at + length > seq_len - 5:
                break
            visible = int(gen.integers(1, trunk + 1))
            doc[at : at + length] = d
            starts[at : at + length], ends[at : at + length] = plain, plain + visible
            at, d = at + length, d + 1
        doc[at:] = d  # padding: a document of its own
        for i, a in enumerate((doc, starts, ends)):
            out[i].append(a)
    doc_t, starts_t, ends_t = (torch.from_numpy(np.stack(a)).to(device) for a in out)
    return doc_t, starts_t, ends_t


def _check_flex_vs_sdpa(
    name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, doc: torch.Tensor, **tree: torch.Tensor
) -> bool:
    """Compiled FlexAttention with the BlockMask == SDPA with the dense mask: output and q/k/v grads."""
    grad_out = torch.randn_like(q)
    flex = flex_attention_forward(q, k, v, document_block_mask(doc, **tree), enable_gqa=True)
    flex_grads = torch.autograd.grad(flex, (q, k, v), grad_out)
    dense = dense_document_mask(doc, **tree)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=dense, enable_gqa=True)
    sdpa_grads = torch.autograd.grad(sdpa, (q, k, v), grad_out)
    ok = True
    for what, a, b in [("out", flex, sdpa), *zip(("dq", "dk", "dv"), flex_grads, sdpa_grads)]:
        err = ((a - b).abs().max() / b.abs().max()).item()  # relative to the largest entry
        good = err < 1e-3
        ok &= good
        print(
            f"  attention {name}{what:<4} max |flex - sdpa| / max |sdpa| = {err:.2e}  {'ok' if good else 'MISMATCH'}"
        )
    return ok


def check(seq_len: int = 2048, device: torch.device | str = "cuda") -> bool:
    """FlexAttention (compiled, block-sparse) == SDPA with the dense mask on the GPU, fwd + bwd."""
    device = torch.device(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    gen = np.random.default_rng(0)
    layouts = []
    for _ in range(2):  # 2 rows of random documents (some crossing 128-token blocks) + padding
        lengths, total = [], 0
        while True:
            n = int(gen.integers(1, 700))
            if total + n > seq_len - 5:
                break
            lengths.append(n)
            total += n
        layouts.append(lengths)
    doc = _doc_ids(layouts, seq_len, device)
    ok = True

    # 1. Attention alone, fp32, grouped-query heads.
    torch.manual_seed(0)
    q = torch.randn(2, 8, seq_len, 64, device=device, requires_grad=True)
    k = torch.randn(2, 2, seq_len, 64, device=device, requires_grad=True)
    v = torch.randn(2, 2, seq_len, 64, device=device, requires_grad=True)
    ok &= _check_flex_vs_sdpa("", q, k, v, doc)

    # 1b. Prefix-tree rows: branches that also see their trunk's first tokens (prefix ranges).
    tree_doc, starts, ends = _tree_rows(seq_len, device, gen)
    tree = {"prefix_starts": starts, "prefix_ends": ends}
    grown = int(dense_document_mask(tree_doc, **tree).sum() - dense_document_mask(tree_doc).sum())
    print(f"  attention tree: {grown:,} (query, key) pairs granted by the prefix ranges")
    ok &= grown > 0
    ok &= _check_flex_vs_sdpa("tree ", q, k, v, tree_doc, **tree)

    # 2. The whole model: loss and every gradient, flex vs sdpa backends on a packed batch.
    ids = torch.randint(1, 1000, (2, seq_len), device=device)
    labels = torch.where(torch.rand(2, seq_len, device=device) < 0.5, ids.roll(-1, 1), IGNORE_INDEX)
    positions = torch.cat(
        [torch.cat([torch.arange(n) for n in [*lens, seq_len - sum(lens)] if n > 0]) for lens in layouts]
    ).view(2, seq_len)
    positions = positions.to(device)
    results = {}
    for backend in ("flex", "sdpa"):
        torch.manual_seed(0)
        cfg = config_100m(1000, n_layers=2, max_seq_len=seq_len, attention_backend=backend)
        model = Transformer(cfg).to(device)
        _, loss = model(ids, positions, labels=labels, **model.build_attention_mask(doc))
        loss.backward()
        results[backend] = (loss.detach(), {n: p.grad for n, p in model.named_parameters()})
    ok &= _compare_backends("model", results)
    return check_hf_flex_equals_sdpa(doc, positions, ids, labels, device) and ok


#: The parts of --check, in the order they run (``--check-parts`` picks some, e.g. to fit a time limit).
CHECK_PARTS: dict[str, Callable[[], bool]] = {
    "attention": check,
    "loop": lambda: check_training_loop(),
    "hf": lambda: check_hf_training(),
    "torchtitan": lambda: check_torchtitan(),
    "tests": lambda: check_cuda_tests(),
}


def run_checks(parts: list[str]) -> bool:
    """Run the named parts of --check; every part runs even after a failure."""
    ok = True
    for name in parts:
        print(f"check {name}:", flush=True)
        start = time.perf_counter()
        good = CHECK_PARTS[name]()
        print(
            f"check {name}: {'passed' if good else 'FAILED'} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        ok &= good
    return ok


def _compare_backends(what: str, results: dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> bool:
    """Print and check flex vs sdpa: the loss within 1e-4, every gradient within 1e-3 of its largest entry."""
    loss_err = (results["flex"][0] - results["sdpa"][0]).abs().item()
    grad_err = max(
        ((results["flex"][1][n] - g).abs().max() / g.abs().max().clamp_min(1e-12)).item()
        for n, g in results["sdpa"][1].items()
    )
    ok = True
    for name, err, tol in [("loss", loss_err, 1e-4), ("grads (relative)", grad_err, 1e-3)]:
        good = err < tol
        ok &= good
        print(f"  {what} {name:<16} max error = {err:.2e}  {'ok' if good else 'MISMATCH'}")
    return ok


def check_training_loop(steps: int = 30) -> bool:
    """The training loop on the GPU: example data, FlexAttention, bf16 autocast; the loss must fall."""
    import tempfile

    from turnpack.train import train
    from turnpack.train.config import TrainConfig, apply_override

    config = TrainConfig()
    settings = {
        "train.max_steps": steps,
        "train.log_every": 10,
        "data.num_examples": 1000,
        "checkpoint.every": 0,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for key, value in {**settings, "train.out_dir": tmp}.items():
            config = apply_override(config, f"{key}={json.dumps(value)}")
        result = train(config, echo=lambda line: print("   ", line))
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    good = result.model.resolved_backend() == "flex" and last < first - 1.0
    print(f"  training loop: loss {first:.3f} -> {last:.3f}  {'ok' if good else 'FAILED'}")
    return good


def _tests_on_path() -> None:
    """The tests' model-folder builders (tests/hf_models.py) are not part of the package."""
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def _tiny_hf_dir(folder: Path, vocab_size: int) -> Path:
    """A small Qwen3 checkpoint from a config (head_dim 64, as real models), with the example tokenizer."""
    _tests_on_path()
    from hf_models import tiny_model_dir

    return tiny_model_dir(
        folder, "qwen3", vocab_size=vocab_size, hidden_size=256, intermediate_size=512,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
    )  # fmt: skip


def check_hf_flex_equals_sdpa(doc, positions, ids, labels, device) -> bool:
    """A Hugging Face model with flex_attention + BlockMask == the same weights with SDPA + dense mask."""
    import tempfile

    from turnpack.train.hf_model import load_hf_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = _tiny_hf_dir(Path(tmp) / "qwen3", 1000)
        results = {}
        for backend in ("flex", "sdpa"):
            model = load_hf_model(str(folder), backend=backend, device=device, vocab_size=1000).to(device)
            _, loss = model(ids, positions, labels=labels, **model.build_attention_mask(doc))
            loss.backward()
            results[backend] = (loss.detach(), {n: p.grad for n, p in model.named_parameters()})
    return _compare_backends("hf qwen3", results)


def check_hf_training(steps: int = 20) -> bool:
    """``turnpack train`` with ``model.hf`` on the GPU: replicated, and FSDP2 + CPU offload; resume; export."""
    import shutil
    import tempfile

    import transformers
    from turnpack.train import train
    from turnpack.train.config import TrainConfig, apply_override
    from turnpack.train.hf_model import HFCausalLM

    def run(out: Path, settings: dict[str, Any]) -> tuple[dict[int, float], Any]:
        config = TrainConfig()
        for key, value in {**settings, "train.out_dir": str(out)}.items():
            config = apply_override(config, f"{key}={json.dumps(value)}")
        result = train(config, echo=lambda line: print("   ", line))
        return {r["step"]: r["loss"] for r in result.history}, result

    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = _tiny_hf_dir(Path(tmp) / "qwen3", 300)  # the example tokenizer's 300 tokens
        base = {
            "model.hf": str(folder),
            "data.num_examples": 1000,
            "data.seq_len": 1024,
            "data.batch_size": 4,
            "train.max_steps": steps,
            "train.log_every": 1,
            "train.lr": 3e-3,
            "train.activation_checkpointing": True,
            "checkpoint.every": steps // 2,
        }
        for name, extra in [
            ("replicated", {}),
            ("fsdp2 + cpu offload", {"train.data_parallel": "fsdp", "train.fsdp_cpu_offload": True}),
        ]:
            settings = {**base, **extra}
            out = Path(tmp) / name.replace(" ", "_")
            try:
                losses, result = run(out, settings)
                falls = losses[steps] < losses[1] - 0.5
                flex = isinstance(result.model, HFCausalLM) and result.model.resolved_backend() == "flex"
                loaded = transformers.AutoModelForCausalLM.from_pretrained(result.final_model)
                exported = sum(p.numel() for p in loaded.parameters()) > 0
                # Resume from the middle checkpoint in a fresh folder: the same losses afterwards.
                resumed = Path(tmp) / f"{out.name}_resumed" / "checkpoints"
                resumed.mkdir(parents=True)
                middle = sorted((out / "checkpoints").iterdir())[0]
                copy = shutil.copytree if middle.is_dir() else shutil.copy
                copy(middle, resumed / middle.name)
                again, _ = run(resumed.parent, settings)
                worst = max(abs(again[s] - losses[s]) / losses[s] for s in again)
                good = falls and flex and exported and worst < 1e-3
                print(
                    f"  hf training ({name}): loss {losses[1]:.3f} -> {losses[steps]:.3f}, flex {flex}, "
                    f"from_pretrained {exported}, resume max rel diff {worst:.1e}  {'ok' if good else 'FAILED'}"
                )
            except Exception as e:  # noqa: BLE001 - report it and run the other variant
                good = False
                print(f"  hf training ({name}): {type(e).__name__}: {e}  FAILED")
                traceback.print_exc(limit=5)
            ok &= good
    return ok


_TORCHTITAN_CONFIG = """
from torchtitan.components.checkpoint import CheckpointManager
from torchtitan.components.loss import ChunkedLossWrapper, CrossEntropyLoss
from torchtitan.components.metrics import MetricsProcessor
from torchtitan.components.optimizer import LRSchedulersContainer, default_adamw
from torchtitan.config import TrainingConfig
from torchtitan.models.common.config_utils import decoder_vocab_size
from torchtitan.models.qwen3 import model_registry
from torchtitan.trainer import Trainer
from turnpack.integrations.torchtitan import TurnpackDataLoader

def debug_chat() -> Trainer.Config:
    spec = model_registry("debugmodel", attn_backend="flex")
    return Trainer.Config(
        model_spec=spec, hf_assets_path="model",
        loss=ChunkedLossWrapper.Config(loss_fn=CrossEntropyLoss.Config(global_vocab_size=decoder_vocab_size(spec))),
        dataloader=TurnpackDataLoader.Config(dataset_path="dialogues.jsonl", num_workers=1),
        optimizer=default_adamw(lr=1e-3), metrics=MetricsProcessor.Config(log_freq=10),
        lr_scheduler=LRSchedulersContainer.Config(warmup_steps=20, total_steps=STEPS),
        training=TrainingConfig(local_batch_size=8, seq_len=512, steps=STEPS),
        checkpoint=CheckpointManager.Config(enable=False),
    )
"""


def check_torchtitan(steps: int = 200) -> bool:
    """torchtitan's own trainer on TurnpackDataLoader (example dialogues, Qwen3 debugmodel): the loss falls."""
    import re
    import subprocess
    import tempfile

    _tests_on_path()
    from hf_models import write_example_tokenizer
    from turnpack.train import examples

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "model").mkdir()
        write_example_tokenizer(root / "model")
        dialogues = examples.register_dialogues(20000, seed=0)
        (root / "dialogues.jsonl").write_text("".join(json.dumps({"messages": m}) + "\n" for m in dialogues))
        (root / "tp_debug.py").write_text(_TORCHTITAN_CONFIG.replace("STEPS", str(steps)))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "torchtitan.train", "--module", "tp_debug", "--config", "debug_chat",
               "--dump_folder", str(root / "out")]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        try:
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=240)
        except subprocess.TimeoutExpired:
            print("  torchtitan: timed out  FAILED")
            return False
    text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    losses = {int(m[1]): float(m[2]) for m in re.finditer(r"step:\s*(\d+)\s+loss:\s*([0-9.]+)", text)}
    good = proc.returncode == 0 and len(losses) >= 2 and losses[max(losses)] < losses[min(losses)] - 1.0
    summary = f"loss {losses[min(losses)]:.3f} -> {losses[max(losses)]:.3f}" if losses else "no loss logged"
    print(
        f"  torchtitan run ({steps} steps, flex, exit {proc.returncode}): {summary}  {'ok' if good else 'FAILED'}"
    )
    if not good:
        print(text[-3000:])
    return good


#: Test files with tests that skip without CUDA (their names contain "cuda").
CUDA_TEST_FILES = (
    "tests/test_attention.py",
    "tests/test_attention_tree.py",
    "tests/test_packed_equivalence.py",
    "tests/test_train.py",
    "tests/test_integrations_hf.py",
)


def check_cuda_tests() -> bool:
    """Run the suite's CUDA-only tests here, where they do not skip."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "-k",
        "cuda",
        *CUDA_TEST_FILES,
    ]
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        print("  CUDA-only tests: timed out after 240 s  FAILED")
        return False
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    good = proc.returncode == 0 and "skipped" not in tail
    print(f"  CUDA-only tests: {tail}  {'ok' if good else 'FAILED'}")
    if not good:
        print(proc.stdout[-4000:])
    return good


# ------------------------------------------------------------------ output


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# Training throughput: packed + FlexAttention vs padded ({meta['gpu']})",
        "",
        (
            f"Model: config_{meta['model']} ({meta['parameters'] / 1e6:.1f}M parameters, "
            f"vocab {meta['vocab_size']}), bf16 autocast, AdamW; {meta['steps']} timed steps after "
            f"{meta['warmup']} warmup steps; ~{meta['tokens_per_step']:,} positions per step; "
            "synthetic long-tailed conversations."
        ),
        "",
        (
            "| seq_len | mode | step ms | positions/s | real tok/s | trained tok/s | padding "
            "| mask build ms | peak GiB | speedup (real tok/s vs padded) |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['seq_len']} | {r['mode']} | failed: {r['error'][:80]} |||||||||")
            continue
        base = next(
            (
                b
                for b in results
                if b["seq_len"] == r["seq_len"] and b["mode"] == "padded-sdpa" and "error" not in b
            ),
            None,
        )
        speedup = f"{r['real_tokens_per_s'] / base['real_tokens_per_s']:.2f}x" if base else "-"
        mask = f"{r['mask_build_ms']:.2f}" if r["mask_build_ms"] is not None else "-"
        lines.append(
            f"| {r['seq_len']} | {r['mode']} | {r['step_ms']:.1f} | {r['positions_per_s']:,.0f} "
            f"| {r['real_tokens_per_s']:,.0f} | {r['trained_tokens_per_s']:,.0f} | {r['padding_share']:.1%} "
            f"| {mask} | {r['peak_mem_gib']:.1f} | {speedup} |"
        )
    return "\n".join(lines) + "\n"


def write_results(results: list[dict[str, Any]], meta: dict[str, Any], out_dirs: list[Path]) -> None:
    payload = {"meta": meta, "results": results}
    for out in out_dirs:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_train.json").write_text(json.dumps(payload, indent=2) + "\n")
        (out / "gpu_train.md").write_text(markdown(results, meta))


# ------------------------------------------------------------------ main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--check", action="store_true", help="verify the GPU-only paths (see the docstring) and exit"
    )
    p.add_argument(
        "--check-parts",
        nargs="+",
        choices=list(CHECK_PARTS),
        default=list(CHECK_PARTS),
        help="with --check: only these parts (default: all)",
    )
    p.add_argument("--seq-lens", type=int, nargs="+", default=[4096, 8192])
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES))
    p.add_argument("--tokens-per-step", type=int, default=65536, help="positions per step (all modes)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (include torch.compile)")
    p.add_argument("--steps", type=int, default=8, help="timed steps")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--preset", choices=("100m", "tiny"), default="100m", help="model size (tiny: smoke runs)")
    p.add_argument("--conversations", type=int, default=4000, help="synthetic conversations per seq_len")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where results are written")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (this benchmark needs a GPU)")
        return 0
    warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
    gpu = torch.cuda.get_device_name()
    print(f"GPU: {gpu}, torch {torch.__version__}, turnpack {turnpack.__version__}", flush=True)
    if args.check:
        ok = run_checks(args.check_parts)
        print("GPU check:", "passed" if ok else "FAILED")
        return 0 if ok else 1

    torch.backends.cuda.matmul.allow_tf32 = True
    preset = config_100m if args.preset == "100m" else config_tiny
    with torch.device("meta"):
        parameters = Transformer(preset(args.vocab_size)).num_parameters()
    meta = {
        "gpu": gpu,
        "torch": torch.__version__,
        "turnpack": turnpack.__version__,
        "python": platform.python_version(),
        "model": args.preset,
        "parameters": parameters,
        "vocab_size": args.vocab_size,
        "tokens_per_step": args.tokens_per_step,
        "warmup": args.warmup,
        "steps": args.steps,
    }
    out_dirs = [args.out_dir.resolve()]
    if os.environ.get("OUT") and Path(os.environ["OUT"]).resolve() not in out_dirs:
        out_dirs.append(Path(os.environ["OUT"]).resolve())
    results: list[dict[str, Any]] = []
    for seq_len in args.seq_lens:
        conversations = synthetic_conversations(args.conversations, seq_len, args.vocab_size, seed=seq_len)
        built: dict[str, list[dict[str, torch.Tensor]]] = {}
        for mode in args.modes:
            layout = mode.removesuffix("-flex").removesuffix("-sdpa")
            print(f"seq_len {seq_len} {mode} ...", flush=True)
            try:
                if layout not in built:
                    built[layout] = make_batches(layout, conversations, seq_len, args.tokens_per_step)
                r = run_mode(
                    mode,
                    built[layout],
                    seq_len=seq_len,
                    vocab_size=args.vocab_size,
                    warmup=args.warmup,
                    steps=args.steps,
                    preset=preset,
                )
                print(
                    f"  {r['step_ms']:.1f} ms/step, {r['real_tokens_per_s']:,.0f} real tok/s, "
                    f"{r['trained_tokens_per_s']:,.0f} trained tok/s, padding {r['padding_share']:.1%}, "
                    f"mask build {r['mask_build_ms'] or 0:.2f} ms, peak {r['peak_mem_gib']:.1f} GiB",
                    flush=True,
                )
            except Exception as e:  # noqa: BLE001 - OOM, compile failure...: report it, run the rest
                r = {"mode": mode, "seq_len": seq_len, "error": f"{type(e).__name__}: {e}".splitlines()[0]}
                print(f"  failed: {r['error']}", flush=True)
                traceback.print_exc(limit=3)
            results.append(r)
            torch.cuda.empty_cache()
            write_results(results, meta, out_dirs)  # after every config: a timeout keeps what ran
    print()
    print(markdown(results, meta))
    print("wrote", ", ".join(str(d / "gpu_train.md") for d in out_dirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
