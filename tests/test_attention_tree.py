"""Prefix-tree rows: a branch document sees its trunk's first tokens through prefix_starts/prefix_ends.

A tree row here holds an ordinary conversation, then a trunk, then two branches of that trunk (each
its own document, placed after the trunk, positions continuing from its branch point, its tokens
carrying the trunk's visible range), then padding. The proofs:

* the dense mask is the rule, token by token (a brute-force loop); ``None`` arrays are exactly the
  document mask; bad arguments raise;
* eager FlexAttention with the tree ``BlockMask`` (small blocks, most of them partial) equals SDPA
  with the dense tree mask;
* the reference ``Transformer``, ``HFCausalLM`` (tiny Qwen3) and a plain ``transformers`` model through
  ``turnpack.integrations.hf`` give on one packed tree batch the summed loss and every gradient of
  the documents run one by one (each branch as trunk[:visible] + branch, positions from 0), and a
  different loss without the prefix arrays;
* the training loop and its loaders carry the arrays; paths that cannot express a tree (FlashAttention,
  transformers' detection from positions, torchtitan) refuse it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F
from turnpack.attention import (
    dense_document_mask,
    document_block_mask,
    flex_attention_available,
    flex_attention_forward,
    tree_causal_mask_mod,
)
from turnpack.data import IGNORE_INDEX
from turnpack.train.data import TREE_KEYS, PackedBatches, batch_keys
from turnpack.train.loop import forward_backward
from turnpack.train.model import Transformer, config_tiny

VOCAB = 64
SEQ_LEN = 56
TOL = 1e-5

needs_flex = pytest.mark.skipif(not flex_attention_available(), reason="torch has no flex_attention")


@pytest.fixture(autouse=True)
def _quiet_eager_flex():
    # Eager (uncompiled) flex_attention warns that it materialises the scores; expected on CPU.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        yield


# ------------------------------------------------------------------ tree rows


@dataclass
class Doc:
    """One document of a tree row: where it lies and what it sees before itself."""

    start: int
    length: int
    prefix: tuple[int, int] = (0, 0)  # row-absolute visible range; empty for ordinary documents
    trained: bool = True


def tree_row(
    gen: np.random.Generator, plain: int, trunk: int, branches: list[tuple[int, int]], seq_len: int = SEQ_LEN
) -> tuple[dict[str, np.ndarray], list[Doc]]:
    """An ordinary document of ``plain`` tokens, a trunk of ``trunk`` tokens, branches ``(visible,
    length)`` of that trunk, then padding; random tokens and a random trained subset of the labels
    (never across a document's end).  Returns the row's arrays ``[seq_len]`` and its documents."""
    docs = [Doc(0, plain), Doc(plain, trunk)]
    at = plain + trunk
    for visible, length in branches:
        assert 0 < visible <= trunk
        docs.append(Doc(at, length, prefix=(plain, plain + visible)))
        at += length
    assert at < seq_len, "leave room for padding"
    docs.append(Doc(at, seq_len - at, trained=False))
    input_ids = gen.integers(1, VOCAB, seq_len)
    labels = np.full(seq_len, IGNORE_INDEX)
    positions = np.zeros(seq_len, dtype=np.int64)
    document_ids = np.zeros(seq_len, dtype=np.int64)
    starts = np.zeros(seq_len, dtype=np.int64)
    ends = np.zeros(seq_len, dtype=np.int64)
    input_ids[docs[-1].start :] = 0  # padding token
    for d, doc in enumerate(docs):
        span = slice(doc.start, doc.start + doc.length)
        visible = doc.prefix[1] - doc.prefix[0]
        positions[span] = np.arange(visible, visible + doc.length)  # a branch continues its trunk
        document_ids[span] = d
        starts[span], ends[span] = doc.prefix
        if doc.trained:
            for t in range(doc.start, doc.start + doc.length - 1):
                if gen.random() < 0.7:
                    labels[t] = input_ids[t + 1]
    row = {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": positions,
        "document_ids": document_ids,
        "prefix_starts": starts,
        "prefix_ends": ends,
    }
    return row, docs


def tree_batch(seed: int = 0) -> tuple[dict[str, torch.Tensor], list[list[Doc]]]:
    """Two tree rows of different shapes (the second branch of row 1 sees the whole trunk)."""
    gen = np.random.default_rng(seed)
    rows = [
        tree_row(gen, plain=7, trunk=14, branches=[(5, 6), (10, 8)]),
        tree_row(gen, plain=3, trunk=18, branches=[(1, 9), (18, 12)]),
    ]
    batch = {k: torch.from_numpy(np.stack([r[k] for r, _ in rows]).astype(np.int64)) for k in rows[0][0]}
    return batch, [docs for _, docs in rows]


def plain(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without its prefix arrays (each branch then sees only itself)."""
    return {k: v for k, v in batch.items() if k not in TREE_KEYS}


def brute_force_mask(document_ids, prefix_starts, prefix_ends) -> torch.Tensor:
    rows, n = document_ids.shape
    out = torch.zeros(rows, 1, n, n, dtype=torch.bool)
    for b in range(rows):
        for q in range(n):
            for k in range(n):
                same = document_ids[b, q] == document_ids[b, k] and k <= q
                prefix = prefix_starts[b, q] <= k < prefix_ends[b, q]
                out[b, 0, q, k] = bool(same or prefix)
    return out


def alone_sequences(batch, docs_per_row) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every trained document as a sequence of its own ``(input_ids, shifted labels)``, positions
    0..: ordinary documents and trunks as they are, a branch as trunk[:visible] + branch with the
    trunk part untrained.  Labels come from the packed row, taken per document."""
    out = []
    for b, docs in enumerate(docs_per_row):
        ids, labels = batch["input_ids"][b], batch["labels"][b]
        for doc in docs:
            if not doc.trained:
                continue
            span = slice(doc.start, doc.start + doc.length)
            p0, p1 = doc.prefix
            seq_ids = torch.cat([ids[p0:p1], ids[span]])
            seq_labels = torch.cat([torch.full((p1 - p0,), IGNORE_INDEX), labels[span]])
            out.append((seq_ids, seq_labels))
    return out


def test_tree_rows_are_what_they_claim():
    batch, docs = tree_batch()
    assert all(len(d) == 5 for d in docs)  # plain, trunk, 2 branches, padding
    # Branch positions continue from the branch point: they go back inside the row, where
    # transformers' detection from positions (a new document where positions do not grow by 1)
    # would mis-cut; the trunk's tokens are visible to the branch only through the prefix range.
    for b, row_docs in enumerate(docs):
        for doc in row_docs[2:4]:
            assert int(batch["position_ids"][b, doc.start]) == doc.prefix[1] - doc.prefix[0] > 0
    assert int((batch["labels"] != IGNORE_INDEX).sum()) > 40


# ------------------------------------------------------------------ masks


def test_dense_tree_mask_is_the_rule():
    batch, _ = tree_batch()
    tree = {k: batch[k] for k in TREE_KEYS}
    mask = dense_document_mask(batch["document_ids"], **tree)
    assert mask.shape == (2, 1, SEQ_LEN, SEQ_LEN) and mask.dtype == torch.bool
    assert torch.equal(mask, brute_force_mask(batch["document_ids"], *tree.values()))
    # The prefix ranges add something (else the test proves nothing), and every token sees itself.
    assert not torch.equal(mask, dense_document_mask(batch["document_ids"]))
    assert mask.diagonal(dim1=-2, dim2=-1).all()


def test_no_prefix_arrays_is_the_document_mask():
    batch, _ = tree_batch()
    doc = batch["document_ids"]
    assert torch.equal(
        dense_document_mask(doc, prefix_starts=None, prefix_ends=None), dense_document_mask(doc)
    )
    empty = torch.zeros_like(doc)
    assert torch.equal(
        dense_document_mask(doc, prefix_starts=empty, prefix_ends=empty), dense_document_mask(doc)
    )
    # An empty range anywhere in the row (start == end, not only 0, 0) grants nothing either.
    at = torch.full_like(doc, 9)
    assert torch.equal(dense_document_mask(doc, prefix_starts=at, prefix_ends=at), dense_document_mask(doc))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"prefix_starts": "ok"}, "prefix_starts was given without prefix_ends"),
        ({"prefix_ends": "ok"}, "prefix_ends was given without prefix_starts"),
        ({"prefix_starts": "ok", "prefix_ends": "short"}, "prefix_ends has shape"),
        ({"prefix_starts": "short", "prefix_ends": "ok"}, "prefix_starts has shape"),
        ({"prefix_starts": "float", "prefix_ends": "ok"}, "integer"),
    ],
)
def test_bad_prefix_arguments_raise(kwargs, match):
    batch, _ = tree_batch()
    doc = batch["document_ids"]
    values = {"ok": batch["prefix_starts"], "short": batch["prefix_ends"][:, :-1], "float": doc.double()}
    resolved = {k: values[v] for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        dense_document_mask(doc, **resolved)
    if flex_attention_available():
        with pytest.raises(ValueError, match=match):
            document_block_mask(doc, compile=False, **resolved)
    if len(resolved) == 2:
        with pytest.raises(ValueError, match=match):
            tree_causal_mask_mod(doc, resolved["prefix_starts"], resolved["prefix_ends"])


@needs_flex
def test_tree_mask_mod_agrees_with_the_dense_mask():
    batch, _ = tree_batch()
    mod = tree_causal_mask_mod(batch["document_ids"], batch["prefix_starts"], batch["prefix_ends"])
    b, q, k = torch.meshgrid(torch.arange(2), torch.arange(SEQ_LEN), torch.arange(SEQ_LEN), indexing="ij")
    dense = dense_document_mask(
        batch["document_ids"], prefix_starts=batch["prefix_starts"], prefix_ends=batch["prefix_ends"]
    )
    assert torch.equal(mod(b, torch.zeros_like(b), q, k), dense[:, 0])


@needs_flex
def test_flex_tree_block_mask_equals_sdpa_dense_tree_mask():
    """Eager FlexAttention on CPU (forward; it has no CPU backward) with 16-token blocks: the row of
    56 tokens has partial blocks at every document edge and a partial last block."""
    batch, _ = tree_batch()
    tree = {k: batch[k] for k in TREE_KEYS}
    block_mask = document_block_mask(batch["document_ids"], block_size=16, compile=False, **tree)
    assert block_mask.to_dense().shape[-2:] == (4, 4)
    torch.manual_seed(0)
    q = torch.randn(2, 4, SEQ_LEN, 8, dtype=torch.float64)
    k = torch.randn(2, 2, SEQ_LEN, 8, dtype=torch.float64)
    v = torch.randn(2, 2, SEQ_LEN, 8, dtype=torch.float64)
    flex = flex_attention_forward(q, k, v, block_mask, enable_gqa=True, compile=False)
    dense = dense_document_mask(batch["document_ids"], **tree)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=dense, enable_gqa=True)
    torch.testing.assert_close(flex, sdpa, atol=1e-10, rtol=1e-10)
    # The tree matters here: the plain document mask gives other outputs on the branches.
    plain_out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=dense_document_mask(batch["document_ids"]), enable_gqa=True
    )
    assert (flex - plain_out).abs().max() > 1e-3


@needs_flex
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_compiled_flex_tree_forward_backward_matches_sdpa():
    """Compiled (fused, block-sparse) FlexAttention with the tree BlockMask, forward and backward."""
    device = torch.device("cuda")
    batch, _ = tree_batch()
    doc, starts, ends = (batch[k].to(device) for k in ("document_ids", *TREE_KEYS))
    block_mask = document_block_mask(doc, prefix_starts=starts, prefix_ends=ends, block_size=16)
    torch.manual_seed(0)
    q = torch.randn(2, 4, SEQ_LEN, 16, device=device, requires_grad=True)
    k = torch.randn(2, 2, SEQ_LEN, 16, device=device, requires_grad=True)
    v = torch.randn(2, 2, SEQ_LEN, 16, device=device, requires_grad=True)
    grad_out = torch.randn_like(q)
    out_flex = flex_attention_forward(q, k, v, block_mask, enable_gqa=True)
    grads_flex = torch.autograd.grad(out_flex, (q, k, v), grad_out)
    dense = dense_document_mask(doc, prefix_starts=starts, prefix_ends=ends)
    out_sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=dense, enable_gqa=True)
    grads_sdpa = torch.autograd.grad(out_sdpa, (q, k, v), grad_out)
    torch.testing.assert_close(out_flex, out_sdpa, atol=2e-4, rtol=2e-4)
    for g_flex, g_sdpa in zip(grads_flex, grads_sdpa):
        torch.testing.assert_close(g_flex, g_sdpa, atol=2e-3, rtol=2e-3)


# ------------------------------------------------------------------ models


def sharpen(model: torch.nn.Module, std: float = 0.15) -> torch.nn.Module:
    """Redraw the weight matrices with a larger spread: at the usual 0.02 a tiny random model barely
    uses its context, and the control (a branch without its trunk) would differ by little."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return model


def grads_of(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def assert_same_grads(packed: dict[str, torch.Tensor], alone: dict[str, torch.Tensor]) -> None:
    assert packed.keys() == alone.keys() and packed
    for name, g in packed.items():
        torch.testing.assert_close(g, alone[name], atol=TOL, rtol=TOL, msg=name)


def check_equivalence(model, masks_of) -> None:
    """Packed tree batch vs each document alone: the per-token loss (summed over every trained label,
    divided by their number, as the loop normalises) and its gradients; without the prefix arrays
    the loss differs.  ``masks_of(batch)`` builds the mask keyword arguments.  (The loss is summed in
    float32, so the float64 models compare per token, not as a sum of ~170.)"""
    batch, docs = tree_batch()
    trained = int((batch["labels"] != IGNORE_INDEX).sum())

    def packed_loss(b):
        _, loss_sum = model(
            b["input_ids"], b["position_ids"], labels=b["labels"], loss_reduction="sum", **masks_of(b)
        )
        return loss_sum / trained

    packed = packed_loss(batch)
    packed.backward()
    packed_grads = grads_of(model)

    alone = torch.zeros((), dtype=torch.float64)
    sequences = alone_sequences(batch, docs)
    assert sum(int((lab != IGNORE_INDEX).sum()) for _, lab in sequences) == trained
    for ids, labels in sequences:
        _, s = model(ids[None], labels=labels[None], loss_reduction="sum")  # positions 0.., plain causal
        alone = alone + s / trained
    alone.backward()
    alone_grads = grads_of(model)

    assert packed.item() == pytest.approx(alone.item(), abs=TOL)
    assert_same_grads(packed_grads, alone_grads)

    with torch.no_grad():
        without = packed_loss(plain(batch))
    assert abs(without.item() - packed.item()) > 1e-3


def tiny_transformer(backend: str = "sdpa") -> Transformer:
    torch.manual_seed(0)
    config = config_tiny(
        VOCAB, dim=32, n_heads=4, n_kv_heads=2, ffn_hidden=64, max_seq_len=128, attention_backend=backend
    )
    return Transformer(config).double()


def test_reference_transformer_tree_row_trains_like_each_document_alone():
    model = tiny_transformer()

    def masks_of(batch):
        return model.build_attention_mask(
            batch["document_ids"],
            prefix_starts=batch.get("prefix_starts"),
            prefix_ends=batch.get("prefix_ends"),
        )

    assert set(masks_of(tree_batch()[0])) == {"dense_mask"}
    check_equivalence(model, masks_of)


@needs_flex
def test_reference_transformer_flex_forward_equals_sdpa_on_tree_rows():
    batch, _ = tree_batch()
    sdpa, flex = tiny_transformer("sdpa"), tiny_transformer("flex")
    tree = {k: batch[k] for k in TREE_KEYS}
    masks = flex.build_attention_mask(batch["document_ids"], **tree)
    assert set(masks) == {"block_mask"}
    with torch.no_grad():
        want = sdpa(
            batch["input_ids"],
            batch["position_ids"],
            **sdpa.build_attention_mask(batch["document_ids"], **tree),
        )
        got = flex(batch["input_ids"], batch["position_ids"], **masks)
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


def test_training_loop_step_passes_the_prefix_arrays():
    """forward_backward (one step of the loop) takes the tree mask from the batch's arrays."""
    batch, _ = tree_batch()
    model = tiny_transformer()
    tree_totals = forward_backward(model, model, [batch])
    tree_grads = grads_of(model)
    masks = model.build_attention_mask(batch["document_ids"], **{k: batch[k] for k in TREE_KEYS})
    _, want = model(
        batch["input_ids"], batch["position_ids"], labels=batch["labels"], loss_reduction="sum", **masks
    )
    assert tree_totals.loss_sum.item() == pytest.approx(want.item(), abs=1e-9)
    plain_totals = forward_backward(model, model, [plain(batch)])
    grads_of(model)
    assert abs(plain_totals.loss_sum.item() - tree_totals.loss_sum.item()) > 1e-3
    assert tree_grads


def test_packed_batches_carry_the_prefix_arrays():
    batch, _ = tree_batch()
    rows = {k: v.numpy() for k, v in batch.items()}
    loader = PackedBatches(rows, batch_size=1, shuffle=False)
    first = next(iter(loader))
    assert set(first) == set(batch)
    for k in batch:
        assert torch.equal(first[k], batch[k][:1])
    assert set(next(iter(PackedBatches(plain(rows), batch_size=1)))) == set(plain(batch))
    half = {**plain(rows), "prefix_starts": rows["prefix_starts"]}
    with pytest.raises(ValueError, match="prefix_starts but no prefix_ends"):
        PackedBatches(half, batch_size=1)
    with pytest.raises(ValueError, match="prefix_starts but no prefix_ends"):
        batch_keys(half)
    assert batch_keys(batch) == ("input_ids", "labels", "position_ids", "document_ids", *TREE_KEYS)
    assert batch_keys({**plain(batch), "prefix_starts": None, "prefix_ends": None}) == tuple(plain(batch))


# ------------------------------------------------------------------ Hugging Face


@pytest.fixture(scope="module")
def hf_causal_lm(tmp_path_factory):
    pytest.importorskip("transformers")
    from hf_models import tiny_model_dir
    from turnpack.train.hf_model import load_hf_model

    folder = tiny_model_dir(tmp_path_factory.mktemp("qwen3"), "qwen3", vocab_size=VOCAB)
    return sharpen(
        load_hf_model(str(folder), backend="sdpa", device=torch.device("cpu"), vocab_size=None).double()
    )


def test_hf_causal_lm_tree_row_trains_like_each_document_alone(hf_causal_lm):
    model = hf_causal_lm

    def masks_of(batch):
        return model.build_attention_mask(
            batch["document_ids"],
            prefix_starts=batch.get("prefix_starts"),
            prefix_ends=batch.get("prefix_ends"),
        )

    check_equivalence(model, masks_of)


def plain_hf_model(attn_implementation: str):
    transformers = pytest.importorskip("transformers")
    from hf_models import tiny_config

    torch.manual_seed(0)
    return sharpen(
        transformers.AutoModelForCausalLM.from_config(
            tiny_config("qwen3", vocab_size=VOCAB),
            attn_implementation=attn_implementation,
            dtype=torch.float64,
        )
    )


def hf_loss_sum(logits: torch.Tensor, hf_labels: torch.Tensor) -> torch.Tensor:
    """Hugging Face's convention: position t predicts hf_labels[t + 1]; summed over trained tokens."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        hf_labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


@pytest.mark.parametrize("attn_implementation, flatten", [("sdpa", False), ("eager", False), ("sdpa", True)])
def test_hf_collator_tree_rows_train_like_each_document_alone(attn_implementation, flatten):
    from turnpack.integrations import hf

    model = plain_hf_model(attn_implementation)
    batch, docs = tree_batch()
    features = list(hf.PackedRowsDataset(batch))
    assert set(features[0]) == set(batch)  # the dataset carries the prefix columns
    collator = hf.DataCollatorForPackedRows(model, flatten=flatten)
    inputs = collator(features)
    assert inputs["attention_mask"].shape == (
        (1, 1, 2 * SEQ_LEN, 2 * SEQ_LEN) if flatten else (2, 1, SEQ_LEN, SEQ_LEN)
    )
    packed_sum = hf_loss_sum(model(**inputs).logits, inputs["labels"])
    packed_sum.backward()
    packed_grads = grads_of(model)

    alone_sum = torch.zeros((), dtype=torch.float64)
    for ids, labels in alone_sequences(batch, docs):
        hf_labels = hf.unshift_labels(labels[None])
        alone_sum = alone_sum + hf_loss_sum(model(input_ids=ids[None], use_cache=False).logits, hf_labels)
    alone_sum.backward()
    alone_grads = grads_of(model)
    assert packed_sum.item() == pytest.approx(alone_sum.item(), abs=TOL)
    assert_same_grads(packed_grads, alone_grads)

    # Control: the same rows without the prefix columns lose the branches' context.
    # (With validation the collator refuses them: the branch positions then continue from nothing.)
    without_prefix = list(hf.PackedRowsDataset(plain(batch)))
    with pytest.raises(ValueError, match="position_ids"):
        hf.DataCollatorForPackedRows(model, flatten=flatten)(without_prefix)
    with torch.no_grad():
        inputs = hf.DataCollatorForPackedRows(model, flatten=flatten, validate=False)(without_prefix)
        without = hf_loss_sum(model(**inputs).logits, inputs["labels"])
    assert abs(without.item() - packed_sum.item()) > 1e-3


@needs_flex
def test_hf_flex_attention_gets_the_tree_block_mask():
    pytest.importorskip("transformers")
    from turnpack.integrations import hf

    batch, _ = tree_batch()
    block_mask = hf.packed_model_inputs(batch, attn_implementation="flex_attention")["attention_mask"]
    dense = hf.packed_model_inputs(batch, attn_implementation="sdpa")["attention_mask"]
    tree = {k: batch[k] for k in TREE_KEYS}
    assert torch.equal(dense, dense_document_mask(batch["document_ids"], **tree))
    assert torch.equal(hf.packed_attention_mask(batch["document_ids"], "sdpa", **tree), dense)
    # The BlockMask's own mask_mod, token by token, is the dense tree mask.
    b, q, k = torch.meshgrid(torch.arange(2), torch.arange(SEQ_LEN), torch.arange(SEQ_LEN), indexing="ij")
    assert torch.equal(block_mask.mask_mod(b, torch.zeros_like(b), q, k), dense[:, 0])


def test_hf_paths_without_an_explicit_mask_refuse_tree_rows():
    pytest.importorskip("transformers")
    from turnpack.integrations import hf

    batch, _ = tree_batch()
    for impl in hf.FLASH_IMPLEMENTATIONS:
        with pytest.raises(ValueError, match=r"prefix-tree rows .* need an explicit attention mask"):
            hf.packed_model_inputs(batch, attn_implementation=impl)
    with pytest.raises(ValueError, match="return_attention_mask=False"):
        hf.packed_model_inputs(batch, attn_implementation="sdpa", return_attention_mask=False)
    with pytest.raises(ValueError, match="need an explicit attention mask"):
        hf.DataCollatorForPackedRows(attn_implementation="flash_attention_2")(
            list(hf.PackedRowsDataset(batch))
        )
    # All ranges empty: plain packed rows, which every path takes as before.
    empty = {
        **batch,
        "prefix_starts": torch.zeros_like(batch["prefix_starts"]),
        "prefix_ends": torch.zeros_like(batch["prefix_ends"]),
    }
    empty["position_ids"] = torch.cat([torch.arange(d.length) for row in tree_batch()[1] for d in row]).view(
        2, SEQ_LEN
    )
    flash = hf.packed_model_inputs(empty, attn_implementation="flash_attention_2")
    want = hf.packed_model_inputs(plain(empty), attn_implementation="flash_attention_2")
    assert flash.keys() == want.keys() and "attention_mask" not in flash
    assert all(
        torch.equal(v, want[k]) if isinstance(v, torch.Tensor) else v == want[k] for k, v in flash.items()
    )
    sdpa = hf.packed_model_inputs(empty, attn_implementation="sdpa")
    assert torch.equal(
        sdpa["attention_mask"],
        hf.packed_model_inputs(plain(empty), attn_implementation="sdpa")["attention_mask"],
    )
    # Half a tree, and branch positions that do not continue from the branch point.
    with pytest.raises(ValueError, match="prefix_ends but no prefix_starts"):
        hf.packed_model_inputs(
            {**plain(batch), "prefix_ends": batch["prefix_ends"]}, attn_implementation="sdpa"
        )
    restarted = {**batch, "position_ids": empty["position_ids"]}
    with pytest.raises(ValueError, match=r"position_ids.*branch"):
        hf.packed_model_inputs(restarted, attn_implementation="sdpa")


def test_hf_datasets_carry_the_prefix_columns():
    pytest.importorskip("transformers")
    from turnpack.integrations import hf

    batch, _ = tree_batch()
    rows = list(hf.PackedRowsIterableDataset([batch, plain(batch)]))
    assert [set(r) for r in rows] == [set(batch)] * 2 + [set(plain(batch))] * 2
    datasets = pytest.importorskip("datasets")
    table = hf.to_hf_dataset(batch)
    assert set(table.column_names) == set(batch)
    assert table[1]["prefix_ends"] == batch["prefix_ends"][1].tolist()
    stream = hf.to_hf_iterable_dataset([batch], columns=hf.ROW_KEYS + hf.TREE_KEYS)
    assert isinstance(stream, datasets.IterableDataset)
    assert next(iter(stream))["prefix_starts"] == batch["prefix_starts"][0].tolist()
    with pytest.raises(ValueError, match="TREE_KEYS"):
        next(iter(hf.to_hf_iterable_dataset([batch])))


# ------------------------------------------------------------------ torchtitan


def test_torchtitan_adapter_refuses_tree_rows():
    pytest.importorskip("torchtitan")
    from turnpack.integrations.torchtitan import to_torchtitan

    batch, _ = tree_batch()
    with pytest.raises(ValueError, match=r"turnpack's own loop .* Hugging Face adapter"):
        to_torchtitan(batch)
    with pytest.raises(ValueError, match="both"):
        to_torchtitan({**plain(batch), "prefix_starts": batch["prefix_starts"]})
    # Empty ranges everywhere and no arrays at all are plain rows.
    zeros = torch.zeros_like(batch["prefix_starts"])
    inputs, labels = to_torchtitan({**plain(batch), "prefix_starts": zeros, "prefix_ends": zeros})
    assert set(inputs) == {"input", "positions"} and torch.equal(labels, batch["labels"])
    to_torchtitan(plain(batch))
