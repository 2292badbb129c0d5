"""Adapters that feed turnpack's packed rows to the trainers people already use.

Each submodule imports its framework lazily (only when it is imported itself), so
``import turnpack`` and ``import turnpack.integrations`` import no framework:

* :mod:`turnpack.integrations.hf`: Hugging Face ``transformers`` (``Trainer``) and TRL
  (``SFTTrainer``): a dataset and a collator for padding-free packed training.
* :mod:`turnpack.integrations.torchtitan`: a torchtitan dataloader whose batches carry
  multi-turn chat SFT rows: ``TurnpackDataLoader``, selected in a torchtitan (0.3.0) config as
  ``Trainer.Config(dataloader=TurnpackDataLoader.Config(dataset_path=...))``; it yields
  ``({"input", "positions"}, labels)`` with torchtitan's next-token labels (-100 ignored) and
  positions that restart per document (torchtitan's flex/varlen document masks), and checkpoints
  exactly, per data-parallel rank, through torchtitan's ``CheckpointManager``.
"""
