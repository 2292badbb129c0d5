"""Hugging Face `transformers` (`Trainer`) and TRL (`SFTTrainer`) on turnpack's packed rows.

A packed row holds several conversations back to back, then padding. Training a `transformers` causal LM
on it gives exactly the loss and gradients of each conversation alone (tests/test_integrations_hf.py)
when the model gets:

* `labels` in Hugging Face's convention: *unshifted*, the model shifts them (`ForCausalLMLoss`).
  turnpack's `labels` are already shifted (`labels[t]` is the token position `t` must predict), so
  `hf_labels[:, 1:] = labels[:, :-1]` and `hf_labels[:, 0] = -100` (`unshift_labels`). A position is
  trained only where its target lies in the same document; padding and every document's first token
  are -100. Passing turnpack's labels as they are would train every token one position off, with a
  loss that still falls.
* `position_ids` restarting at 0 per document (and for the padding run), as the packer writes them.
* Document separation, in one of two ways, both exact for batches of several rows:

  - an explicit mask as `attention_mask` (`return_attention_mask=True`, the default for `"sdpa"`,
    `"eager"` and `"flex_attention"`). transformers 5.x uses a 4D mask or a FlexAttention `BlockMask`
    as it is (`masking_utils._preprocess_mask_arguments`); its form depends on the attention backend:
    a bool `[rows, 1, L, L]` mask for `"sdpa"` (True = may attend), an additive float mask (0 or the
    dtype's minimum) for `"eager"`, which adds the mask to the scores (a bool mask there would add
    0/1 and mask nothing), and a `BlockMask` from `turnpack.attention.document_block_mask` for
    `"flex_attention"`. The mask is built from `document_ids`.
  - no mask (`return_attention_mask=False`): transformers then finds the documents itself from
    `position_ids` (`masking_utils.find_packed_sequence_indices`: a new document wherever the position
    does not grow by 1) and builds the backend's mask on the model's device, per row. It does so only
    when the model runs *without a cache*: in transformers 5.24 a model whose config says
    `use_cache=True` (the default) creates a cache even in training mode, packed-sequence detection is
    then skipped and documents attend to each other, silently. So every output of this module carries
    `use_cache=False`.

  FlashAttention (`"flash_attention_2"`/`"_3"`/`"_4"`) takes packed documents only in a single row
  (transformers' `_is_packed_sequence` requires batch size 1), so for those backends the rows are
  flattened into one `[1, rows * L]` row with restarting `position_ids` and the varlen kwargs
  `cu_seq_lens_q/k`, `max_length_q/k` (what `DataCollatorWithFlattening(return_flash_attn_kwargs=True)`
  gives); no mask.

Prefix-tree rows carry two more columns, `prefix_starts` and `prefix_ends` (`TREE_KEYS`; see
`turnpack.attention`): a branch document (a rewritten assistant turn) placed after its trunk sees the
trunk's first tokens, and its positions continue from the branch point. Every piece here carries the
two columns when its source has them (both or neither), and a batch whose ranges are not all empty
gets the explicit tree mask (`sdpa`, `eager`, `flex_attention`). Neither transformers' detection of
documents from `position_ids` nor FlashAttention's varlen rows can express a branch's view of its
trunk, so those paths (`return_attention_mask=False`, FlashAttention) raise `ValueError` on such a
batch. Batches whose ranges are all empty are plain packed rows and go every way as before.

Models whose attention is not plain causal everywhere (sliding-window layers, chunked or linear
attention) need the model's own mask construction: an explicit mask would replace theirs in every
layer, so it is refused for them (`ValueError`); use `return_attention_mask=False`.

Pieces:

* `packed_model_inputs(batch, ...)`: one turnpack batch (a `ChatDataset` batch, a `PackedBatch`, a
  mapping of arrays) to the keyword arguments of `model(**inputs)`, for your own loop.
* `PackedRowsDataset`: a map-style `torch.utils.data.Dataset` over packed rows held in memory
  (`turnpack.pack`), one row per item, for `Trainer`.
* `PackedRowsIterableDataset`: the rows of a stream of batches (`turnpack.ChatDataset`), for `Trainer`
  with `max_steps` (an iterable dataset has no length).
* `DataCollatorForPackedRows`: stacks rows and does the conversion above; give it the model (or its
  config, or the attention implementation) and it follows `config._attn_implementation`.
* `to_hf_dataset(rows)` / `to_hf_iterable_dataset(chat_dataset)`: the rows as a `datasets.Dataset` /
  `datasets.IterableDataset`, the only dataset types TRL's `SFTTrainer` takes (a torch dataset is a
  `TypeError` there), for `SFTConfig(dataset_kwargs={"skip_prepare_dataset": True})` with the
  collator; `SFTTrainer` also needs a `processing_class` (any tokenizer object; it is not used on
  these rows, but without one it tries to download one named after the model). TRL's `num_tokens`
  metric sums `attention_mask`: with a 4D mask it is meaningless (the loss is not affected), and a
  `BlockMask` has no `sum`, so with `"flex_attention"` under `SFTTrainer` use
  `return_attention_mask=False`.

With `Trainer` and `SFTTrainer` set `remove_unused_columns=False`: otherwise `document_ids`, which the
model's `forward` does not take, is dropped before the collator sees it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from turnpack.attention import dense_document_mask, document_block_mask
from turnpack.data.batching import IGNORE_INDEX

if TYPE_CHECKING:  # pragma: no cover - import only for annotations
    import datasets
    from transformers import PretrainedConfig, PreTrainedModel

    import turnpack

__all__ = [
    "DENSE_MASK_IMPLEMENTATIONS",
    "FLASH_IMPLEMENTATIONS",
    "ROW_KEYS",
    "TREE_KEYS",
    "DataCollatorForPackedRows",
    "PackedRowsDataset",
    "PackedRowsIterableDataset",
    "packed_attention_mask",
    "packed_model_inputs",
    "to_hf_dataset",
    "to_hf_iterable_dataset",
    "unshift_labels",
]

#: The per-token arrays of a packed row (`turnpack.train.data.BATCH_KEYS`).
ROW_KEYS = ("input_ids", "labels", "position_ids", "document_ids")
#: The optional arrays of prefix-tree rows (`turnpack.train.data.TREE_KEYS`), carried when present.
TREE_KEYS = ("prefix_starts", "prefix_ends")
#: Backends that take an explicit mask as `attention_mask` (`BlockMask` for flex, 4D tensors else).
DENSE_MASK_IMPLEMENTATIONS = ("sdpa", "eager", "flex_attention")
#: Backends that take packed documents as one flattened row plus varlen kwargs.
FLASH_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3", "flash_attention_4")
_REMOVED_COLUMNS_HINT = (
    " (Trainer and SFTTrainer drop the columns the model's forward does not take unless "
    "remove_unused_columns=False)"
)


# ------------------------------------------------------------------ conversion


def _column(source: Any, key: str) -> Any:
    """`source[key]` for mappings, `source.key` for `PackedBatch`-like objects; KeyError naming `key`."""
    if isinstance(source, Mapping):
        if key not in source:
            raise KeyError(f"packed rows have no {key!r} field (fields: {', '.join(map(str, source))})")
        return source[key]
    if not hasattr(source, key):
        raise KeyError(f"packed rows have no {key!r} field ({type(source).__name__} has no such attribute)")
    return getattr(source, key)


def _has_column(source: Any, key: str) -> bool:
    return key in source if isinstance(source, Mapping) else hasattr(source, key)


def _tree_keys(source: Any, where: str = "packed rows") -> tuple[str, ...]:
    """`TREE_KEYS` when `source` has both (not None), `()` when neither; ValueError for one alone."""

    def present(key: str) -> bool:
        if isinstance(source, Mapping):
            return source.get(key) is not None
        return getattr(source, key, None) is not None

    found = tuple(key for key in TREE_KEYS if present(key))
    if len(found) == 1:
        missing = next(key for key in TREE_KEYS if key not in found)
        raise ValueError(f"{where} have {found[0]} but no {missing}: prefix-tree rows need both (or neither)")
    return found


def _as_long(name: str, value: Any, dims: int) -> torch.Tensor:
    """`value` as an int64 tensor of `dims` dimensions (numpy int32, lists and tensors alike)."""
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        array = np.asarray(value)
        if array.dtype == object:
            raise ValueError(f"{name} must be a rectangular array of integers, got ragged or mixed data")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(f"{name} must hold integers, got {tensor.dtype}")
    if tensor.dim() != dims:
        shape = "[rows, seq_len]" if dims == 2 else "[seq_len]"
        raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    return tensor.to(torch.int64)


def unshift_labels(labels: torch.Tensor) -> torch.Tensor:
    """turnpack's shifted `labels` in Hugging Face's unshifted convention.

    `labels[:, t]` is the target of position `t`; a Hugging Face causal LM computes the loss of position
    `t` against `hf_labels[:, t + 1]`. So `hf_labels[:, 1:] = labels[:, :-1]` and `hf_labels[:, 0] = -100`.
    turnpack's last position of a row is never trained (it ends a document or is padding), so nothing
    is lost; a row whose last label is not -100 raises `ValueError`.

    Args:
        labels: integer tensor `[rows, seq_len]`.

    Returns:
        int64 tensor `[rows, seq_len]` on the same device.
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape [rows, seq_len], got {tuple(labels.shape)}")
    last = labels[:, -1] != IGNORE_INDEX
    if bool(last.any()):
        row = int(last.nonzero()[0, 0])
        raise ValueError(
            f"labels[{row}, -1] is {int(labels[row, -1])}, not {IGNORE_INDEX}: the last position of a packed row "
            "has no next token to predict, so these are not turnpack's shifted labels"
        )
    hf_labels = torch.full_like(labels, IGNORE_INDEX, dtype=torch.int64)
    hf_labels[:, 1:] = labels[:, :-1]
    return hf_labels


def _first_bad(bad: torch.Tensor) -> tuple[int, int]:
    row, col = bad.nonzero()[0].tolist()
    return int(row), int(col)


def _validate(
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor,
    document_ids: torch.Tensor | None,
    visible: torch.Tensor | None = None,
) -> None:
    """Checks that the arrays are packed rows with turnpack's shifted labels.

    Catches labels already converted to Hugging Face's convention (or otherwise not the next token),
    labels that cross a document boundary, and positions that do not restart per document. `visible`
    (prefix-tree rows: `prefix_ends - prefix_starts` per token) is where each document's positions
    start instead of 0: a branch's continue from its branch point.
    """
    target = labels[:, :-1]
    trained = target != IGNORE_INDEX
    wrong = trained & (target != input_ids[:, 1:])
    if bool(wrong.any()):
        row, t = _first_bad(wrong)
        raise ValueError(
            f"labels[{row}, {t}] is {int(target[row, t])} but input_ids[{row}, {t + 1}] is "
            f"{int(input_ids[row, t + 1])}: turnpack's labels are shifted (labels[t] is input_ids[t + 1] or "
            f"{IGNORE_INDEX}); labels already in Hugging Face's unshifted convention must not be converted again"
        )
    if document_ids is None:
        # Documents are where the positions restart: each position is 0 or its predecessor's plus one.
        restart = position_ids[:, 1:] == 0
        off = torch.zeros_like(position_ids, dtype=torch.bool)
        off[:, 0] = position_ids[:, 0] != 0
        off[:, 1:] = ~restart & (position_ids[:, 1:] != position_ids[:, :-1] + 1)
        crossing = trained & restart
        expected = None
    else:
        seq_len = document_ids.shape[1]
        index = torch.arange(seq_len, device=document_ids.device).expand_as(document_ids)
        starts = torch.ones_like(document_ids, dtype=torch.bool)
        starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
        expected = index - torch.where(starts, index, 0).cummax(dim=1).values
        if visible is not None:
            expected = expected + visible
        off = position_ids != expected
        crossing = trained & starts[:, 1:]
    if bool(crossing.any()):
        row, t = _first_bad(crossing)
        raise ValueError(f"labels[{row}, {t}] targets the first token of the next document")
    if bool(off.any()):
        row, t = _first_bad(off)
        want = f", expected {int(expected[row, t])}" if expected is not None else ""
        raise ValueError(
            f"position_ids[{row}, {t}] is {int(position_ids[row, t])}{want}: positions must count 0, 1, 2, ... "
            "within each document and restart at 0 at the next one (a prefix-tree branch's continue from "
            "its visible prefix, prefix_ends - prefix_starts)"
        )


def _text_config(config: Any) -> Any:
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _check_plain_causal(config: Any, seq_len: int) -> None:
    """Refuses explicit masks for models whose layers mask differently (sliding windows, ...)."""
    if config is None:
        return
    text = _text_config(config)
    window = getattr(text, "sliding_window", None)
    layer_types = set(getattr(text, "layer_types", None) or ())
    others = layer_types - {"full_attention", "sliding_attention"}
    sliding = (
        window is not None and window < seq_len and (not layer_types or "sliding_attention" in layer_types)
    )
    if others or sliding:
        what = f"layer types {sorted(others)}" if others else f"sliding_window={window}"
        raise ValueError(
            f"the model's attention is not plain causal ({what}): an explicit attention_mask would replace "
            "its own masks in every layer; use return_attention_mask=False so that transformers builds them "
            "from position_ids"
        )


def _resolve_implementation(model: Any, config: Any, attn_implementation: str | None) -> tuple[str, Any]:
    """The attention backend and the config to check, from the model, its config or the caller."""
    if model is not None:
        if config is not None:
            raise ValueError("pass model or config, not both")
        config = model.config
    found = getattr(config, "_attn_implementation", None) if config is not None else None
    if attn_implementation is None:
        attn_implementation = found
    elif found is not None and found != attn_implementation:
        raise ValueError(
            f"attn_implementation={attn_implementation!r} but the model's config says {found!r}: the inputs "
            "must be built for the backend the model runs"
        )
    if attn_implementation is None:
        raise ValueError(
            "the attention implementation is unknown: pass the model, its config or attn_implementation= "
            f"(one of {', '.join(DENSE_MASK_IMPLEMENTATIONS + FLASH_IMPLEMENTATIONS)})"
        )
    if attn_implementation not in DENSE_MASK_IMPLEMENTATIONS + FLASH_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation {attn_implementation!r} is not supported; use one of "
            f"{', '.join(DENSE_MASK_IMPLEMENTATIONS + FLASH_IMPLEMENTATIONS)}"
        )
    return attn_implementation, config


def packed_attention_mask(
    document_ids: torch.Tensor,
    attn_implementation: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    prefix_starts: torch.Tensor | None = None,
    prefix_ends: torch.Tensor | None = None,
) -> Any:
    """The `attention_mask` transformers 5.x uses as it is, for causal attention within each document.

    With `prefix_starts` and `prefix_ends` (prefix-tree rows, see `turnpack.attention`) each token also
    sees the keys `prefix_starts[q] <= k < prefix_ends[q]`.

    Args:
        document_ids: integer tensor `[rows, seq_len]`; padding must carry its own id (the packer's do).
        attn_implementation: `"sdpa"` (bool `[rows, 1, L, L]`, True = may attend), `"eager"` (additive
            float `[rows, 1, L, L]` of `dtype`: 0 or `torch.finfo(dtype).min`) or `"flex_attention"`
            (a `BlockMask`, `turnpack.attention.document_block_mask`: compiled on CUDA, eager and dense
            elsewhere).
        dtype: float dtype of the eager mask; use the model's.
        device: where to build it (default: `document_ids.device`).
        prefix_starts, prefix_ends: integer tensors `[rows, seq_len]` of prefix-tree rows, both or
            neither (default: plain document rows).

    Returns:
        A tensor or a `BlockMask`.

    Raises:
        ValueError: an unknown backend, one prefix array without the other, or shapes that differ.
    """
    document_ids = _as_long("document_ids", document_ids, 2)
    tree: dict[str, torch.Tensor | None] = {"prefix_starts": prefix_starts, "prefix_ends": prefix_ends}
    for key, value in tree.items():
        if value is not None:
            tree[key] = _as_long(key, value, 2).to(document_ids.device)
    if device is not None:
        document_ids = document_ids.to(device)
        tree = {key: None if value is None else value.to(device) for key, value in tree.items()}
    if attn_implementation == "flex_attention":
        return document_block_mask(document_ids, **tree)
    allowed = dense_document_mask(document_ids, **tree)
    if attn_implementation == "sdpa":
        return allowed
    if attn_implementation == "eager":
        if not dtype.is_floating_point:
            raise ValueError(f"the eager mask needs a float dtype, got {dtype}")
        zero = torch.zeros((), dtype=dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)
    raise ValueError(
        f"no explicit mask for attn_implementation {attn_implementation!r}; "
        f"use one of {', '.join(DENSE_MASK_IMPLEMENTATIONS)}"
    )


def packed_model_inputs(
    batch: Any,
    *,
    model: PreTrainedModel | None = None,
    config: PretrainedConfig | None = None,
    attn_implementation: str | None = None,
    return_attention_mask: bool | None = None,
    flatten: bool | None = None,
    mask_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    validate: bool = True,
) -> dict[str, Any]:
    """Keyword arguments for `model(**inputs)` from one batch of packed rows.

    The attention backend comes from `model.config._attn_implementation` (or `config`'s), or from
    `attn_implementation`; see the module docstring for what each gets.

    Args:
        batch: `input_ids`, `labels` (turnpack's shifted labels), `position_ids` and, for an explicit
            mask, `document_ids`, each `[rows, seq_len]`: a `ChatDataset` batch, a `turnpack.PackedBatch`
            or any mapping of arrays or tensors (any integer dtype). Prefix-tree rows also carry
            `prefix_starts` and `prefix_ends` (both or neither), which go into the mask. Other fields
            are ignored.
        model: the model the inputs are for (its config and dtype are read).
        config: its config, instead of the model.
        attn_implementation: the backend, when neither is given (or to check that it is what they say).
        return_attention_mask: build the explicit mask (`attention_mask`); False relies on transformers'
            detection of packed documents from `position_ids`. Default: True for `"sdpa"`, `"eager"` and
            `"flex_attention"`; FlashAttention takes no mask.
        flatten: flatten the rows into one `[1, rows * seq_len]` row, with `cu_seq_lens_q/k` and
            `max_length_q/k` for FlashAttention's varlen kernels. Default: only for FlashAttention.
        mask_dtype: dtype of the eager mask (default: the model's dtype, else float32).
        device: where to build the mask and put the tensors (default: where `batch` is).
        validate: check that `labels` are turnpack's shifted labels (the next token or -100, never the
            first token of the next document) and that positions restart per document; a `ValueError`
            names the first bad position. Costs a few elementwise operations per batch.

    Returns:
        `input_ids`, `labels` (unshifted), `position_ids`, `use_cache=False`, plus `attention_mask` or
        the FlashAttention kwargs as described; all int64 except the mask.

    Raises:
        ValueError: bad arrays (see `validate`), contradictory options, or prefix-tree rows with a
            non-empty range for a path without an explicit mask (FlashAttention,
            `return_attention_mask=False`): only the explicit tree mask expresses them.
    """
    impl, config = _resolve_implementation(model, config, attn_implementation)
    flash = impl in FLASH_IMPLEMENTATIONS
    if return_attention_mask is None:
        return_attention_mask = not flash
    elif return_attention_mask and flash:
        raise ValueError(f"{impl} takes no attention_mask: use return_attention_mask=False")
    if flatten is None:
        flatten = flash
    elif flash and not flatten:
        raise ValueError(f"{impl} needs flattened rows (transformers packs documents only in batch size 1)")
    if mask_dtype is None:
        mask_dtype = getattr(model, "dtype", None) if model is not None else None
        if not isinstance(mask_dtype, torch.dtype) or not mask_dtype.is_floating_point:
            mask_dtype = torch.float32

    input_ids = _as_long("input_ids", _column(batch, "input_ids"), 2)
    shape = tuple(input_ids.shape)
    if shape[1] < 1:
        raise ValueError(f"input_ids must have at least one position per row, got shape {shape}")
    columns = {"input_ids": input_ids}
    for key in ("labels", "position_ids", "document_ids", *_tree_keys(batch)):
        # document_ids is needed for the mask; without one it still serves the checks when present.
        if key == "document_ids" and not return_attention_mask and not _has_column(batch, key):
            continue
        try:
            value = _column(batch, key)
        except KeyError as error:
            raise KeyError(f"{error.args[0]}{_REMOVED_COLUMNS_HINT}") from None
        tensor = _as_long(key, value, 2)
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{key} has shape {tuple(tensor.shape)} but input_ids has shape {shape}")
        columns[key] = tensor
    tree = _tree_columns(columns, impl, bool(return_attention_mask))
    if return_attention_mask:
        _check_plain_causal(config, shape[1])
    if device is not None:
        columns = {key: value.to(device) for key, value in columns.items()}
        tree = {key: value.to(device) for key, value in tree.items()}
    document_ids = columns.get("document_ids")
    if validate:
        visible = (tree["prefix_ends"] - tree["prefix_starts"]).clamp_min(0) if tree else None
        _validate(columns["input_ids"], columns["labels"], columns["position_ids"], document_ids, visible)

    labels = unshift_labels(columns["labels"])
    input_ids, position_ids = columns["input_ids"], columns["position_ids"]
    if flatten:
        if document_ids is not None:
            # Number each row's documents after the previous rows' ones, so that ids stay unique.
            offsets = torch.cumsum(document_ids.amax(dim=1) + 1, dim=0) - (document_ids.amax(dim=1) + 1)
            document_ids = (document_ids + offsets[:, None]).reshape(1, -1)
        # Prefix ranges are row-absolute: row r's start at r * seq_len in the flat row (an empty
        # range stays empty).
        row_starts = torch.arange(shape[0], device=input_ids.device)[:, None] * shape[1]
        tree = {key: (value + row_starts).reshape(1, -1) for key, value in tree.items()}
        input_ids, labels, position_ids = (t.reshape(1, -1) for t in (input_ids, labels, position_ids))
    inputs: dict[str, Any] = {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        # Without a cache only: transformers skips packed-document detection when a cache exists.
        "use_cache": False,
    }
    if return_attention_mask:
        assert document_ids is not None
        inputs["attention_mask"] = packed_attention_mask(document_ids, impl, dtype=mask_dtype, **tree)
    if flash:
        starts = (position_ids[0] == 0).nonzero().flatten()
        total = torch.tensor([position_ids.shape[1]], device=starts.device)
        cu_seq_lens = torch.cat([starts, total]).to(torch.int32)
        max_length = int(torch.diff(cu_seq_lens).max())
        inputs.update(
            cu_seq_lens_q=cu_seq_lens,
            cu_seq_lens_k=cu_seq_lens,
            max_length_q=max_length,
            max_length_k=max_length,
        )
    return inputs


def _tree_columns(
    columns: dict[str, torch.Tensor], impl: str, explicit_mask: bool
) -> dict[str, torch.Tensor]:
    """The prefix arrays to build the mask with: `{}` for plain rows (absent, or every range empty).

    Rows whose ranges are all empty are plain packed rows (every path handles them), so only a
    non-empty range needs the explicit mask, and only that is refused elsewhere.
    """
    if "prefix_starts" not in columns:
        return {}
    starts, ends = columns.pop("prefix_starts"), columns.pop("prefix_ends")
    if not bool((starts < ends).any()):
        return {}
    if not explicit_mask:
        why = (
            f"{impl} takes packed documents as varlen rows cut where position_ids restart"
            if impl in FLASH_IMPLEMENTATIONS
            else "return_attention_mask=False leaves transformers to infer the documents from position_ids"
        )
        raise ValueError(
            f"these packed rows are prefix-tree rows (prefix_starts/prefix_ends with non-empty ranges), which "
            f"need an explicit attention mask: {why}, which cannot let a branch see its trunk. Use "
            f"attn_implementation 'sdpa', 'eager' or 'flex_attention' with return_attention_mask=True"
        )
    return {"prefix_starts": starts, "prefix_ends": ends}


# ------------------------------------------------------------------ collator


class DataCollatorForPackedRows:
    """Collator for `Trainer`/`SFTTrainer`: stacks packed rows and converts them for the model.

    Each feature is one packed row: `input_ids`, `labels` (turnpack's shifted labels), `position_ids`
    and `document_ids` (and, for prefix-tree rows, `prefix_starts` and `prefix_ends`), each of shape
    `[seq_len]` (tensors, numpy arrays or lists; what
    `PackedRowsDataset`, `PackedRowsIterableDataset` and `to_hf_dataset` give). The batch is
    `packed_model_inputs` of the stacked rows: unshifted `labels`, restarting `position_ids`,
    `use_cache=False` and the attention mask or FlashAttention kwargs of the backend.

    Args:
        model: the model being trained; the backend is read from `model.config._attn_implementation`
            at every call (so `model.set_attn_implementation` is followed) and the eager mask takes
            `model.dtype` as it is when the collator is made. Only the config is kept (the collator
            stays small to pickle for DataLoader workers).
        config: the model's config, instead of the model.
        attn_implementation: the backend, when neither is given.
        return_attention_mask, flatten, mask_dtype, validate: as in `packed_model_inputs`.
        device: build the masks there (for example the model's CUDA device, so that a `BlockMask` is
            built compiled on it). `Trainer` moves tensors to the device itself but not a `BlockMask`
            (which is not a tensor), and a `BlockMask` holds a closure that cannot be sent back from a
            DataLoader worker: for `"flex_attention"` with `Trainer` either set `device` with
            `dataloader_num_workers=0`, or use `return_attention_mask=False` (transformers then builds
            the `BlockMask` on the model's device from `position_ids`).

    Dense masks are `[rows, 1, seq_len, seq_len]`: `rows * seq_len**2` bytes (bool) or 4x that (fp32)
    per batch. `TrainingArguments(include_num_input_tokens_seen="non_padding")` sums `attention_mask`
    and so miscounts with a 4D mask; use `"all"` or leave it off.
    """

    def __init__(
        self,
        model: PreTrainedModel | None = None,
        *,
        config: PretrainedConfig | None = None,
        attn_implementation: str | None = None,
        return_attention_mask: bool | None = None,
        flatten: bool | None = None,
        mask_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        validate: bool = True,
    ) -> None:
        if model is not None:
            if config is not None:
                raise ValueError("pass model or config, not both")
            config = model.config
            if mask_dtype is None:
                dtype = getattr(model, "dtype", None)
                if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
                    mask_dtype = dtype
        self.config = config
        self.attn_implementation = attn_implementation
        self.return_attention_mask = return_attention_mask
        self.flatten = flatten
        self.mask_dtype = mask_dtype
        self.device = device
        self.validate = validate
        # Fail now, not at the first batch, on an unknown or contradictory backend.
        _resolve_implementation(None, config, attn_implementation)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The model inputs for the rows `features`."""
        if not features:
            raise ValueError("DataCollatorForPackedRows received no rows")
        if any(feature.get("loss_weights") is not None for feature in features):
            # transformers' causal-LM loss takes no per-token weights: dropping them would train every
            # weighted message as if it weighed 1
            raise ValueError(
                "these rows carry loss_weights (messages weighted other than 0 or 1), which the "
                "Hugging Face adapter does not apply yet: train them with turnpack's own loop "
                "(turnpack.train), or give the messages weights of 0 or 1"
            )
        needs_document_ids = self._needs_document_ids()
        batch = {}
        # Tree columns travel when the first row has them; a row without them is then an error below.
        for key in ROW_KEYS + _tree_keys(features[0], "the rows"):
            if key == "document_ids" and not needs_document_ids and key not in features[0]:
                continue
            rows = []
            for i, feature in enumerate(features):
                if key not in feature:
                    raise KeyError(
                        f"row {i} has no {key!r} field (fields: {', '.join(feature)}){_REMOVED_COLUMNS_HINT}"
                    )
                rows.append(_as_long(f"{key} of row {i}", feature[key], 1))
            lengths = {int(row.shape[0]) for row in rows}
            if len(lengths) > 1:
                raise ValueError(
                    f"rows of different lengths in {key}: {sorted(lengths)} (packed rows share seq_len)"
                )
            batch[key] = torch.stack(rows)
        return packed_model_inputs(
            batch,
            config=self.config,
            attn_implementation=self.attn_implementation,
            return_attention_mask=self.return_attention_mask,
            flatten=self.flatten,
            mask_dtype=self.mask_dtype,
            device=self.device,
            validate=self.validate,
        )

    def _needs_document_ids(self) -> bool:
        if self.return_attention_mask is not None:
            return self.return_attention_mask
        impl, _ = _resolve_implementation(None, self.config, self.attn_implementation)
        return impl not in FLASH_IMPLEMENTATIONS


# ------------------------------------------------------------------ datasets


def _int64_columns(rows: Any, columns: Sequence[str]) -> dict[str, torch.Tensor]:
    """`columns` of `rows` as int64 tensors of one shape, plus the prefix-tree columns `rows` has."""
    out: dict[str, torch.Tensor] = {}
    # Dropping the prefix arrays of tree rows would train each branch without its trunk: carry them.
    for key in dict.fromkeys([*columns, *_tree_keys(rows)]):
        tensor = _as_long(key, _column(rows, key), 2)
        if out and tensor.shape != next(iter(out.values())).shape:
            first = next(iter(out))
            raise ValueError(
                f"{key} has shape {tuple(tensor.shape)} but {first} has {tuple(out[first].shape)}"
            )
        out[key] = tensor.contiguous()
    return out


class PackedRowsDataset(Dataset):
    """Packed rows held in memory as a map-style dataset: item `i` is row `i`.

    Args:
        rows: a `turnpack.PackedBatch` (what `turnpack.pack` returns), or a mapping of `[rows, seq_len]`
            arrays or tensors with at least `columns` (a `ChatDataset` batch, prepared arrays, ...).
        columns: the fields each item carries (converted once to int64 tensors); `prefix_starts` and
            `prefix_ends` (`TREE_KEYS`) are carried too whenever `rows` has them.

    Items are dicts of int64 tensors `[seq_len]`; `DataCollatorForPackedRows` batches them.
    """

    def __init__(
        self, rows: turnpack.PackedBatch | Mapping[str, Any], columns: Sequence[str] = ROW_KEYS
    ) -> None:
        self.columns = _int64_columns(rows, columns)
        self.num_rows = int(next(iter(self.columns.values())).shape[0]) if self.columns else 0

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self.num_rows <= index < self.num_rows:
            raise IndexError(f"row {index} out of range for {self.num_rows} rows")
        return {key: value[index] for key, value in self.columns.items()}


class PackedRowsIterableDataset(IterableDataset):
    """The rows of a stream of packed batches, one row per item.

    Wraps a `turnpack.ChatDataset` (or any iterable of batches: `PackedBatch`es, mappings of
    `[rows, seq_len]` arrays) so that `Trainer` can regroup rows into its own batches of
    `per_device_train_batch_size`: `PackedRowsIterableDataset(ChatDataset(..., batch_size=64))` with
    `DataCollatorForPackedRows` and `TrainingArguments(max_steps=...)`. The `ChatDataset`'s own
    `batch_size` is then only how many rows it packs per step of the stream.

    `columns` are carried from every batch, and `prefix_starts` / `prefix_ends` (`TREE_KEYS`) too from
    the batches that have them.

    Each pass iterates `batches` again (a `ChatDataset` starts its next epoch: call `set_epoch`, which
    `Trainer` does, to pick it). In DataLoader workers a `ChatDataset` reads its own share of the data
    per worker. Across processes, `Trainer` (accelerate) splits the one stream of an iterable dataset
    itself: build the `ChatDataset` with `rank=0, world_size=1` there, or every process would read only
    its share of its share.
    """

    def __init__(self, batches: Iterable[Any], columns: Sequence[str] = ROW_KEYS) -> None:
        super().__init__()
        self.batches = batches
        self.columns = tuple(columns)

    def set_epoch(self, epoch: int) -> None:
        """Passed on to the wrapped dataset when it has `set_epoch` (a `ChatDataset` does)."""
        set_epoch = getattr(self.batches, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.batches:
            if isinstance(batch, Mapping) and "input_ids" not in batch:
                continue  # an end-of-epoch marker carrying only bookkeeping (ChatDataLoader items)
            columns = _int64_columns(batch, self.columns)
            rows = int(next(iter(columns.values())).shape[0]) if columns else 0
            for r in range(rows):
                yield {key: value[r] for key, value in columns.items()}


def to_hf_dataset(
    rows: turnpack.PackedBatch | Mapping[str, Any], columns: Sequence[str] = ROW_KEYS
) -> datasets.Dataset:
    """Packed rows as a `datasets.Dataset` (one row per example, int64 columns), for TRL's `SFTTrainer`.

    `SFTTrainer` takes only `datasets` datasets. Give it this one with
    `SFTConfig(dataset_kwargs={"skip_prepare_dataset": True}, remove_unused_columns=False)` and
    `data_collator=DataCollatorForPackedRows(model)`: the rows are packed and labelled already.
    `prefix_starts` and `prefix_ends` become columns too when `rows` has them.
    """
    import datasets

    data = {key: value.numpy() for key, value in _int64_columns(rows, columns).items()}
    features = datasets.Features({key: datasets.Sequence(datasets.Value("int64")) for key in data})
    return datasets.Dataset.from_dict({key: value.tolist() for key, value in data.items()}, features=features)


def _numpy_rows(batches: Iterable[Any], columns: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
    for row in PackedRowsIterableDataset(batches, columns):
        extra = [key for key in row if key not in columns]
        if extra:
            # The features are fixed before the first row: dropping the prefix arrays silently would
            # train every branch without its trunk.
            raise ValueError(
                f"the stream's rows carry {', '.join(extra)}, which are not among columns: pass "
                "columns=ROW_KEYS + TREE_KEYS for prefix-tree rows"
            )
        yield {key: value.numpy() for key, value in row.items()}


def to_hf_iterable_dataset(
    batches: Iterable[Any], columns: Sequence[str] = ROW_KEYS
) -> datasets.IterableDataset:
    """The rows of a stream of packed batches (a `turnpack.ChatDataset`) as a `datasets.IterableDataset`,
    for TRL's `SFTTrainer` (with `max_steps`), like `to_hf_dataset`.

    `datasets` iterates `batches` afresh on each pass but does not call its `set_epoch`: a `ChatDataset`
    made with `epochs=1` is then spent after one pass; make it with `epochs=None` (endless, reshuffled
    every epoch) and stop by `max_steps`. `batches` must pickle (a `ChatDataset` does): `datasets`
    fingerprints it. The features are `columns`, fixed before the first row: for prefix-tree rows pass
    `columns=ROW_KEYS + TREE_KEYS` (a row carrying columns beyond them is a `ValueError`).
    """
    import datasets

    features = datasets.Features({key: datasets.Sequence(datasets.Value("int64")) for key in columns})
    return datasets.IterableDataset.from_generator(
        _numpy_rows, gen_kwargs={"batches": batches, "columns": tuple(columns)}, features=features
    )
