"""Packed training == unpacked training, for the loss and for every parameter's gradient.

A packed batch (several conversations per row, restarted positions, per-document
causal mask, padding) must give exactly the same loss and gradients as running
each conversation alone and normalising the summed per-token loss by the total
number of trained tokens.  A control test shows that dropping the document mask
breaks the equality by a wide margin, so the equivalence test is not vacuous.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest

torch = pytest.importorskip("torch")

from turnpack.attention import (
    dense_document_mask,
    document_block_mask,
    document_ids_from_positions,
    flex_attention_available,
)
from turnpack.data import IGNORE_INDEX
from turnpack.train.model import ModelConfig, Transformer, config_100m, config_tiny

VOCAB = 64
PAD_ID = 0
SEQ_LEN = 32
# Conversations packed first-fit into two rows of SEQ_LEN: 9+5+14 (+4 pad) and 3+11+7 (+11 pad).
ROWS = [[9, 5, 14], [3, 11, 7]]
TOL = {"atol": 1e-5, "rtol": 1e-5}

needs_flex = pytest.mark.skipif(not flex_attention_available(), reason="torch has no flex_attention")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@dataclass
class Conversation:
    input_ids: torch.Tensor  # [n]
    labels: torch.Tensor  # [n]: next token where it is trained, else -100; -100 at the end


@dataclass
class PackedBatch:
    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    document_ids: torch.Tensor


@pytest.fixture(autouse=True)
def _deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        yield
    torch.use_deterministic_algorithms(previous)


def make_conversations(seed: int = 0) -> list[Conversation]:
    """Random conversations with a random mask of trained tokens (at least one each)."""
    gen = torch.Generator().manual_seed(seed)
    conversations = []
    for n in [n for row in ROWS for n in row]:
        tokens = torch.randint(1, VOCAB, (n,), generator=gen)
        trained = torch.rand(n, generator=gen) < 0.6  # is token t a supervised target?
        trained[0] = False  # the first token is never predicted
        trained[-1] = True
        labels = torch.full((n,), IGNORE_INDEX)
        labels[:-1] = torch.where(trained[1:], tokens[1:], torch.tensor(IGNORE_INDEX))
        conversations.append(Conversation(tokens, labels))
    return conversations


def pack(conversations: list[Conversation], device: torch.device | str = "cpu") -> PackedBatch:
    """Pack into len(ROWS) rows of SEQ_LEN exactly as the packer lays rows out."""
    it = iter(conversations)
    cols: dict[str, list[torch.Tensor]] = {
        "input_ids": [],
        "labels": [],
        "position_ids": [],
        "document_ids": [],
    }
    for lengths in ROWS:
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in cols}
        for doc_id, n in enumerate(lengths):
            conv = next(it)
            assert conv.input_ids.numel() == n
            parts["input_ids"].append(conv.input_ids)
            parts["labels"].append(conv.labels)
            parts["position_ids"].append(torch.arange(n))
            parts["document_ids"].append(torch.full((n,), doc_id))
        pad = SEQ_LEN - sum(lengths)
        parts["input_ids"].append(torch.full((pad,), PAD_ID))
        parts["labels"].append(torch.full((pad,), IGNORE_INDEX))
        parts["position_ids"].append(torch.arange(pad))  # padding is its own run from 0
        parts["document_ids"].append(torch.full((pad,), len(lengths)))  # ... and its own document
        for k, column in cols.items():
            column.append(torch.cat(parts[k]))
    return PackedBatch(**{k: torch.stack(v).to(device) for k, v in cols.items()})


def make_model(backend: str = "sdpa", *, tie_embeddings: bool = False, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    # init_std is larger than the usual 0.02 so that the output depends clearly on the
    # context: with tiny weights every context gives near-uniform logits, and a mask
    # bug would move the loss by only ~1e-3.
    config = ModelConfig(
        vocab_size=VOCAB,
        dim=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        ffn_hidden=64,
        max_seq_len=64,
        tie_embeddings=tie_embeddings,
        attention_backend=backend,  # type: ignore[arg-type]
        init_std=0.3,
    )
    return Transformer(config).float()


def unpacked_loss(model: Transformer, conversations: list[Conversation]) -> torch.Tensor:
    """Sum of per-token losses of each conversation run alone / total trained tokens."""
    total = torch.zeros(())
    count = 0
    for conv in conversations:
        _, loss_sum = model(conv.input_ids[None], labels=conv.labels[None], loss_reduction="sum")
        total = total + loss_sum
        count += int((conv.labels != IGNORE_INDEX).sum())
    return total / count


def grads(model: Transformer, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("tie_embeddings", [False, True])
def test_packed_loss_and_grads_equal_unpacked_sdpa(tie_embeddings):
    conversations = make_conversations()
    batch = pack(conversations)
    model = make_model("sdpa", tie_embeddings=tie_embeddings)

    masks = model.build_attention_mask(batch.document_ids)
    assert set(masks) == {"dense_mask"}
    logits, packed = model(batch.input_ids, batch.position_ids, labels=batch.labels, **masks)
    assert logits.shape == (len(ROWS), SEQ_LEN, VOCAB)
    reference = unpacked_loss(model, conversations)
    torch.testing.assert_close(packed, reference, **TOL)

    g_packed = grads(model, packed)
    g_reference = grads(model, unpacked_loss(model, conversations))
    assert g_packed.keys() == g_reference.keys()
    for name in g_packed:
        assert g_packed[name].abs().sum() > 0, name  # every parameter is exercised
        torch.testing.assert_close(
            g_packed[name], g_reference[name], **TOL, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_packed_logits_equal_unpacked_on_real_tokens():
    conversations = make_conversations(seed=1)
    batch = pack(conversations)
    model = make_model("sdpa")
    with torch.no_grad():
        logits = model(
            batch.input_ids, batch.position_ids, dense_mask=dense_document_mask(batch.document_ids)
        )
        it = iter(conversations)
        for row, lengths in enumerate(ROWS):
            start = 0
            for n in lengths:
                alone = model(next(it).input_ids[None])[0]
                torch.testing.assert_close(logits[row, start : start + n], alone, **TOL)
                start += n


def test_without_document_mask_loss_and_grads_differ():
    """Control: plain causal attention over the whole packed row is NOT equivalent.

    Run with exactly the inputs of the equivalence test, only the mask removed; the
    gaps are orders of magnitude above its 1e-5 tolerance, so that test can fail.
    """
    conversations = make_conversations()
    batch = pack(conversations)
    model = make_model("sdpa")
    reference = unpacked_loss(model, conversations)
    logits_no_mask, no_mask = model(batch.input_ids, batch.position_ids, labels=batch.labels)
    assert abs(no_mask.item() - reference.item()) > 1e-2

    # The batch mean hides part of it (per-token errors of both signs cancel); per
    # trained token the cross-document leak moves the loss by about a nat on average.
    with torch.no_grad():
        logits_masked = model(
            batch.input_ids, batch.position_ids, **model.build_attention_mask(batch.document_ids)
        )
    trained = batch.labels != IGNORE_INDEX
    per_token = [
        torch.nn.functional.cross_entropy(lg[trained], batch.labels[trained], reduction="none")
        for lg in (logits_no_mask.detach(), logits_masked)
    ]
    assert (per_token[0] - per_token[1]).abs().mean() > 0.1

    g_no_mask = grads(model, no_mask)
    g_reference = grads(model, unpacked_loss(model, conversations))
    worst = max((g_no_mask[n] - g_reference[n]).abs().max().item() for n in g_reference)
    assert worst > 1e-2


def test_document_ids_from_positions_gives_same_loss():
    conversations = make_conversations(seed=2)
    batch = pack(conversations)
    model = make_model("sdpa")
    derived = document_ids_from_positions(batch.position_ids)
    assert torch.equal(derived, batch.document_ids.to(torch.int32))
    with torch.no_grad():
        _, a = model(
            batch.input_ids, batch.position_ids, labels=batch.labels, **model.build_attention_mask(derived)
        )
        reference = unpacked_loss(model, conversations)
    torch.testing.assert_close(a, reference, **TOL)


@needs_flex
@pytest.mark.parametrize("block_size", [8, 128])
def test_packed_loss_equal_unpacked_flex_forward(block_size):
    """FlexAttention on CPU: forward only (PyTorch has no CPU backward for it)."""
    conversations = make_conversations(seed=3)
    batch = pack(conversations)
    model = make_model("flex")
    assert set(model.build_attention_mask(batch.document_ids)) == {"block_mask"}
    block_mask = document_block_mask(batch.document_ids, block_size=block_size)
    with torch.no_grad():
        _, packed = model(batch.input_ids, batch.position_ids, labels=batch.labels, block_mask=block_mask)
        reference = unpacked_loss(model, conversations)
        _, dense = model(
            batch.input_ids,
            batch.position_ids,
            labels=batch.labels,
            dense_mask=dense_document_mask(batch.document_ids),
        )
    torch.testing.assert_close(packed, reference, **TOL)
    torch.testing.assert_close(packed, dense, **TOL)


# ---------------------------------------------------------------- model basics


def test_loss_ignores_untrained_and_handles_empty():
    model = make_model("sdpa")
    ids = torch.randint(1, VOCAB, (2, 6))
    labels = torch.full((2, 6), IGNORE_INDEX)
    _, loss = model(ids, labels=labels)
    assert loss.item() == 0.0  # no trained token: 0, not NaN
    labels[0, 2] = 5
    logits, loss = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(logits[0, 2][None], torch.tensor([5]))
    torch.testing.assert_close(loss, expected)


def test_auto_backend_is_sdpa_on_cpu_and_masks_are_exclusive():
    model = make_model("auto")
    assert model.resolved_backend() == "sdpa"
    assert model.resolved_backend("cuda") == "flex"
    batch = pack(make_conversations())
    with pytest.raises(ValueError):
        model(
            batch.input_ids,
            block_mask=object(),  # type: ignore[arg-type]
            dense_mask=dense_document_mask(batch.document_ids),
        )


def test_parameter_counts_and_presets():
    with torch.device("meta"):
        big = Transformer(config_100m(32000))
    assert 90e6 < big.num_parameters() < 115e6
    assert big.num_parameters() - big.num_parameters(exclude_embeddings=True) == 32000 * 768  # tied: once
    tiny = Transformer(config_tiny(256))
    assert tiny.num_parameters() < 1_000_000
    untied_head = tiny.lm_head.weight.numel()
    n_tied = Transformer(config_tiny(256, tie_embeddings=True)).num_parameters()
    assert tiny.num_parameters() - n_tied == untied_head
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=10, dim=30, n_heads=4)


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    model = Transformer(config_tiny(256, dim=128, n_layers=8, ffn_hidden=256))
    std = model.config.init_std
    assert model.layers[0].attn.q_proj.weight.std().item() == pytest.approx(std, rel=0.05)
    assert model.layers[0].mlp.down_proj.weight.std().item() == pytest.approx(std / 4, rel=0.05)
    assert model.layers[3].attn.o_proj.weight.std().item() == pytest.approx(std / 4, rel=0.05)
    assert torch.equal(model.norm.weight, torch.ones(128))


def test_generate_greedy_and_eos():
    model = make_model("sdpa")
    prompt = torch.tensor([3, 14, 15, 9, 2])
    out = model.generate(prompt, max_new_tokens=6)
    assert out.shape == (6,) and out.dtype == prompt.dtype
    # Greedy decoding is reproducible and agrees with a full forward pass at each step.
    assert torch.equal(model.generate(prompt[None], max_new_tokens=6), out)
    full = torch.cat([prompt, out])
    with torch.no_grad():
        logits = model(full[None])[0]
    assert torch.equal(logits[len(prompt) - 1 : -1].argmax(-1), out)
    # Stops right after eos (included in the output).
    eos = int(out[2])
    first = int((out == eos).nonzero()[0])
    assert torch.equal(model.generate(prompt, max_new_tokens=6, eos_id=eos), out[: first + 1])
    # Sampling with a seeded generator is reproducible.
    a = model.generate(prompt, 5, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 5, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


# ------------------------------------------------------------------------ CUDA


@needs_flex
@needs_cuda
def test_cuda_flex_packed_loss_and_grads_equal_unpacked():
    """On CUDA the auto backend is compiled FlexAttention, trainable end to end."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(False)  # flex backward uses atomics
    conversations = make_conversations(seed=4)
    batch = pack(conversations, device="cuda")
    model = make_model("auto").cuda()
    masks = model.build_attention_mask(batch.document_ids)
    assert set(masks) == {"block_mask"}
    _, packed = model(batch.input_ids, batch.position_ids, labels=batch.labels, **masks)
    g_packed = grads(model, packed)
    cuda_conversations = [Conversation(c.input_ids.cuda(), c.labels.cuda()) for c in conversations]
    reference = unpacked_loss(model, cuda_conversations)
    torch.testing.assert_close(packed, reference.to(packed.device), atol=1e-4, rtol=1e-4)
    g_reference = grads(model, unpacked_loss(model, cuda_conversations))
    for name in g_packed:
        torch.testing.assert_close(g_packed[name], g_reference[name], atol=1e-4, rtol=1e-4)
