"""Training on packed chat batches (``turnpack train``), in one folder.

Read in this order; each module has one job:

* :mod:`~turnpack.train.config`     - the run's configuration: typed sections, TOML/JSON, ``--set`` overrides
* :mod:`~turnpack.train.data`       - where batches come from: the example dialogues or a ``ChatDataset``
* :mod:`~turnpack.train.examples`   - the bundled example dataset (register-machine dialogues) and its
  tokenizer, in ``example_data/``
* :mod:`~turnpack.train.model`      - the reference Llama/Qwen-style decoder (document masks from
  :mod:`turnpack.attention`)
* :mod:`~turnpack.train.hf_model`   - a pretrained Hugging Face checkpoint behind the same interface,
  and saving it for ``from_pretrained``
* :mod:`~turnpack.train.schedule`   - warmup + cosine learning rate, a pure function of the step
* :mod:`~turnpack.train.parallel`   - DDP or FSDP2 (``fully_shard`` per decoder layer)
* :mod:`~turnpack.train.checkpoint` - checkpoint files (distributed ones under FSDP2): everything needed
  to resume exactly
* :mod:`~turnpack.train.loop`       - the loop itself (loss over the global batch, resume) and ``main``
* :mod:`~turnpack.train.demo`       - the short CPU run ``turnpack demo`` ends with

The names below are imported on first use, so ``import turnpack.train`` (and ``turnpack.train.config``,
``turnpack.train.examples``) works without torch; the loop, model, data and demo need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from turnpack.train.config import ConfigError, TrainConfig, apply_override, load_config
    from turnpack.train.data import DataSource, PackedBatches, build_loader
    from turnpack.train.demo import run_demo
    from turnpack.train.hf_model import HFCausalLM, load_hf_model, save_pretrained
    from turnpack.train.loop import (
        Distributed,
        StepTotals,
        TrainResult,
        build_model,
        build_optimizer,
        forward_backward,
        main,
        train,
    )
    from turnpack.train.model import ModelConfig, Transformer, config_100m, config_tiny

# public name -> the module that defines it
_LAZY = {
    "ConfigError": "config",
    "TrainConfig": "config",
    "apply_override": "config",
    "load_config": "config",
    "DataSource": "data",
    "PackedBatches": "data",
    "build_loader": "data",
    "run_demo": "demo",
    "HFCausalLM": "hf_model",
    "load_hf_model": "hf_model",
    "save_pretrained": "hf_model",
    "Distributed": "loop",
    "StepTotals": "loop",
    "TrainResult": "loop",
    "build_model": "loop",
    "build_optimizer": "loop",
    "forward_backward": "loop",
    "main": "loop",
    "train": "loop",
    "ModelConfig": "model",
    "Transformer": "model",
    "config_100m": "model",
    "config_tiny": "model",
}

__all__ = [
    "ConfigError",
    "DataSource",
    "Distributed",
    "HFCausalLM",
    "ModelConfig",
    "PackedBatches",
    "StepTotals",
    "TrainConfig",
    "TrainResult",
    "Transformer",
    "apply_override",
    "build_loader",
    "build_model",
    "build_optimizer",
    "config_100m",
    "config_tiny",
    "forward_backward",
    "load_config",
    "load_hf_model",
    "main",
    "run_demo",
    "save_pretrained",
    "train",
]
assert sorted(__all__) == sorted(_LAZY)  # one list to read, one map to load from: they must agree


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"turnpack.train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'turnpack.train' has no attribute {name!r}")
