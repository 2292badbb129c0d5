"""Tests for turnpack.attention: document ids, dense and FlexAttention document masks."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F
from turnpack.attention import (
    dense_document_mask,
    document_block_mask,
    document_ids_from_positions,
    flex_attention_available,
    flex_attention_forward,
)

needs_flex = pytest.mark.skipif(not flex_attention_available(), reason="torch has no flex_attention")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _quiet_eager_flex():
    # Eager (uncompiled) flex_attention warns that it materialises the scores; expected on CPU.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        yield


def packed_ids(doc_lengths_per_row: list[list[int]], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Packer-style (position_ids, document_ids) for rows of documents followed by padding."""
    positions, documents = [], []
    for lengths in doc_lengths_per_row:
        pad = seq_len - sum(lengths)
        assert pad >= 0
        runs = list(lengths) + ([pad] if pad else [])
        positions.append(torch.cat([torch.arange(n) for n in runs]))
        documents.append(torch.cat([torch.full((n,), i) for i, n in enumerate(runs)]))
    return torch.stack(positions), torch.stack(documents)


# ---------------------------------------------------------------- document ids


def test_document_ids_from_positions_hand_examples():
    position_ids = torch.tensor(
        [
            [0, 1, 2, 0, 1, 0, 1, 2, 3, 0, 1],  # 3 docs + padding run of 2
            [0, 1, 2, 3, 4, 5, 0, 1, 2, 0, 0],  # 2 docs + 1-token doc + 1-token padding
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # every token its own document
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],  # one document filling the row
        ]
    )
    expected = torch.tensor(
        [
            [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3],
            [0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 3],
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            [0] * 11,
        ],
        dtype=torch.int32,
    )
    got = document_ids_from_positions(position_ids)
    assert got.dtype == torch.int32
    assert torch.equal(got, expected)


def test_document_ids_from_positions_row_not_starting_at_zero():
    # A row that starts mid-document (e.g. truncated) still starts document 0 at index 0.
    got = document_ids_from_positions(torch.tensor([[5, 6, 0, 1], [0, 1, 2, 3]]))
    assert torch.equal(got, torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.int32))


def test_document_ids_from_positions_matches_packer_layout():
    pos, docs = packed_ids([[5, 3, 7], [1, 9], [16]], seq_len=16)
    assert torch.equal(document_ids_from_positions(pos), docs.to(torch.int32))
    assert not pos.is_floating_point()


def test_document_ids_from_positions_rejects_1d():
    with pytest.raises(ValueError):
        document_ids_from_positions(torch.arange(4))


# ------------------------------------------------------------------ dense mask


def test_dense_document_mask_hand_example():
    # Row 0: docs of length 2 and 1, then a padding run of 2 (id 2).  Row 1: one doc of 5.
    document_ids = torch.tensor([[0, 0, 1, 2, 2], [0, 0, 0, 0, 0]])
    mask = dense_document_mask(document_ids)
    assert mask.shape == (2, 1, 5, 5)
    assert mask.dtype == torch.bool
    expected_row0 = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 0, 1, 0],
            [0, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask[0, 0], expected_row0)
    assert torch.equal(mask[1, 0], torch.ones(5, 5, dtype=torch.bool).tril())
    # Every query may attend at least to itself: no fully masked rows (no NaNs).
    assert mask.diagonal(dim1=-2, dim2=-1).all()


# ------------------------------------------------------------------ flex masks


def _block_occupancy(dense: torch.Tensor, block: int) -> torch.Tensor:
    """[B, 1, T, T] bool -> [B, 1, nq, nk] bool: does the block contain any allowed pair?"""
    b, h, t, _ = dense.shape
    n = -(-t // block)
    padded = torch.zeros(b, h, n * block, n * block, dtype=torch.bool)
    padded[:, :, :t, :t] = dense
    return padded.view(b, h, n, block, n, block).any(dim=5).any(dim=3)


@needs_flex
@pytest.mark.parametrize(
    ("rows", "seq_len", "block_size"),
    [
        ([[20, 3, 17, 9], [59]], 64, 16),  # one row fully used by a single document
        ([[20, 3, 17, 9], [1, 40, 7]], 72, 16),  # seq_len not a multiple of the block size
        ([[11, 14, 6], [3, 30]], 40, 128),  # a single partial block
    ],
)
def test_block_mask_structure_matches_dense(rows, seq_len, block_size):
    _, docs = packed_ids(rows, seq_len=seq_len)
    bm = document_block_mask(docs, block_size=block_size)
    assert bm.shape == (2, 1, seq_len, seq_len)
    assert bm.kv_num_blocks.device == docs.device
    occupied = bm.to_dense().bool()
    assert torch.equal(occupied, _block_occupancy(dense_document_mask(docs), block_size))
    if seq_len > block_size:  # several blocks and documents -> genuinely block-sparse
        assert bm.sparsity() > 0


@needs_flex
@pytest.mark.parametrize(
    ("rows", "seq_len", "block_size"),
    [
        ([[7, 12, 5], [3, 20]], 32, 128),  # one partial block, padding in both rows
        ([[20, 3, 17, 9], [1, 40, 7]], 72, 16),  # several blocks, seq_len not a multiple
        ([[100, 60], [30, 30, 30, 30, 30]], 160, 128),  # 2 blocks of 128, last one partial
    ],
)
def test_flex_forward_matches_sdpa_dense(rows, seq_len, block_size):
    torch.manual_seed(0)
    _, docs = packed_ids(rows, seq_len=seq_len)
    batch, n_heads, n_kv_heads, head_dim = 2, 4, 2, 16
    q = torch.randn(batch, n_heads, seq_len, head_dim)
    k = torch.randn(batch, n_kv_heads, seq_len, head_dim)
    v = torch.randn(batch, n_kv_heads, seq_len, head_dim)

    block_mask = document_block_mask(docs, block_size=block_size)
    out_flex = flex_attention_forward(q, k, v, block_mask, enable_gqa=True)
    out_sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_document_mask(docs), enable_gqa=True)
    torch.testing.assert_close(out_flex, out_sdpa, atol=1e-5, rtol=1e-5)

    # Sanity: the mask matters (plain causal attention gives a different answer).
    out_causal = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert (out_causal - out_sdpa).abs().max() > 1e-2


@needs_flex
def test_document_ids_from_positions_drive_equal_masks():
    pos, docs = packed_ids([[4, 9, 2], [15]], seq_len=16)
    derived = document_ids_from_positions(pos)
    assert torch.equal(dense_document_mask(derived), dense_document_mask(docs))
    assert torch.equal(document_block_mask(derived).to_dense(), document_block_mask(docs).to_dense())


# ------------------------------------------------------------------------ CUDA


@needs_flex
@needs_cuda
@pytest.mark.parametrize(("seq_len", "block_size"), [(256, 128), (300, 128), (200, 64)])
def test_cuda_compiled_flex_forward_backward_matches_sdpa(seq_len, block_size):
    torch.manual_seed(0)
    device = torch.device("cuda")
    _, docs = packed_ids([[90, 17, seq_len - 150], [seq_len - 40, 25]], seq_len=seq_len)
    docs = docs.to(device)
    block_mask = document_block_mask(docs, block_size=block_size)  # compiled on CUDA by default
    assert block_mask.kv_num_blocks.device.type == "cuda"
    q = torch.randn(2, 4, seq_len, 32, device=device, requires_grad=True)
    k = torch.randn(2, 2, seq_len, 32, device=device, requires_grad=True)
    v = torch.randn(2, 2, seq_len, 32, device=device, requires_grad=True)
    grad_out = torch.randn(2, 4, seq_len, 32, device=device)

    out_flex = flex_attention_forward(q, k, v, block_mask, enable_gqa=True)  # compiled
    grads_flex = torch.autograd.grad(out_flex, (q, k, v), grad_out)
    out_sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_document_mask(docs), enable_gqa=True)
    grads_sdpa = torch.autograd.grad(out_sdpa, (q, k, v), grad_out)
    torch.testing.assert_close(out_flex, out_sdpa, atol=2e-4, rtol=2e-4)
    for g_flex, g_sdpa in zip(grads_flex, grads_sdpa):
        torch.testing.assert_close(g_flex, g_sdpa, atol=2e-3, rtol=2e-3)
