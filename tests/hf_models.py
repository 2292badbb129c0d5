"""Small Hugging Face model folders built from configs (no download), with the example tokenizer.

A folder holds what ``save_pretrained`` writes (``config.json``, ``model.safetensors``) plus the
bundled example tokenizer (``tokenizer.json``, a ``tokenizer_config.json`` and
``chat_template.jinja``), so ``turnpack train --set model.hf=FOLDER`` and
``turnpack.ChatTokenizer.from_dir(FOLDER)`` both work on it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import transformers
from turnpack.train import examples

#: Tiny decoder sizes: a training step takes milliseconds on a CPU.
SIZES = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 1024,
}


def tiny_config(
    arch: str = "qwen3", vocab_size: int = examples.VOCAB_SIZE, **overrides
) -> transformers.PretrainedConfig:
    """A tiny Qwen3 or Llama config."""
    sizes = {**SIZES, "vocab_size": vocab_size, **overrides}
    if arch == "qwen3":
        return transformers.Qwen3Config(tie_word_embeddings=True, **sizes)
    if arch == "llama":
        return transformers.LlamaConfig(tie_word_embeddings=False, **sizes)
    raise ValueError(arch)


def write_example_tokenizer(folder: Path) -> None:
    """The example tokenizer and its ChatML template, as a Hugging Face tokenizer folder."""
    shutil.copyfile(examples.TOKENIZER_PATH, folder / "tokenizer.json")
    (folder / "chat_template.jinja").write_text(examples.CHAT_TEMPLATE, encoding="utf-8")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": examples.IM_END,
        "pad_token": examples.PAD,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def tiny_model_dir(folder: Path, arch: str = "qwen3", *, seed: int = 0, **overrides) -> Path:
    """Write a randomly initialised tiny model (fixed seed) and the example tokenizer to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(arch, **overrides))
    model.save_pretrained(folder)
    write_example_tokenizer(folder)
    return folder
