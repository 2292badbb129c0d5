"""turnpack.integrations.hf: packed rows for Hugging Face transformers models, Trainer and TRL.

The proof: for tiny random Qwen3 and Llama models, one packed batch (several conversations per row,
several rows, padding, a row of padding only) gives the loss and every parameter's gradient of the
conversations run one by one (summed per-token loss over all trained tokens / their number), for
each way the adapter separates documents on CPU (explicit SDPA and eager masks, transformers' own
detection from position_ids, flattened rows) and, forward only, FlexAttention. The conversations
alone are labelled from their own `Encoding` (`mask`), not from the packed rows, and a control shows
that without document separation the loss differs.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import turnpack
from turnpack.attention import dense_document_mask, flex_attention_available
from turnpack.data import IGNORE_INDEX
from turnpack.integrations import hf
from turnpack.train import examples

SEQ_LEN = 160
NUM_CONVERSATIONS = 12
# "atol 1e-5 relative to scale": |packed - alone| <= 1e-5 * max(1, max |alone|), per tensor.
TOL = 1e-5


# ------------------------------------------------------------------ data and models


@pytest.fixture(scope="module")
def encodings() -> list[turnpack.Encoding]:
    dialogues = examples.register_dialogues(NUM_CONVERSATIONS, seed=3, min_turns=3, max_turns=4)
    return examples.example_tokenizer().encode_batch(dialogues)


@pytest.fixture(scope="module")
def packed(encodings) -> turnpack.PackedBatch:
    return turnpack.pack(encodings, SEQ_LEN, pad_id=examples.PAD_ID)


@pytest.fixture(scope="module")
def rows(packed) -> dict[str, np.ndarray]:
    """The packer's rows as it gives them (int32 tokens and positions, int64 labels), plus one row of
    padding only, laid out as the packer lays out padding (its own document, positions from 0)."""
    n = SEQ_LEN
    return {
        "input_ids": np.concatenate([packed.input_ids, np.full((1, n), examples.PAD_ID, np.int32)]),
        "labels": np.concatenate([packed.labels, np.full((1, n), IGNORE_INDEX, np.int64)]),
        "position_ids": np.concatenate([packed.position_ids, np.arange(n, dtype=np.int32)[None]]),
        "document_ids": np.concatenate([packed.document_ids, np.zeros((1, n), np.int32)]),
    }


def documents(packed) -> list[tuple[int, int, int, int]]:
    """(row, start, stop, sample id) of every packed document."""
    out = []
    for r in range(len(packed)):
        count = int(packed.row_doc_offsets[r + 1] - packed.row_doc_offsets[r])
        for d in range(count):
            out.append(
                (
                    r,
                    int(packed.cu_seqlens[r, d]),
                    int(packed.cu_seqlens[r, d + 1]),
                    int(packed.sample_ids[r, d]),
                )
            )
    return out


def test_the_rows_exercise_packing(packed, rows):
    """The batch the proofs use: several rows, several conversations per row, padding, a padding row."""
    counts = np.diff(packed.row_doc_offsets)
    assert len(packed) >= 3 and counts.min() >= 2 and counts.max() >= 3
    assert packed.stats["packed"] == NUM_CONVERSATIONS and packed.stats["padding_tokens"] > 0
    assert rows["input_ids"].dtype == np.int32 and rows["labels"].dtype == np.int64


def tiny_model(kind: str, attn_implementation: str, dtype: torch.dtype = torch.float64, **config):
    settings = {
        "vocab_size": examples.VOCAB_SIZE,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "head_dim": 16,
        "max_position_embeddings": 512,
        **config,
    }
    cls = {"qwen3": transformers.Qwen3Config, "llama": transformers.LlamaConfig}[kind]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(
        cls(**settings), attn_implementation=attn_implementation, dtype=dtype
    )
    assert model.config._attn_implementation == attn_implementation and model.dtype == dtype
    return model


def solo_labels(encoding: turnpack.Encoding) -> torch.Tensor:
    """Hugging Face labels of one conversation alone, from its own mask: token t is a target where
    trained; the first token is never predicted."""
    ids = torch.from_numpy(encoding.input_ids.astype(np.int64))
    labels = torch.where(torch.from_numpy(encoding.mask), ids, IGNORE_INDEX)
    labels[0] = IGNORE_INDEX
    return labels


def solo_loss_and_grads(model, encodings, sample_ids) -> tuple[float, dict[str, torch.Tensor]]:
    """Each conversation alone: sum of its per-token losses, over the trained tokens of all of them."""
    labels = [solo_labels(encodings[s]) for s in sample_ids]
    total = int(sum(int((lab != IGNORE_INDEX).sum()) for lab in labels))
    model.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for s, lab in zip(sample_ids, labels):
        ids = torch.from_numpy(encodings[s].input_ids.astype(np.int64))[None]
        # The model's own loss with num_items_in_batch: sum over this conversation / total.
        loss = model(input_ids=ids, labels=lab[None], num_items_in_batch=total, use_cache=False).loss
        loss.backward()
        loss_sum += float(loss.detach())
    return loss_sum, grads(model)


def grads(model) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        out[name] = p.grad.detach().clone()
    return out


def packed_loss_and_grads(model, inputs) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**inputs).loss  # the default mean over every trained token of the batch
    loss.backward()
    return float(loss.detach()), grads(model)


def assert_close(actual: float | torch.Tensor, expected: float | torch.Tensor, what: str) -> None:
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    scale = max(1.0, float(expected.abs().max()))
    error = float((actual - expected).abs().max())
    assert error <= TOL * scale, f"{what}: max |difference| {error:.3g} > {TOL} x {scale:.3g}"


def assert_grads_close(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert_close(actual[name], expected[name], f"gradient of {name}")


@pytest.fixture(scope="module")
def sample_ids(packed) -> list[int]:
    return [sid for _, _, _, sid in documents(packed)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one intra-op thread is fastest, and far faster than two when other
    processes compete for the cores (thread oversubscription made a step 50x slower on a 2-core box)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        yield


# ------------------------------------------------------------------ labels, positions, masks


def test_labels_and_positions_on_real_rows(packed, rows, encodings):
    inputs = hf.packed_model_inputs(rows, attn_implementation="sdpa")
    ids, labels, pos = inputs["input_ids"], inputs["labels"], inputs["position_ids"]
    doc = torch.from_numpy(rows["document_ids"].astype(np.int64))
    assert ids.dtype == labels.dtype == pos.dtype == torch.int64  # from the packer's int32
    assert inputs["use_cache"] is False
    assert torch.equal(ids, torch.from_numpy(rows["input_ids"].astype(np.int64)))
    # The convention: the model shifts, so a label is the token at its own position ...
    trained = labels != IGNORE_INDEX
    assert not trained[:, 0].any()
    assert torch.equal(labels[trained], ids[trained])
    # ... and the position before it, which predicts it, is in the same document (never across a
    # boundary, never from padding: padding's id is the row's document count).
    r, t = trained.nonzero(as_tuple=True)
    assert torch.equal(doc[r, t - 1], doc[r, t])
    counts = torch.from_numpy(np.diff(packed.row_doc_offsets).astype(np.int64))
    assert (doc[r, t] < counts[r]).all()
    assert not trained[-1].any()  # the padding row
    # Exactly the tokens each conversation's own mask trains, no more, no fewer.
    expected = torch.zeros_like(trained)
    for row, start, stop, sid in documents(packed):
        assert torch.equal(ids[row, start:stop], torch.from_numpy(encodings[sid].input_ids.astype(np.int64)))
        expected[row, start:stop] = solo_labels(encodings[sid]) != IGNORE_INDEX
        assert torch.equal(pos[row, start:stop], torch.arange(stop - start))
    assert torch.equal(trained, expected)
    assert int(trained.sum()) == int((packed.labels != IGNORE_INDEX).sum()) == packed.stats["trained_tokens"]
    # Padding restarts at 0 like a document of its own.
    for row in range(len(packed)):
        used = int(packed.cu_seqlens[row, np.diff(packed.row_doc_offsets)[row]])
        if used < SEQ_LEN:
            assert torch.equal(pos[row, used:], torch.arange(SEQ_LEN - used))
    assert torch.equal(pos[-1], torch.arange(SEQ_LEN))


def test_unshift_labels_is_the_inverse_shift():
    labels = torch.tensor([[5, -100, 7, -100], [-100, -100, -100, -100]])
    assert hf.unshift_labels(labels).tolist() == [[-100, 5, -100, 7], [-100] * 4]
    with pytest.raises(ValueError, match=r"labels\[0, -1\]"):
        hf.unshift_labels(torch.tensor([[1, 2]]))


def test_masks_per_backend(rows):
    doc = torch.from_numpy(rows["document_ids"].astype(np.int64))
    allowed = dense_document_mask(doc)
    sdpa = hf.packed_model_inputs(rows, attn_implementation="sdpa")["attention_mask"]
    assert sdpa.dtype == torch.bool and sdpa.shape == (len(doc), 1, SEQ_LEN, SEQ_LEN)
    assert torch.equal(sdpa, allowed)
    eager = hf.packed_model_inputs(rows, attn_implementation="eager", mask_dtype=torch.float64)[
        "attention_mask"
    ]
    assert eager.dtype == torch.float64
    assert torch.equal(eager == 0, allowed) and (eager[~allowed] == torch.finfo(torch.float64).min).all()
    # The model's dtype is the default for the eager mask.
    model = tiny_model("llama", "eager", dtype=torch.float32)
    assert hf.packed_model_inputs(rows, model=model)["attention_mask"].dtype == torch.float32
    if flex_attention_available():
        from torch.nn.attention.flex_attention import BlockMask

        block = hf.packed_model_inputs(rows, attn_implementation="flex_attention")["attention_mask"]
        assert isinstance(block, BlockMask)
        dense = torch.zeros(len(doc), 1, SEQ_LEN, SEQ_LEN, dtype=torch.bool)
        for r in range(len(doc)):
            q = torch.arange(SEQ_LEN)
            dense[r, 0] = block.mask_mod(torch.tensor(r), torch.tensor(0), q[:, None], q[None, :])
        assert torch.equal(dense, allowed)
    no_mask = hf.packed_model_inputs(rows, attn_implementation="sdpa", return_attention_mask=False)
    assert "attention_mask" not in no_mask and no_mask["use_cache"] is False


def test_flattened_rows_for_flash_attention(packed, rows):
    inputs = hf.packed_model_inputs(rows, attn_implementation="flash_attention_2")
    n = len(rows["input_ids"])
    assert "attention_mask" not in inputs
    for key in ("input_ids", "labels", "position_ids"):
        assert inputs[key].shape == (1, n * SEQ_LEN)
    unflat = hf.packed_model_inputs(rows, attn_implementation="sdpa", return_attention_mask=False)
    assert torch.equal(inputs["labels"], unflat["labels"].reshape(1, -1))
    # Sequence boundaries: every document and every padding run, from the packer's cu_seqlens.
    expected = []
    counts = np.diff(packed.row_doc_offsets)
    for r in range(len(packed)):
        bounds = packed.cu_seqlens[r, : counts[r] + 1].tolist()
        if bounds[-1] < SEQ_LEN:
            bounds.append(SEQ_LEN)
        expected += [r * SEQ_LEN + b for b in bounds[:-1]]
    expected += [len(packed) * SEQ_LEN, n * SEQ_LEN]  # the padding-only row, then the end
    assert inputs["cu_seq_lens_q"].dtype == torch.int32
    assert inputs["cu_seq_lens_q"].tolist() == inputs["cu_seq_lens_k"].tolist() == expected
    assert inputs["max_length_q"] == inputs["max_length_k"] == max(np.diff(expected))
    with pytest.raises(ValueError, match="takes no attention_mask"):
        hf.packed_model_inputs(rows, attn_implementation="flash_attention_2", return_attention_mask=True)


# ------------------------------------------------------------------ the proof


MODES = {
    # attn_implementation, packed_model_inputs keywords
    "sdpa-mask": ("sdpa", {}),
    "eager-mask": ("eager", {}),
    "sdpa-position_ids": ("sdpa", {"return_attention_mask": False}),
    "eager-position_ids": ("eager", {"return_attention_mask": False}),
    "sdpa-flattened-mask": ("sdpa", {"flatten": True}),
    "sdpa-flattened-position_ids": ("sdpa", {"flatten": True, "return_attention_mask": False}),
}


@pytest.fixture(scope="module")
def solo_reference(encodings, sample_ids):
    """Loss and gradients of the conversations alone, per model kind (they do not depend on the
    attention backend: one conversation needs no mask beyond causal)."""
    return {
        kind: solo_loss_and_grads(tiny_model(kind, "sdpa"), encodings, sample_ids)
        for kind in ("qwen3", "llama")
    }


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
@pytest.mark.parametrize("mode", list(MODES))
def test_packed_equals_alone(kind, mode, rows, solo_reference):
    impl, kwargs = MODES[mode]
    model = tiny_model(kind, impl)
    inputs = hf.packed_model_inputs(rows, model=model, **kwargs)
    loss, packed_grads = packed_loss_and_grads(model, inputs)
    solo_loss, solo_grads = solo_reference[kind]
    assert np.isfinite(loss)
    assert_close(loss, solo_loss, "loss")
    assert_grads_close(packed_grads, solo_grads)


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_without_document_separation_the_loss_differs(kind, rows, solo_reference):
    """Control: the same rows with a plain causal mask and positions 0..L-1 per row fail the check."""
    model = tiny_model(kind, "sdpa")
    inputs = hf.packed_model_inputs(rows, model=model, return_attention_mask=False)
    plain = {
        "input_ids": inputs["input_ids"],
        "labels": inputs["labels"],
        "position_ids": torch.arange(SEQ_LEN).expand(len(inputs["input_ids"]), -1),
        "use_cache": False,
    }
    loss, plain_grads = packed_loss_and_grads(model, plain)
    solo_loss, solo_grads = solo_reference[kind]
    with pytest.raises(AssertionError):
        assert_close(loss, solo_loss, "loss")
    with pytest.raises(AssertionError):
        assert_grads_close(plain_grads, solo_grads)
    # Restarted positions alone are not enough either: with an explicit causal mask over the whole
    # row, documents still attend to each other.
    causal = torch.ones(SEQ_LEN, SEQ_LEN, dtype=torch.bool).tril().expand(len(inputs["input_ids"]), 1, -1, -1)
    with torch.no_grad():
        loss = float(model(**{**inputs, "attention_mask": causal}).loss)
    with pytest.raises(AssertionError):
        assert_close(loss, solo_loss, "loss")


def test_turnpack_labels_passed_as_they_are_train_the_wrong_tokens(rows, solo_reference):
    """Control for the label convention: turnpack's shifted labels given to the model unconverted."""
    model = tiny_model("qwen3", "sdpa")
    inputs = hf.packed_model_inputs(rows, model=model)
    shifted = torch.from_numpy(rows["labels"])
    with torch.no_grad():
        loss = float(model(**{**inputs, "labels": shifted}).loss)
    with pytest.raises(AssertionError):
        assert_close(loss, solo_reference["qwen3"][0], "loss")
    # and the converter refuses labels that were converted already
    with pytest.raises(ValueError, match="unshifted convention"):
        hf.packed_model_inputs({**rows, "labels": inputs["labels"].numpy()}, attn_implementation="sdpa")


def _eager_flex(query, key, value, training=False, **kwargs):
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(query, key, value, **kwargs)


@pytest.mark.skipif(not flex_attention_available(), reason="torch has no flex_attention")
@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_flex_attention_forward_equals_alone(kind, rows, solo_reference, monkeypatch):
    """FlexAttention with the adapter's BlockMask, forward only: FlexAttention has no backward on CPU
    in torch 2.15 (NotImplementedError), so the gradients are checked with sdpa/eager above.

    transformers always runs `torch.compile(flex_attention)`, which takes ~40 s to compile on a 2-core
    CPU; the test runs PyTorch's own uncompiled flex_attention instead (same BlockMask, same
    transformers attention code around it)."""
    import transformers.integrations.flex_attention as hf_flex

    monkeypatch.setattr(hf_flex, "compile_friendly_flex_attention", _eager_flex)
    model = tiny_model(kind, "flex_attention")
    inputs = hf.packed_model_inputs(rows, model=model)
    with torch.no_grad():
        loss = float(model(**inputs).loss)
    assert_close(loss, solo_reference[kind][0], "loss")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention has no backward on CPU (torch 2.15)")
def test_flex_attention_gradients_on_cuda(rows, encodings, sample_ids, monkeypatch):
    """On CUDA: transformers' compiled FlexAttention with the adapter's BlockMask (built compiled on
    the GPU), loss and gradients in fp32 with TF32 off, against sdpa alone. Skipped on CPU machines."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = tiny_model("qwen3", "flex_attention", dtype=torch.float32).cuda()
    inputs = hf.packed_model_inputs(rows, model=model, device="cuda")
    loss, packed_grads = packed_loss_and_grads(model, inputs)
    reference = tiny_model("qwen3", "sdpa", dtype=torch.float32).cuda()
    labels = [solo_labels(encodings[s]).cuda() for s in sample_ids]
    total = int(sum(int((lab != IGNORE_INDEX).sum()) for lab in labels))
    solo_loss = 0.0
    for s, lab in zip(sample_ids, labels):
        ids = torch.from_numpy(encodings[s].input_ids.astype(np.int64))[None].cuda()
        part = reference(input_ids=ids, labels=lab[None], num_items_in_batch=total, use_cache=False).loss
        part.backward()
        solo_loss += float(part.detach())
    assert abs(loss - solo_loss) <= 1e-4 * max(1.0, abs(solo_loss))
    for name, p in reference.named_parameters():
        scale = max(1.0, float(p.grad.abs().max()))
        assert float((packed_grads[name] - p.grad).abs().max()) <= 1e-4 * scale, name


def test_sliding_window_models_need_position_ids(rows, encodings, sample_ids):
    """A model with a sliding-window layer: an explicit mask would drop the window, so it is refused;
    transformers' own masks from position_ids give the conversations-alone loss and gradients."""
    model = tiny_model("qwen3", "sdpa", use_sliding_window=True, sliding_window=8, max_window_layers=1)
    assert model.config.layer_types == ["full_attention", "sliding_attention"]
    with pytest.raises(ValueError, match="sliding_window=8"):
        hf.packed_model_inputs(rows, model=model)
    with pytest.raises(ValueError, match="sliding_window=8"):
        hf.DataCollatorForPackedRows(model)([hf.PackedRowsDataset(rows)[0]])
    inputs = hf.packed_model_inputs(rows, model=model, return_attention_mask=False)
    loss, packed_grads = packed_loss_and_grads(model, inputs)
    solo_loss, solo_grads = solo_loss_and_grads(model, encodings, sample_ids)
    assert_close(loss, solo_loss, "loss")
    assert_grads_close(packed_grads, solo_grads)
    # The refusal is warranted: the document mask, forced on this model, drops the window.
    forced = hf.packed_model_inputs(rows, attn_implementation="sdpa")  # no config, so no check
    with torch.no_grad():
        forced_loss = float(model(**forced).loss)
    with pytest.raises(AssertionError):
        assert_close(forced_loss, solo_loss, "loss")


# ------------------------------------------------------------------ datasets, collator, errors


def test_datasets_and_collator_give_the_converted_rows(rows):
    dataset = hf.PackedRowsDataset(rows)
    assert len(dataset) == len(rows["input_ids"])
    item = dataset[2]
    assert set(item) == set(hf.ROW_KEYS) and all(
        v.dtype == torch.int64 and v.shape == (SEQ_LEN,) for v in item.values()
    )
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    collator = hf.DataCollatorForPackedRows(attn_implementation="sdpa")
    picked = [1, 0, len(dataset) - 1]  # includes the padding-only row
    batch = collator([dataset[i] for i in picked])
    subset = {k: v[picked] for k, v in rows.items()}
    expected = hf.packed_model_inputs(subset, attn_implementation="sdpa")
    assert batch.keys() == expected.keys()
    for key in ("input_ids", "labels", "position_ids", "attention_mask"):
        assert torch.equal(batch[key], expected[key]), key
    # Lists and numpy int32 rows (what a datasets.Dataset or a numpy pipeline gives) collate alike.
    as_lists = [{k: v.tolist() for k, v in dataset[i].items()} for i in picked]
    as_int32 = [{k: v.numpy().astype(np.int32) for k, v in dataset[i].items()} for i in picked]
    for features in (as_lists, as_int32):
        assert torch.equal(collator(features)["labels"], expected["labels"])
    # The stream of batches gives the same rows, in order.
    batches = [{k: v[i : i + 2] for k, v in rows.items()} for i in range(0, len(dataset), 2)]
    streamed = list(hf.PackedRowsIterableDataset(batches))
    assert len(streamed) == len(dataset)
    for got, want in zip(streamed, (dataset[i] for i in range(len(dataset)))):
        assert all(torch.equal(got[k], want[k]) for k in hf.ROW_KEYS)
    assert hf.ROW_KEYS == __import__("turnpack.train.data", fromlist=["BATCH_KEYS"]).BATCH_KEYS


def test_collator_follows_the_model(rows):
    model = tiny_model("llama", "sdpa", dtype=torch.float32)
    collator = hf.DataCollatorForPackedRows(model)
    features = [hf.PackedRowsDataset(rows)[i] for i in range(2)]
    assert collator(features)["attention_mask"].dtype == torch.bool
    model.set_attn_implementation("eager")
    mask = collator(features)["attention_mask"]
    assert mask.dtype == torch.float32 and mask.max() == 0
    with pytest.raises(ValueError, match="config says 'eager'"):
        hf.DataCollatorForPackedRows(model, attn_implementation="sdpa")


def test_bad_input_is_named(rows):
    with pytest.raises(ValueError, match="pass the model, its config or attn_implementation"):
        hf.DataCollatorForPackedRows()
    with pytest.raises(ValueError, match="'paged_attention' is not supported"):
        hf.packed_model_inputs(rows, attn_implementation="paged_attention")
    without = {k: v for k, v in rows.items() if k != "document_ids"}
    with pytest.raises(KeyError, match=r"'document_ids'.*remove_unused_columns=False"):
        hf.packed_model_inputs(without, attn_implementation="sdpa")
    hf.packed_model_inputs(
        without, attn_implementation="sdpa", return_attention_mask=False
    )  # not needed there
    features = [{k: v[0] for k, v in without.items()}]
    with pytest.raises(KeyError, match="row 0 has no 'document_ids'"):
        hf.DataCollatorForPackedRows(attn_implementation="eager")(features)
    with pytest.raises(
        ValueError, match=r"position_ids has shape \(\d+, 159\) but input_ids has shape \(\d+, 160\)"
    ):
        hf.packed_model_inputs(
            {**rows, "position_ids": rows["position_ids"][:, 1:]}, attn_implementation="sdpa"
        )
    with pytest.raises(ValueError, match=r"input_ids must have shape \[rows, seq_len\]"):
        hf.packed_model_inputs({**rows, "input_ids": rows["input_ids"][0]}, attn_implementation="sdpa")
    with pytest.raises(ValueError, match="labels must hold integers"):
        hf.packed_model_inputs(
            {**rows, "labels": rows["labels"].astype(np.float32)}, attn_implementation="sdpa"
        )
    ragged = [{k: v[0] for k, v in rows.items()}, {k: v[1][:-1] for k, v in rows.items()}]
    with pytest.raises(ValueError, match="rows of different lengths in input_ids"):
        hf.DataCollatorForPackedRows(attn_implementation="sdpa")(ragged)
    # Positions that do not restart per document, labels across a document boundary.
    bad_pos = rows["position_ids"].copy()
    bad_pos[0] = np.arange(SEQ_LEN)
    with pytest.raises(ValueError, match=r"position_ids\[0, \d+\] is \d+, expected 0"):
        hf.packed_model_inputs({**rows, "position_ids": bad_pos}, attn_implementation="sdpa")
    with pytest.raises(
        ValueError, match=r"position_ids\[0, \d+\] is \d+, expected 0"
    ):  # document_ids still checks
        hf.packed_model_inputs(
            {**rows, "position_ids": bad_pos}, attn_implementation="sdpa", return_attention_mask=False
        )
    skipping = rows["position_ids"].copy()
    skipping[0, 5] += 1  # neither the next position nor a restart
    with pytest.raises(ValueError, match=r"position_ids\[0, 5\] is 6: positions must count"):
        hf.packed_model_inputs(
            {**without, "position_ids": skipping}, attn_implementation="sdpa", return_attention_mask=False
        )
    end = int(np.argmax(np.diff(rows["document_ids"][0]) != 0))  # last token of row 0's first document
    crossing = rows["labels"].copy()
    crossing[0, end] = rows["input_ids"][0, end + 1]
    with pytest.raises(ValueError, match=rf"labels\[0, {end}\] targets the first token of the next document"):
        hf.packed_model_inputs({**rows, "labels": crossing}, attn_implementation="sdpa")


def test_import_turnpack_imports_no_framework():
    code = (
        "import sys, turnpack, turnpack.integrations, turnpack.data; "
        "bad = [m for m in ('torch', 'transformers', 'trl') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ Trainer and SFTTrainer


class InputSpy:
    """Records the keyword arguments the model's forward receives."""

    def __init__(self, model) -> None:
        self.calls: list[dict] = []
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.calls.append(
            {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        )

    def check(self, rows_per_step: int, seq_len: int) -> None:
        for call in self.calls:
            assert {"input_ids", "labels", "position_ids", "attention_mask"} <= call.keys()
            assert call["use_cache"] is False
            mask, pos = call["attention_mask"], call["position_ids"]
            assert mask.dtype == torch.bool and mask.shape == (rows_per_step, 1, seq_len, seq_len)
            # The mask Trainer passed is the document mask of these positions (documents restart at 0).
            doc = (pos == 0).cumsum(dim=1)
            assert torch.equal(mask, dense_document_mask(doc))
            assert (doc[:, -1] > 1).any()  # several documents in a row: packing reached the model


def trainer_args(cls, tmp_path, **settings):
    return cls(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        save_strategy="no",
        logging_steps=1,
        per_device_train_batch_size=2,
        dataloader_drop_last=True,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        seed=0,
        disable_tqdm=True,
        **settings,
    )


@pytest.fixture(scope="module")
def training_rows() -> turnpack.PackedBatch:
    dialogues = examples.register_dialogues(120, seed=0)
    return turnpack.pack(examples.example_tokenizer().encode_batch(dialogues), 256, pad_id=examples.PAD_ID)


def test_trainer_trains_on_packed_rows(tmp_path, training_rows):
    model = tiny_model("qwen3", "sdpa", dtype=torch.float32)
    spy = InputSpy(model)
    trainer = transformers.Trainer(
        model=model,
        args=trainer_args(transformers.TrainingArguments, tmp_path, max_steps=24),
        train_dataset=hf.PackedRowsDataset(training_rows),
        data_collator=hf.DataCollatorForPackedRows(model),
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 24 and all(np.isfinite(losses))
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < first - 1.0, losses
    assert len(spy.calls) == 24
    spy.check(2, 256)


def test_trainer_on_a_streamed_chat_dataset(tmp_path):
    def stream() -> turnpack.ChatDataset:
        return turnpack.ChatDataset(
            [{"messages": d} for d in examples.register_dialogues(12, seed=1)],
            examples.example_tokenizer(),
            seq_len=256,
            batch_size=3,
            shuffle=False,
            pad_id=examples.PAD_ID,
        )

    epoch = [row for batch in stream() for row in hf.PackedRowsIterableDataset([batch])]
    assert len(epoch) in (4, 5)  # two steps of two rows per epoch (a fifth row is dropped by drop_last)
    model = tiny_model("llama", "sdpa", dtype=torch.float32)
    spy = InputSpy(model)
    trainer = transformers.Trainer(
        model=model,
        args=trainer_args(transformers.TrainingArguments, tmp_path, max_steps=5),
        train_dataset=hf.PackedRowsIterableDataset(stream()),
        data_collator=hf.DataCollatorForPackedRows(model),
    )
    trainer.train()
    assert len(spy.calls) == 5
    spy.check(2, 256)
    # The rows arrive in the stream's order, regrouped two by two, and the stream starts again (its next
    # epoch, through set_epoch) when it runs out before max_steps.
    collator = hf.DataCollatorForPackedRows(model)
    for step, first in enumerate([0, 2, 0, 2, 0]):
        expected = collator(epoch[first : first + 2])
        assert torch.equal(spy.calls[step]["input_ids"], expected["input_ids"]), step
        assert torch.equal(spy.calls[step]["labels"], expected["labels"]), step


def test_sft_trainer_with_skip_prepare_dataset(tmp_path, training_rows):
    trl = pytest.importorskip("trl")
    pytest.importorskip("datasets")
    tokenizers = pytest.importorskip("tokenizers")
    tok = examples.example_tokenizer()
    processing_class = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer.from_str(tok.to_tokenizer_json()),
        pad_token=examples.PAD,
        eos_token=examples.IM_END,
    )
    model = tiny_model("qwen3", "sdpa", dtype=torch.float32)
    collator = hf.DataCollatorForPackedRows(model)
    # Two rows, two per step: every step trains the same batch, so the first logged loss is the
    # untrained model's loss on it, as the model itself computes it from the collator's inputs.
    rows = {k: getattr(training_rows, k)[:2] for k in hf.ROW_KEYS}
    dataset = hf.to_hf_dataset(rows)
    with torch.no_grad():
        expected = float(model(**collator([dataset[i] for i in range(2)])).loss)
    spy = InputSpy(model)
    args = trainer_args(
        trl.SFTConfig, tmp_path, max_steps=3, dataset_kwargs={"skip_prepare_dataset": True}, max_length=None
    )
    trainer = trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processing_class,
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert abs(losses[0] - expected) <= 1e-4 * expected, (losses[0], expected)
    assert len(spy.calls) == 3
    spy.check(2, 256)


def test_sft_trainer_on_a_streamed_chat_dataset(tmp_path):
    trl = pytest.importorskip("trl")
    pytest.importorskip("datasets")
    tokenizers = pytest.importorskip("tokenizers")
    tok = examples.example_tokenizer()
    stream = turnpack.ChatDataset(
        [{"messages": d} for d in examples.register_dialogues(12, seed=1)],
        tok,
        seq_len=256,
        batch_size=3,
        shuffle=False,
        pad_id=examples.PAD_ID,
        epochs=None,
    )
    model = tiny_model("llama", "sdpa", dtype=torch.float32)
    spy = InputSpy(model)
    args = trainer_args(trl.SFTConfig, tmp_path, max_steps=3, dataset_kwargs={"skip_prepare_dataset": True})
    trainer = trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=hf.to_hf_iterable_dataset(stream),
        data_collator=hf.DataCollatorForPackedRows(model),
        processing_class=transformers.PreTrainedTokenizerFast(
            tokenizer_object=tokenizers.Tokenizer.from_str(tok.to_tokenizer_json()), pad_token=examples.PAD
        ),
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert len(spy.calls) == 3
    spy.check(2, 256)
