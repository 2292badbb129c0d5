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
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "capture_rng_state",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "restore_rng_state",
    "save_checkpoint",
]

_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_path(directory: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives in ``directory``."""
    return Path(directory) / f"step_{step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest step first (empty if there is no directory)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``directory``, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep <= 0`` keeps everything)."""
    if keep <= 0:
        return
    for path in list_checkpoints(directory)[:-keep]:
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
