"""Training checkpoints: everything needed to continue a run exactly where it stopped.

One file per saved step, ``step_00000100.pt``, holding

* ``model``, ``optimizer``: their ``state_dict()`` (identical on every rank
  under DDP, so rank 0's copy is saved);
* ``step``: optimizer steps completed (the learning-rate schedule is a function
  of it, see :mod:`turnpack.train.schedule`);
* ``ranks``: one entry per rank with its data-loader state and RNG states,
  because each rank reads its own shard and draws its own random numbers;
* ``config``: the run's config as a plain dict, for reference.

Files are written to a temporary name and renamed, so a run killed while saving
never leaves a truncated checkpoint behind as the newest one.

FSDP2 runs (``train.data_parallel = "fsdp"``) write a *distributed* checkpoint
instead, a folder ``step_00000100/``: every rank writes its own shards of the
model and optimizer state with ``torch.distributed.checkpoint`` (DCP), and
rank 0 writes ``trainer_state.pt`` with ``step``, ``ranks`` and ``config`` as
above.  The folder is written under a temporary name and renamed once every
rank has finished.  DCP reshards on load, but the data-loader states are per
rank, so a run resumes with the world size that saved it.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "TRAINER_STATE",
    "capture_rng_state",
    "checkpoint_path",
    "is_sharded",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_sharded_checkpoint",
    "prune_checkpoints",
    "restore_rng_state",
    "save_checkpoint",
    "save_sharded_checkpoint",
    "sharded_checkpoint_path",
]

#: A checkpoint file (``step_N.pt``) or a distributed checkpoint folder (``step_N``).
_NAME = re.compile(r"^step_(\d+)(\.pt)?$")
#: A save killed midway leaves its temporary name behind.
_STALE = re.compile(r"^step_\d+(\.pt)?\.tmp$")
#: The file beside a distributed checkpoint's shards with everything but the model and optimizer.
TRAINER_STATE = "trainer_state.pt"


def checkpoint_path(directory: str | Path, step: int) -> Path:
    """Where the checkpoint file of ``step`` lives in ``directory``."""
    return Path(directory) / f"step_{step:08d}.pt"


def sharded_checkpoint_path(directory: str | Path, step: int) -> Path:
    """Where the distributed (FSDP2) checkpoint folder of ``step`` lives in ``directory``."""
    return Path(directory) / f"step_{step:08d}"


def is_sharded(path: str | Path) -> bool:
    """True for a distributed checkpoint folder, False for a checkpoint file."""
    return Path(path).is_dir()


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest step first (empty if there is no directory)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in directory.iterdir()
        if (m := _NAME.match(p.name)) and (p.is_file() if m.group(2) else (p / TRAINER_STATE).is_file())
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``directory``, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep <= 0`` keeps everything), and the
    temporary files or folders of saves that never finished.  Call it only when no save is under way."""
    # Leftovers of saves that were killed midway (a complete save renames its .tmp into place).
    directory = Path(directory)
    for stale in directory.glob("step_*.tmp"):
        if _STALE.match(stale.name):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
    if keep <= 0:
        return
    for path in list_checkpoints(directory)[:-keep]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def capture_rng_state() -> dict[str, Any]:
    """The state of every random number generator training may touch on this process."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (see the module docstring) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU (callers move state to their devices)."""
    # RNG states and loader states are plain Python/numpy objects, hence weights_only=False;
    # only load checkpoints you wrote yourself.
    return torch.load(Path(path), map_location="cpu", weights_only=False)


def save_sharded_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any] | None,
) -> Path:
    """Write a distributed checkpoint folder; every rank calls this (it is collective).

    Args:
        path: the folder (:func:`sharded_checkpoint_path`).
        model, optimizer: the FSDP2-sharded model and its optimizer; each rank writes its shards.
        trainer_state: ``step``, ``ranks`` and ``config`` (see the module docstring), given on
            rank 0 (None elsewhere), which writes it and renames the folder into place.
    """
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    main = trainer_state is not None
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)  # a stale folder of the same step (an earlier run)
        tmp.mkdir(parents=True)
    dist.barrier()  # the folder exists before anyone writes into it
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(tmp))
    if main:
        torch.save(trainer_state, tmp / TRAINER_STATE)
        os.replace(tmp, path)
    dist.barrier()  # nobody reads (or exits) before the folder is in place
    return path


def load_sharded_checkpoint(
    path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load a distributed checkpoint into the sharded ``model`` and ``optimizer`` (collective).

    Returns its trainer state (``step``, ``ranks``, ``config``).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    path = Path(path)
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    return torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=False)
