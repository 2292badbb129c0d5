"""Running ``turnpack train`` in two processes under torchrun (gloo, CPU), for test_ddp and test_fsdp."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: The shared run: a tiny reference model on the example dialogues, 6 steps, checkpoints at 3 and 6.
STEPS = 6
SETTINGS = {
    "model.dim": 32,
    "model.n_layers": 2,
    "model.n_heads": 4,
    "model.n_kv_heads": 2,
    "model.ffn_hidden": 64,
    "data.num_examples": 120,
    "data.seq_len": 512,
    "data.batch_size": 2,  # rows per rank
    "train.max_steps": STEPS,
    "train.warmup_steps": 2,
    "train.lr": 1e-2,
    "train.log_every": 1,
    "train.device": "cpu",
    "checkpoint.every": 3,
    "checkpoint.keep": 0,
}


def write_config(path: Path, out_dir: Path, base: dict | None = None, **extra) -> Path:
    """A JSON config of ``base`` (default :data:`SETTINGS`) plus ``extra`` ("section.key" keys)."""
    config: dict = {}
    for key, value in {
        **(SETTINGS if base is None else base),
        "train.out_dir": str(out_dir),
        **extra,
    }.items():
        section, name = key.split(".")
        config.setdefault(section, {})[name] = value
    path.write_text(json.dumps(config))
    return path


def torchrun(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m turnpack train --config CONFIG``; asserts it succeeded."""
    # One thread per process: two processes share two cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TURNPACK_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "turnpack", "train", "--config", str(config),
    ]  # fmt: skip
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def logged_losses(out_dir: Path) -> dict[int, float]:
    """Step -> loss from a run's log.jsonl."""
    records = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records}
