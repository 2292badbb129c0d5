"""Train on packed chat batches: ``turnpack train``.

The model is the reference decoder (:mod:`turnpack.train.model`) or a pretrained
Hugging Face checkpoint (``model.hf``, :mod:`turnpack.train.hf_model`).  One
process per device; under ``torchrun`` the processes form a process group
(NCCL on GPUs, gloo on CPUs), replicate (DDP) or shard (FSDP2) the model as
``train.data_parallel`` says (:mod:`turnpack.train.parallel`), and each rank
reads its own share of the data::

    turnpack train --config example                    # the built-in example run (what the demo trains)
    turnpack train --config run.toml --set train.lr=1e-3 --set data.batch_size=4
    turnpack train --config run.toml --set model.hf=path/to/Qwen3-0.6B
    torchrun --nproc_per_node 8 -m turnpack train --config run.toml --set train.data_parallel=fsdp

Each optimizer step:

1. takes ``grad_accum_steps`` micro-batches of packed rows on every rank;
2. all-reduces the number of trained tokens (labels != -100) of the whole
   global batch, and backpropagates ``sum of token losses * world_size /
   global count`` per micro-batch.  DDP and FSDP2 average gradients over ranks, so the
   gradient is that of the mean loss over every trained token of the global
   batch: exactly single-process training on the concatenated batch, however
   unevenly trained tokens fall across rows, micro-batches and ranks;
3. clips the global gradient norm and steps AdamW at the learning rate the
   warmup + cosine schedule gives for this step.

Logs (rank 0) go to stdout and ``{out_dir}/log.jsonl``; checkpoints (model,
optimizer, step, every rank's data-loader and RNG state; distributed under
FSDP2) to ``{out_dir}/checkpoints``, and a run restarted with the same config
resumes from the newest one with the same losses as an uninterrupted run.  A
Hugging Face model is saved for ``from_pretrained`` (with its tokenizer and
chat template) in ``{out_dir}/final_model`` after the last step.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from turnpack.data.batching import IGNORE_INDEX
from turnpack.train.checkpoint import (
    TRAINER_STATE,
    capture_rng_state,
    checkpoint_path,
    is_sharded,
    latest_checkpoint,
    load_checkpoint,
    load_sharded_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
    save_sharded_checkpoint,
    sharded_checkpoint_path,
)
from turnpack.train.config import (
    ConfigError,
    DataConfig,
    ModelSection,
    TrainConfig,
    TrainSection,
    load_config,
)
from turnpack.train.data import Batch, DataSource, StatefulLoader, batch_keys, build_loader
from turnpack.train.hf_model import HFCausalLM, load_hf_model, save_pretrained
from turnpack.train.model import ModelConfig, Transformer, config_100m, config_tiny
from turnpack.train.parallel import clip_grad_norm, gradient_sync, shard_fsdp, wrap_ddp
from turnpack.train.schedule import WarmupCosine

__all__ = [
    "Distributed",
    "StepTotals",
    "TrainResult",
    "build_model",
    "build_optimizer",
    "forward_backward",
    "main",
    "train",
]


# ------------------------------------------------------------------ processes


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run (world_size 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(
    device_spec: str, *, group_of_one: bool = False, cpu_collectives: bool = False
) -> tuple[Distributed, torch.device, bool]:
    """Read torchrun's environment, pick the device and join the process group.

    ``group_of_one``: a process started without torchrun forms a group of its own
    (FSDP2 needs one even on one device, e.g. to offload shards to CPU memory).
    ``cpu_collectives``: on CUDA, also give the group gloo for CPU tensors (FSDP2's CPU
    offload reduces the gradient norm over CPU shards, which NCCL cannot).
    Returns the process info, the device and whether this call created the group
    (and so must destroy it).
    """
    env = os.environ
    info = Distributed(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
    if device_spec == "auto":
        device_spec = f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_spec)
    if device.type == "cuda":
        if device.index is None:  # plain "cuda": this process's GPU
            device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    created = False
    backend = "gloo"
    if device.type == "cuda":
        backend = "cuda:nccl,cpu:gloo" if cpu_collectives else "nccl"
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend=backend)
        created = True
    elif group_of_one and not dist.is_initialized():
        dist.init_process_group(
            backend=backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
        )
        created = True
    return info, device, created


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _all_reduce_sum(t: Tensor, info: Distributed) -> Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# ---------------------------------------------------------------- components


def build_model(
    section: ModelSection,
    *,
    vocab_size: int | None,
    seq_len: int,
    device: torch.device | None = None,
) -> Transformer | HFCausalLM:
    """The model the section names: the reference Transformer from a preset and the section's
    overrides, or the pretrained Hugging Face checkpoint at ``section.hf`` (checked against the
    tokenizer's ``vocab_size``; ``device`` decides its "auto" attention backend)."""
    if section.hf is not None:
        return load_hf_model(
            section.hf,
            backend=section.attention_backend,
            device=device or torch.device("cpu"),
            vocab_size=vocab_size,
        )
    overrides = {k: v for k, v in asdict(section).items() if k != "preset" and v is not None}
    overrides.setdefault("vocab_size", vocab_size)
    overrides.setdefault("max_seq_len", seq_len)
    if overrides["vocab_size"] is None:
        raise ConfigError("model.vocab_size is needed: this data source does not say")
    preset: Callable[..., ModelConfig] = config_100m if section.preset == "100m" else config_tiny
    return Transformer(preset(**overrides))


def build_optimizer(model: nn.Module, section: TrainSection, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (linears, embeddings) only, not on norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": section.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=section.lr, betas=section.betas, eps=section.eps, fused=device.type == "cuda"
    )


class StepTotals(NamedTuple):
    """Totals of one optimizer step over the global batch (all micro-batches, all ranks)."""

    loss_sum: Tensor  # summed (weighted) cross-entropy of the trained tokens (float32)
    trained: Tensor  # trained tokens, labels != -100 (int64)
    positions: Tensor  # all positions, padding included (int64)
    weight: Tensor  # the loss's normaliser: summed loss weights of the trained tokens (float32)


def forward_backward(
    model: nn.Module,
    raw_model: Transformer | HFCausalLM,
    micro_batches: list[Batch],
    *,
    info: Distributed = Distributed(),
    autocast_dtype: torch.dtype | None = None,
) -> StepTotals:
    """Accumulate the gradient of one optimizer step; return the step's global totals.

    The loss of a step is the mean cross-entropy over every trained token of
    the global batch (all micro-batches on all ranks): ``loss_sum / weight``
    of the returned (all-reduced) totals. Batches with ``loss_weights`` (messages
    with a ``weight`` other than 1) make it the weighted mean; without them
    ``weight`` is the number of trained tokens.

    Args:
        model: what to call: ``raw_model`` itself, or wrapped by DDP / torch.compile.
        raw_model: the unwrapped model (builds the attention masks; sharded in place by FSDP2).
        micro_batches: this rank's micro-batches, already on the model's device.
        info: the process group; gradients are scaled by ``world_size`` to undo
            the averaging over ranks of DDP and FSDP2.
        autocast_dtype: run the forward under autocast to this dtype (bf16 on GPU).
    """
    device = micro_batches[0]["input_ids"].device
    trained = sum((b["labels"] != IGNORE_INDEX).sum() for b in micro_batches)
    positions = torch.tensor(sum(b["labels"].numel() for b in micro_batches), device=device)
    # One all-reduce for both counts, in int64: exact however large the batch.
    trained, positions = _all_reduce_sum(torch.stack([trained, positions]), info).unbind()
    if any("loss_weights" in b for b in micro_batches):
        weight = sum(
            (b["loss_weights"].float() * (b["labels"] != IGNORE_INDEX)).sum()
            if "loss_weights" in b
            else (b["labels"] != IGNORE_INDEX).sum().float()
            for b in micro_batches
        )
        # every rank must take part: ranks whose batches carry no weights sum their counts
        weight = _all_reduce_sum(torch.as_tensor(weight, dtype=torch.float32, device=device), info)
    else:
        weight = trained.to(torch.float32)
    scale = info.world_size / weight.clamp_min(torch.finfo(torch.float32).tiny)
    loss_sum = torch.zeros((), device=device)
    for i, batch in enumerate(micro_batches):
        # Only the last micro-batch all-reduces gradients; the others accumulate locally.
        last = i == len(micro_batches) - 1
        masks = raw_model.build_attention_mask(  # once per batch, shared by layers
            batch["document_ids"],
            prefix_starts=batch.get("prefix_starts"),
            prefix_ends=batch.get("prefix_ends"),
        )
        with gradient_sync(model, raw_model, enabled=last):
            with torch.autocast(
                device.type, dtype=autocast_dtype or torch.float32, enabled=bool(autocast_dtype)
            ):
                _, micro_sum = model(
                    batch["input_ids"],
                    batch["position_ids"],
                    labels=batch["labels"],
                    loss_reduction="sum",
                    loss_weights=batch.get("loss_weights"),
                    **masks,
                )
            (micro_sum * scale).backward()
        loss_sum += micro_sum.detach()
    return StepTotals(_all_reduce_sum(loss_sum, info), trained, positions, weight)


# --------------------------------------------------------------------- train


@dataclass
class TrainResult:
    """What :func:`train` hands back (on every rank)."""

    model: Transformer | HFCausalLM  # unwrapped (sharded in place under FSDP2), on its training device
    step: int  # optimizer steps completed
    history: list[dict[str, Any]] = field(default_factory=list)  # the logged records
    checkpoint: Path | None = None  # the last checkpoint written
    source: DataSource | None = None
    final_model: Path | None = None  # a Hugging Face model's from_pretrained folder


class _Logger:
    """Print lines and JSONL records, on rank 0 only."""

    def __init__(self, out_dir: Path, enabled: bool, echo: Callable[[str], None]) -> None:
        self.enabled, self.echo = enabled, echo
        self.path = out_dir / "log.jsonl"
        if enabled:
            out_dir.mkdir(parents=True, exist_ok=True)

    def info(self, text: str) -> None:
        if self.enabled:
            self.echo(text)

    def record(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.echo(
            f"step {record['step']:>6}/{record['max_steps']} | loss {record['loss']:.4f} "
            f"| lr {record['lr']:.2e} | grad norm {record['grad_norm']:.3f} "
            f"| {record['tokens_per_s']:>9,.0f} tok/s | {record['trained_tokens_per_s']:>8,.0f} trained tok/s"
        )


_print = functools.partial(print, flush=True)  # log lines show up at once, also under torchrun


def _resolve_dtype(spec: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if spec == "bf16" else None


def _find_resume(config: TrainConfig, ckpt_dir: Path) -> Path | None:
    spec = config.checkpoint.resume
    if spec == "never":
        return None
    if spec == "auto":
        return latest_checkpoint(ckpt_dir)
    path = Path(spec)
    if not (path.is_file() or (path / TRAINER_STATE).is_file()):
        raise FileNotFoundError(
            f"checkpoint.resume: no checkpoint file or distributed checkpoint folder at {path}"
        )
    return path


def _gather(obj: Any, info: Distributed) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def train(
    config: TrainConfig,
    *,
    source: DataSource | None = None,
    echo: Callable[[str], None] = _print,
) -> TrainResult:
    """Train (or resume training) as ``config`` says; see the module docstring.

    Args:
        config: the full run configuration.
        source: this rank's data; by default :func:`~turnpack.train.data.build_loader`
            builds it from ``config.data``.  Any iterable of dict batches works;
            one with ``state_dict()``/``load_state_dict()`` resumes exactly.
        echo: where rank 0's log lines go.
    """
    fsdp = config.train.data_parallel == "fsdp"
    info, device, created_group = _setup_distributed(
        config.train.device, group_of_one=fsdp, cpu_collectives=fsdp and config.train.fsdp_cpu_offload
    )
    try:
        return _train(config, info, device, source, echo)
    finally:
        if created_group:
            # The DDP wrapper sits in reference cycles: collect it now, while the group and the
            # interpreter are alive. Left to the interpreter's exit, its gloo reducer was torn down
            # during finalization and the process sometimes aborted ("terminate called without an
            # active exception"; about 1 run in 20 on a loaded 2-core machine).
            gc.collect()
            dist.destroy_process_group()


def _train(
    config: TrainConfig,
    info: Distributed,
    device: torch.device,
    source: DataSource | None,
    echo: Callable[[str], None],
) -> TrainResult:
    tc = config.train
    out_dir, ckpt_dir = Path(tc.out_dir), Path(tc.out_dir) / "checkpoints"
    log = _Logger(out_dir, info.is_main, echo)
    random.seed(tc.seed)
    np.random.seed(tc.seed)
    torch.manual_seed(tc.seed)  # same on every rank: identical initial weights
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")

    fsdp = tc.data_parallel == "fsdp"  # in one process too (a group of one): for CPU offload
    if fsdp and tc.fsdp_cpu_offload and device.type != "cuda":
        raise ConfigError(
            "train.fsdp_cpu_offload keeps FSDP2 shards in pinned CPU memory between GPU uses: it needs "
            f"CUDA devices (this run is on {device})"
        )
    data_config = _data_config(config)
    if source is None:
        source = build_loader(data_config, rank=info.rank, world_size=info.world_size, seed=tc.seed)
    raw_model = build_model(config.model, vocab_size=source.vocab_size, seq_len=source.seq_len, device=device)
    if not fsdp:  # FSDP2 moves each layer to the device as it shards it: no rank holds the whole model there
        raw_model = raw_model.to(device)
    autocast_dtype = _resolve_dtype(tc.dtype, device)
    if tc.activation_checkpointing:
        raw_model.enable_activation_checkpointing()
    if fsdp:
        # Shard before the optimizer exists: it must hold the sharded parameters.
        shard_fsdp(
            raw_model,
            device=device,
            param_dtype=autocast_dtype,
            cpu_offload=tc.fsdp_cpu_offload,
            reshard_after_forward=tc.fsdp_reshard_after_forward,
        )
    optimizer = build_optimizer(raw_model, tc, device)
    schedule = WarmupCosine(tc.lr, tc.warmup_steps, tc.max_steps, tc.min_lr_ratio)
    loader = source.loader

    step = 0
    resume_from = _find_resume(config, ckpt_dir)
    if resume_from is not None:
        step = _resume(resume_from, raw_model, optimizer, loader, info, log, sharded=fsdp)

    model: nn.Module = raw_model
    if tc.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    if info.enabled and not fsdp:
        model = wrap_ddp(model, device)
    if info.is_main:
        (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    log.info(f"data: {source.description}")
    what = f"{config.model.hf} (Hugging Face)" if config.model.hf else "reference decoder"
    parallel = "FSDP2" if fsdp else "DDP" if info.enabled else "single process"
    log.info(
        f"model: {what}, {_count_parameters(raw_model):,} parameters, attention "
        f"{raw_model.resolved_backend(device)}, device {device} x {info.world_size} ({parallel}), "
        f"{'bf16' if autocast_dtype else 'fp32'}{', activation checkpointing' if tc.activation_checkpointing else ''}"
    )

    batches: Iterator[Batch] = iter(loader)

    def next_batch() -> Batch:
        nonlocal batches
        try:
            batch = next(batches)
        except StopIteration:  # a finite loader: start another pass
            batches = iter(loader)
            batch = next(batches)
        # Loaders hand out int64 already (ChatDataset and PackedBatches widen once): only move them.
        # Prefix-tree rows bring two more arrays; batch_keys refuses half of them.
        # Per-label loss weights (messages weighted other than 1) travel as float32.
        keys = (*batch_keys(batch, "a loader batch"), *(("loss_weights",) if "loss_weights" in batch else ()))
        return {k: batch[k].to(device=device, non_blocking=True) for k in keys}

    result = TrainResult(raw_model, step, source=source)
    # Totals since the last log line, kept on the device so that no step waits for the GPU.
    dtypes = (torch.float32, torch.long, torch.long, torch.float32)
    zeros = [torch.zeros((), device=device, dtype=dtype) for dtype in dtypes]
    window = StepTotals(*zeros)
    window_start = time.perf_counter()
    while step < tc.max_steps:
        micro_batches = [next_batch() for _ in range(tc.grad_accum_steps)]
        lr = schedule(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        totals = forward_backward(model, raw_model, micro_batches, info=info, autocast_dtype=autocast_dtype)
        grad_norm = clip_grad_norm(raw_model.parameters(), tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        for total, add in zip(window, totals):
            total += add
        if step % tc.log_every == 0 or step == tc.max_steps:
            loss_sum, trained, tokens, weight = (t.item() for t in window)  # waits for the GPU: time after it
            elapsed = time.perf_counter() - window_start
            record = {
                "step": step,
                "max_steps": tc.max_steps,
                "loss": loss_sum / weight if weight > 0 else 0.0,
                "lr": lr,
                "grad_norm": grad_norm.item(),
                "tokens": tokens,
                "trained_tokens": trained,
                "tokens_per_s": tokens / elapsed,
                "trained_tokens_per_s": trained / elapsed,
                "elapsed_s": elapsed,
            }
            result.history.append(record)
            log.record(record)
            for total in window:
                total.zero_()
            window_start = time.perf_counter()

        every = config.checkpoint.every
        if every > 0 and (step % every == 0 or step == tc.max_steps):
            result.checkpoint = _save(
                config, ckpt_dir, step, raw_model, optimizer, loader, info, sharded=fsdp
            )
            log.info(f"saved {result.checkpoint}")
    result.step = step
    if isinstance(raw_model, HFCausalLM):
        result.final_model = _export(config, data_config, raw_model, info, sharded=fsdp)
        log.info(f"saved the model for from_pretrained in {result.final_model}")
    return result


def _data_config(config: TrainConfig) -> DataConfig:
    """``config.data``, with a Hugging Face model's own folder as the default tokenizer."""
    data = config.data
    if config.model.hf is not None and data.source == "dataset" and data.tokenizer is None:
        return dataclasses.replace(data, tokenizer=config.model.hf)
    return data


def _count_parameters(model: nn.Module) -> int:
    """Unique parameters of the whole model (a sharded model counts its full shapes)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _export(
    config: TrainConfig, data: DataConfig, model: HFCausalLM, info: Distributed, *, sharded: bool
) -> Path:
    """Save the trained Hugging Face model with the tokenizer and template that encoded its data."""
    from turnpack.tokenizer import EXAMPLE

    out = Path(config.train.out_dir) / "final_model"
    state = None
    if sharded:  # gather the full weights (collective), onto rank 0's CPU
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if info.is_main:
        template = Path(data.chat_template).read_text(encoding="utf-8") if data.chat_template else None
        tokenizer_dir = tokenizer_json = None
        if data.source == "example" or data.tokenizer == EXAMPLE:
            from turnpack.train import examples

            tokenizer_json, template = examples.TOKENIZER_PATH, template or examples.CHAT_TEMPLATE
        else:
            spec = Path(data.tokenizer or model.source)
            tokenizer_dir, tokenizer_json = (spec, None) if spec.is_dir() else (None, spec)
        save_pretrained(
            model,
            out,
            state_dict=state,
            tokenizer_dir=tokenizer_dir,
            tokenizer_json=tokenizer_json,
            chat_template=template,
        )
    if info.enabled:
        dist.barrier()
    return out


def _resume(
    path: Path,
    raw_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Any,
    info: Distributed,
    log: _Logger,
    *,
    sharded: bool,
) -> int:
    """Restore everything :func:`_save` wrote; return the step to continue from."""
    if is_sharded(path) != sharded:
        kind = "a distributed (FSDP2)" if is_sharded(path) else "a single-file (DDP or one process)"
        raise RuntimeError(
            f"{path} is {kind} checkpoint; this run uses {'FSDP2' if sharded else 'no FSDP2'}: "
            "resume with the train.data_parallel that saved it"
        )
    # (load_sharded_checkpoint is collective.) The learning rate follows from the step (schedule.py).
    ckpt = load_sharded_checkpoint(path, raw_model, optimizer) if sharded else load_checkpoint(path)
    if len(ckpt["ranks"]) != info.world_size:
        raise RuntimeError(
            f"{path} was written by {len(ckpt['ranks'])} processes, this run has {info.world_size}"
        )
    if not sharded:
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    mine = ckpt["ranks"][info.rank]
    if isinstance(loader, StatefulLoader):
        loader.load_state_dict(mine["loader"])
    else:
        log.info("warning: the data loader has no load_state_dict(); data order restarts from the top")
    restore_rng_state(mine["rng"])
    step = int(ckpt["step"])
    log.info(f"resumed from {path} at step {step}")
    return step


def _save(
    config: TrainConfig,
    ckpt_dir: Path,
    step: int,
    raw_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Any,
    info: Distributed,
    *,
    sharded: bool,
) -> Path:
    """Collect every rank's loader + RNG state on rank 0 and write one checkpoint file
    (or, ``sharded``, a distributed checkpoint folder that every rank writes its shards into)."""
    mine = {
        "loader": loader.state_dict() if isinstance(loader, StatefulLoader) else None,
        "rng": capture_rng_state(),
    }
    ranks = _gather(mine, info)
    if sharded:
        state = {"step": step, "ranks": ranks, "config": config.to_dict()} if info.is_main else None
        path = save_sharded_checkpoint(sharded_checkpoint_path(ckpt_dir, step), raw_model, optimizer, state)
        if info.is_main:
            prune_checkpoints(ckpt_dir, config.checkpoint.keep)
        dist.barrier()
        return path
    path = checkpoint_path(ckpt_dir, step)
    if info.is_main:
        payload = {
            "step": step,
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "ranks": ranks,
            "config": config.to_dict(),
        }
        save_checkpoint(path, payload)
        prune_checkpoints(ckpt_dir, config.checkpoint.keep)
    if info.enabled:
        dist.barrier()  # nobody runs ahead (or exits) before the checkpoint exists
    return path


# ----------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="turnpack train",
        description="Train the reference model on packed chat batches (run under torchrun for DDP).",
        epilog="Example: turnpack train --config run.toml --set train.lr=1e-3 --set data.batch_size=4",
    )
    p.add_argument(
        "--config",
        help='a .toml or .json config file, or "example" for the built-in example run (default: defaults)',
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable); VALUE is JSON or a bare string",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``turnpack train``."""
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except (ConfigError, OSError) as e:
        print(f"turnpack train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    train(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
