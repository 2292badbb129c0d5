"""Adapters that feed turnpack's packed rows to the trainers people already use.

Each submodule imports its framework lazily (only when it is imported itself), so
``import turnpack`` and ``import turnpack.integrations`` import no framework:

* :mod:`turnpack.integrations.hf`: Hugging Face ``transformers`` (``Trainer``) and TRL
  (``SFTTrainer``): a dataset and a collator for padding-free packed training.
* :mod:`turnpack.integrations.torchtitan`: a torchtitan dataloader whose batches carry
  multi-turn chat SFT rows.
"""
