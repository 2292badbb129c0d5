"""Document-aware attention masks for packed batches.

A packed row holds several documents (conversations) back to back, followed by
padding.  For training on such a row to be *exactly* equivalent to training on
each document alone, every token may only attend to earlier tokens of its own
document, and rotary positions must restart at 0 at every document start.  The
packer emits ``position_ids`` that restart per document and ``document_ids``
(0, 1, 2, ... per row; the padding run gets its own id, equal to the number of
real documents in that row), so padding tokens form a document of their own and
attend only to themselves.

Two equivalent mask flavours are provided:

* :func:`document_block_mask` builds a FlexAttention :class:`BlockMask`
  (block-sparse: blocks that straddle no shared document are skipped entirely),
  to be used with :func:`flex_attention_forward` / ``torch.nn.attention.flex_attention``.
* :func:`dense_document_mask` builds a boolean ``[batch, 1, seq, seq]`` mask for
  :func:`torch.nn.functional.scaled_dot_product_attention` (True = may attend).
  It costs ``O(seq^2)`` memory per row but works everywhere, including for the
  backward pass on CPU, where FlexAttention has no implementation.

Both are built once per batch and shared by all layers and all heads.

Prefix-tree rows
----------------
A row may also hold *branches*: a rewritten assistant turn trained in its true
inference context, the trunk conversation up to the branch point, without
repeating that trunk.  The branch is a document of its own (its own id, placed
after the trunk in the same row), its positions continue from the branch point,
and two more int arrays of the row's shape, ``prefix_starts`` and
``prefix_ends`` (row-absolute token indices), give each token a range of keys it
may see besides its own document.  Token ``q`` attends to key ``k`` iff::

    (document_ids[q] == document_ids[k] and k <= q)  or  (prefix_starts[q] <= k < prefix_ends[q])

A branch's tokens carry ``prefix_starts = trunk start`` and ``prefix_ends =
trunk start + visible trunk tokens``; every other token carries an empty range
(``start == end``, e.g. ``0, 0``), which grants nothing, so rows without
branches behave exactly as plain document rows.  The range is not checked to lie
before ``q``: the packer places it there, and a range reaching past ``q`` would
let the branch see the future.  Without the two arrays (``None``) every function
here is the plain document mask.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover - import only for annotations
    from torch.nn.attention.flex_attention import BlockMask

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "MIN_COMPILED_HEAD_DIM",
    "dense_document_mask",
    "document_block_mask",
    "document_causal_mask_mod",
    "document_ids_from_positions",
    "flex_attention_available",
    "flex_attention_forward",
    "tree_causal_mask_mod",
]

#: FlexAttention's default sparse block size (tokens per query/key block).
DEFAULT_BLOCK_SIZE = 128
#: Smallest head dimension the compiled FlexAttention kernel accepts (smaller ones are zero-padded).
MIN_COMPILED_HEAD_DIM = 16

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def flex_attention_available() -> bool:
    """Return True if this PyTorch build ships ``torch.nn.attention.flex_attention``."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the installed torch
        return False
    return True


def _check_2d(name: str, t: Tensor) -> None:
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape [batch, seq_len], got {tuple(t.shape)}")


def document_ids_from_positions(position_ids: Tensor) -> Tensor:
    """Recover per-row document ids from restarting position ids.

    A new document starts wherever the position restarts at 0 (and, in any
    case, at the first token of each row).  Documents are numbered 0, 1, 2, ...
    within each row, so a trailing padding run whose positions restart at 0 gets
    the id ``number_of_real_documents``, exactly like the packer's
    ``document_ids``.

    Args:
        position_ids: integer tensor ``[batch, seq_len]`` on any device.

    Returns:
        int32 tensor ``[batch, seq_len]`` on the same device.
    """
    _check_2d("position_ids", position_ids)
    starts = position_ids == 0
    # The first token of a row always opens a document, even if a (malformed or
    # truncated) row does not begin at position 0.
    starts[:, :1] = True
    return (torch.cumsum(starts.to(torch.int32), dim=1, dtype=torch.int32) - 1).to(torch.int32)


def document_causal_mask_mod(document_ids: Tensor) -> MaskMod:
    """Return a FlexAttention ``mask_mod`` for causal attention within documents.

    ``mask_mod(b, h, q_idx, kv_idx)`` is True when ``kv_idx <= q_idx`` and both
    tokens of row ``b`` belong to the same document.  ``document_ids`` is
    captured by the closure, shape ``[batch, seq_len]``.
    """
    _check_2d("document_ids", document_ids)

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        same_doc = document_ids[b, q_idx] == document_ids[b, kv_idx]
        return same_doc & (kv_idx <= q_idx)

    return mask_mod


def _check_tree(
    document_ids: Tensor, prefix_starts: Tensor | None, prefix_ends: Tensor | None
) -> tuple[Tensor, Tensor] | None:
    """Validate the optional prefix arrays; None when neither is given (plain document rows)."""
    if prefix_starts is None and prefix_ends is None:
        return None
    if prefix_starts is None or prefix_ends is None:
        given, missing = (
            ("prefix_ends", "prefix_starts") if prefix_starts is None else ("prefix_starts", "prefix_ends")
        )
        raise ValueError(f"{given} was given without {missing}: tree rows need both (or neither)")
    for name, t in (("prefix_starts", prefix_starts), ("prefix_ends", prefix_ends)):
        if t.shape != document_ids.shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but document_ids has shape {tuple(document_ids.shape)}"
            )
        if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
            raise ValueError(f"{name} must hold integer token indices, got {t.dtype}")
        if t.device != document_ids.device:
            raise ValueError(f"{name} is on {t.device} but document_ids is on {document_ids.device}")
    return prefix_starts, prefix_ends


def tree_causal_mask_mod(document_ids: Tensor, prefix_starts: Tensor, prefix_ends: Tensor) -> MaskMod:
    """Return a FlexAttention ``mask_mod`` for prefix-tree rows (see the module docstring).

    ``mask_mod(b, h, q_idx, kv_idx)`` is True when ``kv_idx <= q_idx`` within the
    same document of row ``b``, or when ``prefix_starts[b, q_idx] <= kv_idx <
    prefix_ends[b, q_idx]``.  All three tensors are ``[batch, seq_len]`` and are
    captured by the closure; tokens with an empty range (``start == end``) get
    exactly :func:`document_causal_mask_mod`.

    Raises:
        ValueError: a tensor is not ``[batch, seq_len]``, the prefix arrays' shape
            or device differs from ``document_ids``', or they are not integers.
    """
    _check_2d("document_ids", document_ids)
    _check_tree(document_ids, prefix_starts, prefix_ends)

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        same_doc = (document_ids[b, q_idx] == document_ids[b, kv_idx]) & (kv_idx <= q_idx)
        in_prefix = (prefix_starts[b, q_idx] <= kv_idx) & (kv_idx < prefix_ends[b, q_idx])
        return same_doc | in_prefix

    return mask_mod


@functools.cache
def _compiled_create_block_mask() -> Callable[..., BlockMask]:
    from torch.nn.attention.flex_attention import create_block_mask

    return torch.compile(create_block_mask)


@functools.cache
def _compiled_flex_attention() -> Callable[..., Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def document_block_mask(
    document_ids: Tensor,
    *,
    prefix_starts: Tensor | None = None,
    prefix_ends: Tensor | None = None,
    compile: bool | None = None,
    block_size: int | tuple[int, int] = DEFAULT_BLOCK_SIZE,
) -> BlockMask:
    """Build a FlexAttention ``BlockMask`` for causal attention within each document.

    The mask has ``B = batch`` and ``H = None`` (broadcast over heads); build it
    once per batch and pass it to every layer.

    Args:
        document_ids: integer tensor ``[batch, seq_len]`` (the packer's
            ``document_ids`` or :func:`document_ids_from_positions`).  Padding
            must carry its own id so that it only attends to itself.
        prefix_starts, prefix_ends: optional ``[batch, seq_len]`` integer
            arrays of a prefix-tree row (see the module docstring): token ``q``
            also sees keys ``prefix_starts[q] <= k < prefix_ends[q]``.  Give
            both or neither; ``None`` is the plain document mask.
        compile: use ``torch.compile(create_block_mask)``.  ``None`` (default)
            compiles on CUDA and stays eager elsewhere.  The eager path
            materialises a dense ``[batch, 1, seq, seq]`` mask, which is fine
            for tests and short CPU runs but not for long sequences.
        block_size: sparse block size (tokens) for queries and keys.
            ``seq_len`` need not be a multiple of it: the last, partial block is
            padded internally by PyTorch and out-of-range tokens are never
            attended to.

    Returns:
        A ``BlockMask`` on ``document_ids.device``.

    Raises:
        ValueError: one prefix array without the other, or shapes that differ
            from ``document_ids``'.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    _check_2d("document_ids", document_ids)
    tree = _check_tree(document_ids, prefix_starts, prefix_ends)
    device = document_ids.device
    if compile is None:
        compile = device.type == "cuda"
    batch, seq_len = document_ids.shape
    mask_mod = (
        document_causal_mask_mod(document_ids) if tree is None else tree_causal_mask_mod(document_ids, *tree)
    )
    builder = _compiled_create_block_mask() if compile else create_block_mask
    return builder(
        mask_mod,
        B=batch,
        H=None,
        Q_LEN=seq_len,
        KV_LEN=seq_len,
        device=device,
        BLOCK_SIZE=block_size,
    )


def dense_document_mask(
    document_ids: Tensor, *, prefix_starts: Tensor | None = None, prefix_ends: Tensor | None = None
) -> Tensor:
    """Build a boolean SDPA mask for causal attention within each document.

    Same semantics as :func:`document_block_mask`: ``mask[b, 0, q, k]`` is True
    (may attend) iff ``k <= q`` and tokens ``q`` and ``k`` of row ``b`` share a
    document id.  Every token may attend to itself, so no row of the attention
    matrix is fully masked (no NaNs, also on padding).

    With ``prefix_starts`` / ``prefix_ends`` (a prefix-tree row, see the module
    docstring) ``mask[b, 0, q, k]`` is also True where ``prefix_starts[b, q] <= k
    < prefix_ends[b, q]``.

    Args:
        document_ids: integer tensor ``[batch, seq_len]``.
        prefix_starts, prefix_ends: optional integer tensors of the same shape;
            both or neither (``None``: the plain document mask).

    Returns:
        bool tensor ``[batch, 1, seq_len, seq_len]`` on the same device, ready to
        be passed as ``attn_mask`` to ``scaled_dot_product_attention`` (it
        broadcasts over heads).

    Raises:
        ValueError: one prefix array without the other, or shapes that differ
            from ``document_ids``'.
    """
    _check_2d("document_ids", document_ids)
    tree = _check_tree(document_ids, prefix_starts, prefix_ends)
    seq_len = document_ids.shape[1]
    same_doc = document_ids[:, :, None] == document_ids[:, None, :]
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=document_ids.device).tril_()
    allowed = same_doc & causal
    if tree is not None:
        starts, ends = tree
        keys = torch.arange(seq_len, device=document_ids.device)
        allowed |= (starts[:, :, None] <= keys) & (keys < ends[:, :, None])
    return allowed.unsqueeze(1)


def flex_attention_forward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    block_mask: BlockMask,
    *,
    enable_gqa: bool = False,
    compile: bool | None = None,
) -> Tensor:
    """Run FlexAttention with ``block_mask``, compiled on CUDA by default.

    Shapes follow ``flex_attention``: ``query`` is ``[B, Hq, L, D]``, ``key`` and
    ``value`` are ``[B, Hkv, L, D]`` (``Hq`` a multiple of ``Hkv`` when
    ``enable_gqa``).  ``compile=None`` uses the compiled (fused, block-sparse)
    kernel on CUDA and PyTorch's eager reference implementation elsewhere.  The
    eager path materialises the full score matrix and, on CPU, supports the
    forward pass only; use SDPA with :func:`dense_document_mask` to train on CPU.
    """
    from torch.nn.attention.flex_attention import flex_attention

    if compile is None:
        compile = query.device.type == "cuda"
    fn = _compiled_flex_attention() if compile else flex_attention
    head_dim = query.shape[-1]
    if compile and head_dim < MIN_COMPILED_HEAD_DIM:
        # The compiled kernel rejects head_dim < 16 ("NYI: embedding dimension ... at least 16").
        # Zero-padding q, k and v changes no score and only adds zero output columns, which are cut
        # off; the softmax scale stays that of the true head_dim.
        pad = MIN_COMPILED_HEAD_DIM - head_dim
        query, key, value = (torch.nn.functional.pad(t, (0, pad)) for t in (query, key, value))
        out = fn(query, key, value, block_mask=block_mask, enable_gqa=enable_gqa, scale=head_dim**-0.5)
        return out[..., :head_dim]
    return fn(query, key, value, block_mask=block_mask, enable_gqa=enable_gqa)
