"""A torchtitan dataloader for multi-turn chat SFT on turnpack's packed rows.

torchtitan (0.3.0) builds its dataloader from the job config: ``Trainer.Config.dataloader`` holds a
``BaseDataLoader.Config``, and the trainer calls (``torchtitan/trainer.py``)::

    config.dataloader.build(dp_world_size=, dp_rank=, tokenizer=, seq_len=, local_batch_size=,
                            snapshot_every_n_steps=)

which constructs the config's owner class, iterates it once for ``(input_dict, labels)`` pairs and
checkpoints it as the ``"dataloader"`` entry of its ``CheckpointManager`` (DCP, through the Stateful
``state_dict()`` / ``load_state_dict()``). :class:`TurnpackDataLoader` is such a class: it reads
conversations with :class:`turnpack.data.ChatDataset` (this data-parallel rank's share), through
:class:`turnpack.data.ChatDataLoader` (exact resume, with or without worker processes), and yields::

    ({"input": input_ids, "positions": position_ids}, labels)     # each int64 [local_batch_size, seq_len]

* ``labels`` are in torchtitan's convention, which is turnpack's: already the next token
  (``labels[t]`` is the target of ``input[t]``; torchtitan's datasets yield ``tokens[:-1]`` and
  ``tokens[1:]``), ``-100`` (``torchtitan.components.loss.IGNORE_INDEX``) where nothing is trained: the
  prompt, every document's last position (never a target across a document boundary) and padding.
  So they pass through unchanged.
* ``positions`` restart at 0 for every packed document and for the padding run at the end of a row.
  torchtitan starts a new document wherever ``positions == 0`` to build its FlexAttention block mask
  (``get_causal_mask_mod`` and ``get_efficient_causal_mask_mod_for_packed_document``) or its varlen
  ``cu_seqlens`` (``create_varlen_metadata_for_document``), so the padding run is a document of its
  own and every token attends exactly to the earlier tokens of its own conversation
  (``turnpack.attention.dense_document_mask(document_ids)``; tested). Nothing else goes into
  ``input_dict``: the trainer passes every other key to the model's ``forward`` as a keyword.
* Prefix-tree rows (``prefix_starts`` / ``prefix_ends`` with a non-empty range, see
  :mod:`turnpack.attention`) cannot be expressed this way: a branch's positions continue from its
  branch point and it must see its trunk, while torchtitan's masks know only where positions
  restart. :func:`to_torchtitan` raises ``ValueError`` on such a batch; train tree rows with
  ``turnpack train`` or the Hugging Face adapter (:mod:`turnpack.integrations.hf`), which pass the
  explicit tree mask.

Selecting it
------------
As torchtitan's own dataloaders are selected: a config function (what ``--module``/``--config`` name)
returns a ``Trainer.Config`` whose ``dataloader`` is ``TurnpackDataLoader.Config(...)``; its fields can
then be overridden on the command line (``--dataloader.seed 1``, ``--dataloader.dataset_path ...``)::

    # my_sft.py (in the folder you launch from)
    from torchtitan.models.qwen3.config_registry import sft_qwen3_8b_math
    from turnpack.integrations.torchtitan import TurnpackDataLoader

    def qwen3_8b_chat():
        config = sft_qwen3_8b_math()  # model, optimizer, checkpoint (initial_load_in_hf) ...
        config.dataloader = TurnpackDataLoader.Config(dataset_path="data/chats.jsonl")
        return config

    # torchrun --nproc_per_node 8 -m torchtitan.train --module my_sft --config qwen3_8b_chat \\
    #     --hf_assets_path ./Qwen3-8B --dataloader.seed 1

The tokenizer
-------------
torchtitan hands the dataloader its own tokenizer (``config.tokenizer.build(tokenizer_path=
hf_assets_path)``, a ``HuggingFaceTokenizer``). It renders the template with plain jinja2 and encodes
text; it does not find what each assistant turn must learn. turnpack encodes with its own
:class:`turnpack.ChatTokenizer` (the template rendered as transformers renders it, supervision per
turn): ``chat_tokenizer`` names it (anything :func:`turnpack.load_tokenizer` takes: a Hugging Face
model folder, a tokenizer.json, ``"example"``) and defaults to the folder torchtitan's tokenizer was
loaded from (``hf_assets_path``), so both read the same files. With ``check_tokenizer`` (default) the
two must agree on the vocabulary size and on the ids of turnpack's special tokens. A folder written
by ``turnpack prepare`` holds packed rows already and needs no tokenizer (its ``seq_len`` must be
``training.seq_len``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torchtitan.components.dataloader import BaseDataLoader
from torchtitan.components.loss import IGNORE_INDEX as TORCHTITAN_IGNORE_INDEX

from turnpack._core import ChatTokenizer
from turnpack.data.batching import IGNORE_INDEX
from turnpack.data.dataset import ChatDataset
from turnpack.data.loader import ChatDataLoader
from turnpack.data.options import DEFAULT_BUFFER, DEFAULT_MAX_OPEN_ROWS, PackingOptions
from turnpack.data.sources import prepared_dir
from turnpack.tokenizer import load_tokenizer

__all__ = ["TurnpackDataLoader", "check_tokenizers", "to_torchtitan"]

logger = logging.getLogger(__name__)

# Both sides spell "not trained" the same way; the labels pass through unchanged because of it.
if IGNORE_INDEX != TORCHTITAN_IGNORE_INDEX:  # pragma: no cover - a future torchtitan could change it
    raise ImportError(f"torchtitan ignores label {TORCHTITAN_IGNORE_INDEX}, turnpack writes {IGNORE_INDEX}")


def _refuse_tree_rows(batch: Mapping[str, torch.Tensor]) -> None:
    starts, ends = batch.get("prefix_starts"), batch.get("prefix_ends")
    if starts is None and ends is None:
        return
    if starts is None or ends is None:
        raise ValueError("the batch has only one of prefix_starts / prefix_ends: prefix-tree rows need both")
    if bool((torch.as_tensor(starts) < torch.as_tensor(ends)).any()):
        raise ValueError(
            "this batch holds prefix-tree rows (prefix_starts/prefix_ends with non-empty ranges): torchtitan "
            "builds its attention masks from positions (a new document where positions restart at 0), which "
            "cannot let a branch see its trunk, so it would train every branch without its context. Train "
            "tree rows with turnpack's own loop (turnpack train) or the Hugging Face adapter "
            "(turnpack.integrations.hf), which pass the explicit tree mask"
        )


def to_torchtitan(batch: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A `ChatDataset` batch as torchtitan's ``({"input", "positions"}, labels)`` pair.

    turnpack's ``labels`` are already shifted (``labels[t]`` is the target of ``input_ids[t]``) with
    -100 where not trained, which is torchtitan's convention, so nothing is converted.

    Raises:
        ValueError: the batch holds prefix-tree rows (``prefix_starts`` / ``prefix_ends`` with a
            non-empty range), which torchtitan's position-derived masks cannot express; rows whose
            ranges are all empty are plain packed rows and pass.
    """
    _refuse_tree_rows(batch)
    return {"input": batch["input_ids"], "positions": batch["position_ids"]}, batch["labels"]


def check_tokenizers(chat_tokenizer: ChatTokenizer, tokenizer: Any) -> None:
    """Raise ValueError unless torchtitan's `tokenizer` and turnpack's `chat_tokenizer` agree.

    Checked where `tokenizer` can tell: its vocabulary size (``get_vocab_size()``) and the id of every
    special token of `chat_tokenizer` (``token_to_id``).
    """
    get_vocab_size = getattr(tokenizer, "get_vocab_size", None)
    if callable(get_vocab_size):
        theirs = int(get_vocab_size())
        if theirs != chat_tokenizer.vocab_size:
            raise ValueError(
                f"torchtitan's tokenizer has {theirs} tokens, turnpack's chat tokenizer "
                f"{chat_tokenizer.vocab_size}: they are not the same tokenizer (set dataloader.chat_tokenizer "
                "to the model's folder, or dataloader.check_tokenizer=False if this is intended)"
            )
    token_to_id = getattr(tokenizer, "token_to_id", None)
    if callable(token_to_id):
        for token in chat_tokenizer.special_tokens:
            ours, theirs = chat_tokenizer.token_to_id(token), token_to_id(token)
            if ours != theirs:
                raise ValueError(
                    f"special token {token!r} is id {ours} for turnpack's chat tokenizer but {theirs} for "
                    "torchtitan's tokenizer (set dataloader.check_tokenizer=False if this is intended)"
                )


class TurnpackDataLoader(BaseDataLoader):
    """Packed, exactly supervised multi-turn chat batches for torchtitan's trainer.

    Built by ``TurnpackDataLoader.Config(...).build(dp_world_size=, dp_rank=, tokenizer=, seq_len=,
    local_batch_size=)`` as torchtitan's trainer does; see the module docstring. Each batch has
    ``local_batch_size`` rows of ``seq_len`` tokens (with ``drop_last``, the default; else an epoch's
    last batch can have fewer rows).

    Checkpoints exactly at every batch (the batches after ``load_state_dict`` are those an
    uninterrupted run would have yielded, with any ``num_workers``), so ``snapshot_every_n_steps`` is
    not needed and ignored. The state is ``{"dp_rank_<r>": <JSON text>, "world_size": <dp degree>}``,
    keyed by data-parallel rank like torchtitan's ``ParallelAwareDataloader``, so that DCP keeps one
    entry per rank (and shares the world size); resuming needs the same dp degree, seed, batch size,
    ``seq_len``, packing options and ``num_workers``.
    """

    @dataclass(kw_only=True, slots=True)
    class Config(BaseDataLoader.Config):
        """``dataset_path`` (inherited) names the data; ``dataset`` (inherited) is not used."""

        # dataset_path: str | None -- JSONL/JSON/Parquet file, folder or glob of conversations
        # (OpenAI `messages` or ShareGPT `conversations` records), or a `turnpack prepare` folder.

        chat_tokenizer: str | None = None
        """turnpack tokenizer: a Hugging Face model folder, a tokenizer.json or "example". Default: the
        folder torchtitan's tokenizer was loaded from (hf_assets_path). Not used for prepared folders."""

        chat_template: str | None = None
        """A Jinja chat template file that replaces the tokenizer's own."""

        check_tokenizer: bool = True
        """Require torchtitan's tokenizer and the chat tokenizer to agree (vocab size, special tokens)."""

        shuffle: bool = True
        """Shuffle per epoch (source files, then a buffered shuffle; prepared rows: a permutation)."""

        seed: int = 0
        """Seed of the shuffles (with the epoch and the reader)."""

        shuffle_buffer: int = 8192
        """Records in the buffered shuffle of streamed conversations."""

        infinite: bool = True
        """Loop over epochs forever (ranks can hold different numbers of batches: stop by step count);
        an epoch without a single batch for this rank raises instead of looping. False: one epoch,
        then the iteration ends (torchtitan's trainer then stops)."""

        drop_last: bool = True
        """Drop each epoch's short last batch (its samples are counted as dropped), so every batch has
        local_batch_size rows, as CUDA graphs and compiled models need."""

        supervise: Literal["assistant", "last_assistant", "all"] = "assistant"
        """Which messages are trained."""

        encode_kwargs: dict[str, Any] = field(default_factory=dict)
        """More encoding options (eot, start, boundary, ...) and template variables, as
        ChatTokenizer.encode_batch takes them, e.g. {"enable_thinking": false}."""

        fields: Literal["auto", "messages", "sharegpt"] = "auto"
        """Record layout."""

        on_error: Literal["raise", "skip"] = "raise"
        """A bad record: raise an error naming its file and line, or skip and count it."""

        buffer: int = DEFAULT_BUFFER
        """Samples per best-fit packing round."""

        max_open_rows: int = DEFAULT_MAX_OPEN_ROWS
        """Rows kept open for later samples."""

        overflow: Literal["drop", "truncate"] = "drop"
        """Conversations longer than seq_len: dropped (counted) or truncated."""

        pad_id: int | None = None
        """Token filling the end of a row (never trained, a document of its own). Default: turnpack's
        (0), or a prepared folder's own."""

        num_workers: int = 0
        """DataLoader worker processes encoding and packing (0: in the training process)."""

        num_threads: int | None = None
        """Encoding threads per reader (default: 1 in a worker; else TURNPACK_NUM_THREADS or all cores,
        which with several ranks per node oversubscribes the CPUs: set it)."""

        pin_memory: bool = False
        """Copy batches to pinned memory."""

        prefetch_factor: int | None = None
        """Batches loaded in advance by each worker (num_workers > 0 only)."""

    def __init__(
        self,
        config: Config,
        *,
        dp_world_size: int,
        dp_rank: int,
        tokenizer: Any = None,
        seq_len: int,
        local_batch_size: int,
        snapshot_every_n_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        del snapshot_every_n_steps, kwargs  # exact at every batch; other trainer arguments are not needed
        if not config.dataset_path:
            raise ValueError(
                "TurnpackDataLoader needs dataloader.dataset_path (conversations or a prepared folder)"
            )
        self.config = config
        self.dp_rank, self.dp_world_size = dp_rank, dp_world_size
        self._rank_id = f"dp_rank_{dp_rank}"
        common: dict[str, Any] = {
            "batch_size": local_batch_size,
            "shuffle": config.shuffle,
            "seed": config.seed,
            "shuffle_buffer": config.shuffle_buffer,
            "rank": dp_rank,
            "world_size": dp_world_size,
            "fields": config.fields,
            "on_error": config.on_error,
            "num_threads": config.num_threads,
            # One epoch per pass of the ChatDataLoader; __iter__ runs the passes (see there).
            "epochs": 1,
            "drop_last": config.drop_last,
        }
        if prepared_dir(config.dataset_path) is not None:
            self.chat_tokenizer: ChatTokenizer | None = None
            dataset = ChatDataset(config.dataset_path, None, seq_len, pad_id=config.pad_id, **common)
        else:
            self.chat_tokenizer = self._load_chat_tokenizer(config, tokenizer)
            encode_kwargs = dict(config.encode_kwargs)
            if "supervise" in encode_kwargs:
                raise ValueError("set dataloader.supervise, not encode_kwargs['supervise']")
            encode_kwargs["supervise"] = config.supervise
            packing: dict[str, Any] = {
                "buffer": config.buffer,
                "max_open_rows": config.max_open_rows,
                "overflow": config.overflow,
            }
            if config.pad_id is not None:
                packing["pad_id"] = config.pad_id
            options = PackingOptions.from_encode_kwargs(encode_kwargs, **packing)
            dataset = ChatDataset(
                config.dataset_path, self.chat_tokenizer, seq_len, options=options, **common
            )
        loader_kwargs: dict[str, Any] = {"pin_memory": config.pin_memory}
        if config.num_workers > 0 and config.prefetch_factor is not None:
            loader_kwargs["prefetch_factor"] = config.prefetch_factor
        self.dataset = dataset
        self._loader = ChatDataLoader(dataset, num_workers=config.num_workers, **loader_kwargs)

    @staticmethod
    def _load_chat_tokenizer(config: Config, tokenizer: Any) -> ChatTokenizer:
        spec = config.chat_tokenizer
        if spec is None:
            spec = getattr(tokenizer, "tokenizer_path", None)  # torchtitan's HuggingFaceTokenizer has it
            if spec is None:
                raise ValueError(
                    "set dataloader.chat_tokenizer (a Hugging Face model folder): torchtitan's tokenizer "
                    f"({type(tokenizer).__name__}) does not say which folder it was loaded from"
                )
        chat_tokenizer = load_tokenizer(spec, config.chat_template)
        if not chat_tokenizer.has_chat_template:
            raise ValueError(f"{spec} has no chat template: set dataloader.chat_template")
        if config.check_tokenizer and tokenizer is not None:
            check_tokenizers(chat_tokenizer, tokenizer)
        return chat_tokenizer

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        # Epoch after epoch, one ChatDataLoader pass each (rather than ChatDataset(epochs=None)), so
        # that data too small for one batch per epoch on this rank is an error and not an endless
        # loop that yields nothing. The pass after a resume can be legitimately empty (the state was
        # saved after an epoch's last batch), a second empty pass in a row cannot.
        empty_passes = 0
        while True:
            yielded = 0
            for batch in self._loader:
                yielded += 1
                yield to_torchtitan(batch)
            if not self.config.infinite:
                return
            empty_passes = empty_passes + 1 if yielded == 0 else 0
            if empty_passes == 2:
                raise RuntimeError(
                    f"an epoch of dp rank {self.dp_rank}'s share of {self.config.dataset_path} holds no "
                    f"batch of {self.dataset.batch_size} rows of {self.dataset.seq_len} tokens "
                    f"(sample accounting: {self.stats}); use more data, smaller batches or drop_last=False"
                )

    def state_dict(self) -> dict[str, Any]:
        # One JSON string per dp rank: DCP stores it as one opaque item, whatever its nesting.
        return {self._rank_id: json.dumps(self._loader.state_dict()), "world_size": self.dp_world_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:  # as in ParallelAwareDataloader: an empty state is a fresh start
            return
        if self._rank_id not in state_dict:
            logger.warning(
                "dataloader state has no entry for dp rank %d (expected key %s): starting from the beginning",
                self.dp_rank,
                self._rank_id,
            )
            return
        if state_dict.get("world_size") != self.dp_world_size:
            raise ValueError(
                f"the dataloader state was saved with dp degree {state_dict.get('world_size')}, this run has "
                f"{self.dp_world_size}: exact resume needs the same data-parallel degree"
            )
        state = state_dict[self._rank_id]
        if not isinstance(state, str):
            raise ValueError(
                f"the dataloader state of {self._rank_id} was not written by TurnpackDataLoader "
                f"(a {type(state).__name__}); to start the data afresh from another dataloader's checkpoint, "
                'set checkpoint.exclude_from_loading=["dataloader"]'
            )
        self._loader.load_state_dict(json.loads(state))

    @property
    def stats(self) -> dict[str, int | float]:
        """This rank's sample accounting so far (packed, dropped by reason, ...; `turnpack.data.stats`)."""
        return self._loader.stats
