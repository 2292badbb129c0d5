"""`turnpack.integrations.torchtitan`: the dataloader as torchtitan 0.3.0's trainer selects, builds,
iterates and checkpoints it, checked with torchtitan's own classes on CPU.

* batches equal `ChatDataset`'s for the same data, seed and rank, and every label is torchtitan's
  next-token target (checked token by token against each conversation encoded alone, and through
  torchtitan's own cross-entropy);
* data-parallel ranks read disjoint shares that together are the whole data set;
* checkpoint/resume through the dataloader's state_dict (per-dp-rank keys), through DCP, and through
  torchtitan's `CheckpointManager` (one process, and two gloo ranks);
* the attention masks torchtitan's `Decoder.get_attention_masks` builds from our `positions` (flex
  and varlen) are turnpack's document masks;
* selection from a torchtitan config (`ConfigManager` with `--module`/`--config` and CLI overrides).

The tokenizer is the bundled example tokenizer written out as a Hugging Face model folder, so that
torchtitan's `HuggingFaceTokenizer` and turnpack's `ChatTokenizer.from_dir` load the same files.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchtitan")

import turnpack
from torchtitan.components.dataloader import BaseDataLoader
from torchtitan.components.loss import IGNORE_INDEX, cross_entropy_loss
from torchtitan.components.tokenizer import HuggingFaceTokenizer
from turnpack.attention import dense_document_mask
from turnpack.data import ChatDataset, split_sample_id
from turnpack.integrations.torchtitan import TurnpackDataLoader
from turnpack.train import examples

SEQ_LEN = 256
BATCH = 2
NUM_RECORDS = 64
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ fixtures and helpers


def write_model_dir(path: Path, extra_token: str | None = None) -> Path:
    """The example tokenizer as a Hugging Face model folder (tokenizer.json + tokenizer_config.json)."""
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = json.loads(examples.TOKENIZER_PATH.read_text())
    if extra_token is not None:  # a different tokenizer: one more added token
        ids = [t["id"] for t in tokenizer["added_tokens"]] + list(tokenizer["model"]["vocab"].values())
        tokenizer["added_tokens"].append(
            {
                "id": max(ids) + 1,
                "content": extra_token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )
    (path / "tokenizer.json").write_text(json.dumps(tokenizer))
    config = {
        "chat_template": examples.CHAT_TEMPLATE,
        "eos_token": examples.IM_END,
        "pad_token": examples.PAD,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def records() -> list[dict]:
    seen, out = set(), []
    for dialogue in examples.register_dialogues(NUM_RECORDS + 16, seed=11):
        key = json.dumps(dialogue)
        if key not in seen:  # distinct conversations, so that "disjoint" is checkable by content
            seen.add(key)
            out.append({"messages": dialogue})
    return out[:NUM_RECORDS]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory, records) -> Path:
    path = tmp_path_factory.mktemp("data") / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def titan_tokenizer(model_dir) -> HuggingFaceTokenizer:
    return HuggingFaceTokenizer(tokenizer_path=str(model_dir))


@pytest.fixture(scope="module")
def chat_tokenizer(model_dir) -> turnpack.ChatTokenizer:
    return turnpack.ChatTokenizer.from_dir(str(model_dir))


def build(data_path, titan_tokenizer, *, rank=0, world=1, batch=BATCH, **fields) -> TurnpackDataLoader:
    """Exactly the call torchtitan's trainer makes (trainer.py: config.dataloader.build(...))."""
    config = TurnpackDataLoader.Config(dataset_path=str(data_path), **fields)
    return config.build(
        dp_world_size=world,
        dp_rank=rank,
        tokenizer=titan_tokenizer,
        seq_len=SEQ_LEN,
        local_batch_size=batch,
        snapshot_every_n_steps=None,
    )


def reference(source, tokenizer, *, rank=0, world=1, seed=0, infinite=True, drop_last=True, **kw):
    """The batches `ChatDataset` itself yields for the same settings (iterated directly)."""
    return ChatDataset(
        str(source),
        tokenizer,
        SEQ_LEN,
        batch_size=BATCH,
        seed=seed,
        rank=rank,
        world_size=world,
        epochs=None if infinite else 1,
        drop_last=drop_last,
        **kw,
    )


def take(iterable, n):
    it = iter(iterable)
    try:
        return list(itertools.islice(it, n))
    finally:
        if hasattr(it, "close"):
            it.close()  # shuts down DataLoader workers of an abandoned pass


def same(ours, theirs) -> bool:
    """torchtitan pairs equal ChatDataset batches: input = input_ids, positions = position_ids, labels."""
    return len(ours) == len(theirs) and all(
        set(inp) == {"input", "positions"}
        and torch.equal(inp["input"], ref["input_ids"])
        and torch.equal(inp["positions"], ref["position_ids"])
        and torch.equal(labels, ref["labels"])
        for (inp, labels), ref in zip(ours, theirs)
    )


def equal_pairs(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x[0]["input"], y[0]["input"])
        and torch.equal(x[0]["positions"], y[0]["positions"])
        and torch.equal(x[1], y[1])
        for x, y in zip(a, b)
    )


def documents(pairs, pad_id=0) -> list[tuple[int, ...]]:
    """Token sequences of the documents of torchtitan pairs, split where positions restart at 0
    (as torchtitan does); the padding run (all pad, nothing trained) is left out."""
    docs = []
    for inp, labels in pairs:
        for tokens, positions, labs in zip(inp["input"], inp["positions"], labels):
            starts = [*(positions == 0).nonzero().flatten().tolist(), len(tokens)]
            for a, b in itertools.pairwise(starts):
                segment = tuple(tokens[a:b].tolist())
                if all(t == pad_id for t in segment) and bool((labs[a:b] == IGNORE_INDEX).all()):
                    continue
                docs.append(segment)
    return docs


# ------------------------------------------------------------------ the tests


def test_import_turnpack_imports_neither_torch_nor_torchtitan():
    code = (
        "import sys, turnpack, turnpack.integrations, turnpack.data; "
        "print(sorted(m for m in ('torch', 'torchtitan') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_is_a_torchtitan_dataloader(data_path, titan_tokenizer):
    loader = build(data_path, titan_tokenizer)
    assert isinstance(loader, BaseDataLoader)
    assert TurnpackDataLoader.Config._owner is TurnpackDataLoader  # build() constructs it
    # torchtitan's Validator does dataclasses.replace(config.dataloader, infinite=...)
    config = dataclasses.replace(TurnpackDataLoader.Config(dataset_path=str(data_path)), infinite=False)
    assert config.infinite is False
    # the default chat tokenizer is the folder torchtitan's tokenizer was loaded from
    assert loader.chat_tokenizer.to_tokenizer_json() == titan_tokenizer.tokenizer.to_str()


@pytest.mark.parametrize("rank, world, seed", [(0, 1, 0), (1, 2, 5)])
def test_batches_equal_chat_dataset(data_path, model_dir, titan_tokenizer, rank, world, seed):
    n = 14  # more than one epoch of this rank's batches: the epoch boundary is crossed
    ours = take(build(data_path, titan_tokenizer, rank=rank, world=world, seed=seed), n)
    ref = reference(data_path, str(model_dir), rank=rank, world=world, seed=seed)
    one_epoch = list(reference(data_path, str(model_dir), rank=rank, world=world, seed=seed, infinite=False))
    assert len(one_epoch) < n
    theirs = take(ref, n)
    assert len(ours) == n
    assert same(ours, theirs)
    for inp, labels in ours:
        assert inp["input"].shape == inp["positions"].shape == labels.shape == (BATCH, SEQ_LEN)
        assert inp["input"].dtype == inp["positions"].dtype == labels.dtype == torch.int64
    # another seed gives other batches (the comparison above can fail)
    other = take(reference(data_path, str(model_dir), rank=rank, world=world, seed=seed + 1), n)
    assert not same(ours, other)


def test_labels_are_torchtitans_next_token_targets(data_path, model_dir, titan_tokenizer, records):
    """Token by token, against each conversation encoded alone: input[t] -> labels[t] = input[t + 1]
    where that token is trained, IGNORE_INDEX elsewhere, never across a document boundary."""
    assert IGNORE_INDEX == -100 == turnpack.IGNORE_INDEX
    tok = turnpack.ChatTokenizer.from_dir(str(model_dir))
    pairs = list(build(data_path, titan_tokenizer, infinite=False, drop_last=False, shuffle=True, seed=3))
    refs = list(reference(data_path, str(model_dir), seed=3, infinite=False, drop_last=False))
    assert same(pairs, refs)
    checked_docs = padded_rows = multi_doc_rows = 0
    expected_loss = torch.zeros((), dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    logits = []
    for (inp, labels), ref in zip(pairs, refs):
        pred = torch.randn(*labels.shape, tok.vocab_size, generator=generator)
        logits.append(pred)
        for row in range(labels.shape[0]):
            tokens, positions, labs = inp["input"][row], inp["positions"][row], labels[row]
            doc_ids = ref["document_ids"][row]
            sample_ids = ref["sample_ids"][row]
            n_docs = int((sample_ids >= 0).sum())
            multi_doc_rows += n_docs > 1
            for d in range(n_docs):
                where = (doc_ids == d).nonzero().flatten()
                start, length = int(where[0]), len(where)
                _, record = split_sample_id(int(sample_ids[d]))
                enc = tok.encode(records[record]["messages"])
                ids = torch.as_tensor(enc.input_ids, dtype=torch.int64)
                mask = torch.as_tensor(enc.mask)
                assert torch.equal(tokens[start : start + length], ids)
                assert torch.equal(positions[start : start + length], torch.arange(length))
                want = torch.where(mask[1:], ids[1:], IGNORE_INDEX)
                assert torch.equal(labs[start : start + length - 1], want)
                assert labs[start + length - 1] == IGNORE_INDEX  # the last token predicts nothing
                trained = mask[1:].nonzero().flatten()
                log_probs = torch.log_softmax(pred[row, start + trained].double(), dim=-1)
                expected_loss -= log_probs.gather(1, ids[1:][trained, None]).sum()
                checked_docs += 1
            end = int((doc_ids < n_docs).sum())  # the padding run
            if end < SEQ_LEN:
                padded_rows += 1
                assert bool((labs[end:] == IGNORE_INDEX).all())
                assert torch.equal(positions[end:], torch.arange(SEQ_LEN - end))
    assert checked_docs == len(records)  # every conversation, each in one row (drop_last=False)
    assert padded_rows and multi_doc_rows
    # torchtitan's own loss (sum over targets, IGNORE_INDEX skipped) on our labels
    loss = sum(cross_entropy_loss(pred, labels) for pred, (_, labels) in zip(logits, pairs))
    assert torch.allclose(loss.double(), expected_loss, rtol=1e-5)


def test_dp_ranks_read_disjoint_shares_of_the_whole(data_path, titan_tokenizer, chat_tokenizer, records):
    every = Counter(tuple(e.input_ids.tolist()) for e in chat_tokenizer.encode_batch(records))
    assert len(every) == len(records)
    shares = []
    for rank in range(2):
        loader = build(
            data_path, titan_tokenizer, rank=rank, world=2, infinite=False, drop_last=False, seed=1
        )
        shares.append(Counter(documents(list(loader))))
        assert loader.stats["packed"] == sum(shares[-1].values())
    assert all(shares)
    assert not set(shares[0]) & set(shares[1])
    assert shares[0] + shares[1] == every
    whole = build(data_path, titan_tokenizer, infinite=False, drop_last=False, seed=1)
    assert Counter(documents(list(whole))) == every


@pytest.mark.parametrize("rank, world, num_workers", [(0, 1, 0), (1, 2, 0), (1, 2, 2)])
def test_resume_through_state_dict(data_path, titan_tokenizer, rank, world, num_workers):
    n = 12
    kw = {"rank": rank, "world": world, "num_workers": num_workers, "seed": 2}
    uninterrupted = take(build(data_path, titan_tokenizer, **kw), n)
    per_epoch = len(list(build(data_path, titan_tokenizer, infinite=False, **kw)))
    assert per_epoch < n
    # inside an epoch, and right after an epoch's last batch (the resumed pass then has none left)
    for k in (5, per_epoch):
        first = build(data_path, titan_tokenizer, **kw)
        assert equal_pairs(take(first, k), uninterrupted[:k])
        state = first.state_dict()
        assert set(state) == {f"dp_rank_{rank}", "world_size"} and state["world_size"] == world
        resumed = build(data_path, titan_tokenizer, **kw)
        assert not equal_pairs(take(resumed, n - k), uninterrupted[k:])  # without the state: from the start
        resumed = build(data_path, titan_tokenizer, **kw)
        resumed.load_state_dict(copy.deepcopy(state))
        assert equal_pairs(take(resumed, n - k), uninterrupted[k:])


def test_load_state_dict_refuses_foreign_states(data_path, titan_tokenizer):
    loader = build(data_path, titan_tokenizer, rank=0, world=2)
    take(loader, 2)
    state = loader.state_dict()
    other_world = build(data_path, titan_tokenizer, rank=0, world=4)
    with pytest.raises(ValueError, match="dp degree"):
        other_world.load_state_dict({**state, "world_size": 2})
    other_seed = build(data_path, titan_tokenizer, rank=0, world=2, seed=9)
    with pytest.raises(ValueError, match="seed"):
        other_seed.load_state_dict(state)
    with pytest.raises(ValueError, match="exclude_from_loading"):  # a ParallelAwareDataloader's state
        other_seed.load_state_dict({"dp_rank_0": b"\x80\x04", "world_size": 2})
    loader.load_state_dict({})  # empty: a fresh start, as in ParallelAwareDataloader


class _State:
    """A minimal Stateful for the checkpoint manager's other entries (optimizer, lr schedulers)."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def state_dict(self):
        return {"value": torch.tensor(self.value)}

    def load_state_dict(self, state):
        self.value = int(state["value"])


def checkpoint_manager(loader, folder):
    from torchtitan.components.checkpoint import CheckpointManager

    config = CheckpointManager.Config(enable=True, interval=1, keep_latest_k=0, last_save_model_only=False)
    return config.build(
        dataloader=loader,
        model_parts=[torch.nn.Linear(2, 2)],
        optimizers=_State(),
        lr_schedulers=_State(),
        states={"train_state": _State()},
        sd_adapter=None,
        base_folder=str(folder),
    )


def test_resume_through_dcp_and_checkpoint_manager(data_path, titan_tokenizer, tmp_path):
    import torch.distributed.checkpoint as dcp

    n, k = 10, 4
    kw = {"rank": 1, "world": 2, "num_workers": 2, "seed": 4}
    uninterrupted = take(build(data_path, titan_tokenizer, **kw), n)

    # plain DCP, the dataloader as a Stateful entry (what CheckpointManager hands to dcp.save)
    first = build(data_path, titan_tokenizer, **kw)
    take(first, k)
    dcp.save({"dataloader": first}, checkpoint_id=str(tmp_path / "dcp"))
    resumed = build(data_path, titan_tokenizer, **kw)
    dcp.load({"dataloader": resumed}, checkpoint_id=str(tmp_path / "dcp"))
    assert equal_pairs(take(resumed, n - k), uninterrupted[k:])

    # torchtitan's CheckpointManager: save at step k, a new run loads the latest step
    first = build(data_path, titan_tokenizer, **kw)
    take(first, k)
    assert checkpoint_manager(first, tmp_path / "run").save(curr_step=k)
    assert (tmp_path / "run" / "checkpoint" / f"step-{k}").is_dir()
    resumed = build(data_path, titan_tokenizer, **kw)
    assert checkpoint_manager(resumed, tmp_path / "run").load()
    assert equal_pairs(take(resumed, n - k), uninterrupted[k:])


_TWO_RANKS = """
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
import test_integrations_torchtitan as T
from torchtitan.components.tokenizer import HuggingFaceTokenizer
rank = int(os.environ["RANK"])
dist.init_process_group("gloo", rank=rank, world_size=2)
tok = HuggingFaceTokenizer(tokenizer_path={model!r})
first = T.build({data!r}, tok, rank=rank, world=2, seed=6)
T.take(first, {k})
assert T.checkpoint_manager(first, {folder!r}).save(curr_step={k})
dist.barrier()
resumed = T.build({data!r}, tok, rank=rank, world=2, seed=6)
assert T.checkpoint_manager(resumed, {folder!r}).load()
torch.save(T.take(resumed, {m}), os.path.join({folder!r}, f"rank{{rank}}.pt"))
dist.destroy_process_group()
"""


def test_resume_through_checkpoint_manager_on_two_gloo_ranks(data_path, model_dir, titan_tokenizer, tmp_path):
    """Two processes save one DCP checkpoint; each rank gets its own position back (dp_rank_<r>
    keys: DCP keeps one copy of an entry that every rank saves under the same key)."""
    k, m = 3, 4
    script = tmp_path / "two_ranks.py"
    script.write_text(
        _TWO_RANKS.format(
            tests=str(ROOT / "tests"),
            model=str(model_dir),
            data=str(data_path),
            folder=str(tmp_path),
            k=k,
            m=m,
        )
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(ROOT / "tests")]),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            env={**env, "RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    for rank in range(2):
        uninterrupted = take(build(data_path, titan_tokenizer, rank=rank, world=2, seed=6), k + m)
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert equal_pairs(got, uninterrupted[k:])


def _trainer_for(model):
    """A torchtitan Trainer with just what `Trainer.post_dataloading_process` reads (no devices, no
    process group: the real trainer cannot be built on a machine without CUDA)."""
    from torchtitan.trainer import Trainer

    trainer = object.__new__(Trainer)
    trainer.model_config, trainer.model_parts, trainer.ntokens_seen = model.config, [model], 0
    trainer.parallel_dims = types.SimpleNamespace(cp_enabled=False)
    trainer.config = types.SimpleNamespace(parallelism=types.SimpleNamespace(spmd_backend="none"))
    return trainer


def _decoder(attn_backend):
    from torchtitan.models.qwen3 import model_registry

    with torch.device("meta"):  # only its attention config matters: no weights are materialised
        return model_registry("debugmodel", attn_backend=attn_backend).model.build()


@pytest.fixture(scope="module")
def mask_batches(data_path, titan_tokenizer, model_dir):
    pairs = take(build(data_path, titan_tokenizer, seed=8), 3)
    refs = take(reference(data_path, str(model_dir), seed=8), 3)
    assert same(pairs, refs)
    return pairs, refs


def test_flex_mask_from_positions_is_the_document_mask(mask_batches, monkeypatch):
    """torchtitan's flex path (Decoder.get_attention_masks -> create_attention_mask(and_masks(causal,
    packed document from positions), ...)) gives turnpack's dense document mask, padding included."""
    import torchtitan.models.common.decoder as decoder
    from torch.nn.attention.flex_attention import create_block_mask, create_mask, flex_attention

    # torchtitan compiles create_block_mask; on CPU the eager one builds the same BlockMask
    monkeypatch.setattr(decoder, "create_attention_mask", create_block_mask)
    model = _decoder("flex")
    trainer = _trainer_for(model)
    pairs, refs = mask_batches
    generator = torch.Generator().manual_seed(0)
    for (inp, labels), ref in zip(pairs, refs):
        positions, doc_ids = inp["positions"], ref["document_ids"]
        # the trainer's own step: input_dict["input"] is the model input, every other key (and the
        # mask it builds from "positions") a keyword of the model's forward
        tokens, same_labels, extra = trainer.post_dataloading_process(dict(inp), labels)
        assert (
            tokens is inp["input"]
            and same_labels is labels
            and set(extra) == {"positions", "attention_masks"}
        )
        inspect.signature(type(model).forward).bind(model, tokens, **extra)
        dense = create_mask(extra["attention_masks"].mask_mod, BATCH, 1, SEQ_LEN, SEQ_LEN, device="cpu")
        assert torch.equal(dense, dense_document_mask(doc_ids))
        # B > 1 and B == 1 take different code paths in get_efficient_causal_mask_mod_for_packed_document
        for rows in (slice(None), slice(0, 1), slice(1, 2)):
            block_mask = model.get_attention_masks(positions=positions[rows])
            batch = positions[rows].shape[0]
            dense = create_mask(block_mask.mask_mod, batch, 1, SEQ_LEN, SEQ_LEN, device="cpu")
            want = dense_document_mask(doc_ids[rows])
            assert torch.equal(dense, want)
            # the block-sparse structure too: flex attention through the BlockMask equals dense SDPA
            q, k, v = (torch.randn(batch, 2, SEQ_LEN, 8, generator=generator) for _ in range(3))
            out = flex_attention(q, k, v, block_mask=block_mask)
            sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=want)
            assert torch.allclose(out, sdpa, atol=1e-5)
    # the batches do pack several documents per row, and padding: a mask that ignored documents would
    # differ, and so would one built from padding positions that continue the last document's
    assert any(int(ref["document_ids"].max()) > 1 for ref in refs)
    padded = 0
    for (inp, _), ref in zip(pairs, refs):
        positions = inp["positions"].clone()
        for row in range(BATCH):
            n_docs = int((ref["sample_ids"][row] >= 0).sum())
            pad = (ref["document_ids"][row] == n_docs).nonzero().flatten()
            if len(pad):
                padded += 1
                positions[row, pad] += positions[row, int(pad[0]) - 1] + 1
        block_mask = model.get_attention_masks(positions=positions)
        dense = create_mask(block_mask.mask_mod, BATCH, 1, SEQ_LEN, SEQ_LEN, device="cpu")
        assert (
            torch.equal(dense, dense_document_mask(ref["document_ids"]))
            == (positions == inp["positions"]).all()
        )
    assert padded


def test_varlen_metadata_from_positions_is_turnpacks_cu_seqlens(mask_batches):
    trainer = _trainer_for(_decoder("varlen"))
    pairs, refs = mask_batches
    for (inp, labels), ref in zip(pairs, refs):
        meta = trainer.post_dataloading_process(dict(inp), labels)[2]["attention_masks"]
        bounds, longest = [], 0
        for row, cu in enumerate(ref["cu_seqlens"].tolist()):
            starts = sorted({c for c in cu if c < SEQ_LEN})  # the tail is filled with seq_len
            bounds += [row * SEQ_LEN + s for s in starts]
            longest = max(longest, *(b - a for a, b in itertools.pairwise([*starts, SEQ_LEN])))
        bounds.append(len(ref["cu_seqlens"]) * SEQ_LEN)
        assert meta.cu_seq_q.tolist() == bounds and torch.equal(meta.cu_seq_q, meta.cu_seq_k)
        assert meta.max_q == meta.max_k == longest


_CONFIG_MODULE = """
from torchtitan.config import TrainingConfig
from torchtitan.models.qwen3 import model_registry
from torchtitan.trainer import Trainer
from turnpack.integrations.torchtitan import TurnpackDataLoader


def chat_sft() -> Trainer.Config:
    return Trainer.Config(
        model_spec=model_registry("debugmodel", attn_backend="flex"),
        hf_assets_path={model!r},
        dataloader=TurnpackDataLoader.Config(dataset_path={data!r}),
        training=TrainingConfig(local_batch_size={batch}, seq_len={seq_len}, steps=10),
    )
"""


def test_selected_from_a_torchtitan_config(data_path, model_dir, tmp_path, monkeypatch):
    """`--module <config module> --config <function>` as torchtitan.train parses it, with CLI overrides
    of the dataloader's fields; then tokenizer and dataloader built as the trainer builds them."""
    from torchtitan.config import ConfigManager

    name = "turnpack_titan_test_config"
    (tmp_path / f"{name}.py").write_text(
        _CONFIG_MODULE.format(model=str(model_dir), data=str(data_path), batch=BATCH, seq_len=SEQ_LEN)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["--module", name, "--config", "chat_sft", "--dataloader.seed", "7"]
    config = ConfigManager().parse_args(
        [*args, "--dataloader.shuffle_buffer", "5", "--dataloader.num_workers", "1"]
    )
    assert type(config.dataloader) is TurnpackDataLoader.Config
    assert (config.dataloader.seed, config.dataloader.shuffle_buffer, config.dataloader.num_workers) == (
        7,
        5,
        1,
    )
    # trainer.py: tokenizer from hf_assets_path, then config.dataloader.build(...)
    tokenizer = config.tokenizer.build(tokenizer_path=config.hf_assets_path)
    loader = config.dataloader.build(
        dp_world_size=1,
        dp_rank=0,
        tokenizer=tokenizer,
        seq_len=config.training.seq_len,
        local_batch_size=config.training.local_batch_size,
        snapshot_every_n_steps=None,
    )
    assert isinstance(loader, TurnpackDataLoader)
    theirs = take(reference(data_path, str(model_dir), seed=7, shuffle_buffer=5), 4)
    assert same(take(loader, 4), theirs)


def test_too_little_data_for_a_batch_raises_instead_of_looping(records, titan_tokenizer, tmp_path):
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records[:3]))  # 1 row: no batch of 2
    with pytest.raises(RuntimeError, match="holds no batch"):
        take(build(path, titan_tokenizer), 1)
    assert len(take(build(path, titan_tokenizer, drop_last=False), 3)) == 3  # one short batch per epoch


def test_tokenizer_checks(data_path, model_dir, titan_tokenizer, tmp_path):
    other = HuggingFaceTokenizer(tokenizer_path=str(write_model_dir(tmp_path / "other", "<|extra|>")))
    with pytest.raises(ValueError, match="not the same tokenizer"):
        build(data_path, other, chat_tokenizer=str(model_dir))
    build(data_path, other, chat_tokenizer=str(model_dir), check_tokenizer=False)
    with pytest.raises(ValueError, match="chat_tokenizer"):
        build(data_path, None)  # no torchtitan tokenizer to take the folder from
    loader = build(data_path, None, chat_tokenizer="example")
    assert loader.chat_tokenizer.vocab_size == titan_tokenizer.get_vocab_size()
    with pytest.raises(ValueError, match="dataset_path"):
        TurnpackDataLoader.Config().build(
            dp_world_size=1, dp_rank=0, tokenizer=titan_tokenizer, seq_len=SEQ_LEN, local_batch_size=BATCH
        )


def test_prepared_folder(data_path, model_dir, titan_tokenizer, tmp_path):
    from turnpack.prepare import main as prepare

    out = tmp_path / "prepared"
    argv = [str(data_path), "--out", str(out), "--seq-len", str(SEQ_LEN), "--tokenizer", str(model_dir)]
    assert prepare([*argv, "--no-progress"]) == 0
    ours = take(build(out, titan_tokenizer, rank=1, world=2, seed=3), 6)
    assert same(ours, take(reference(out, None, rank=1, world=2, seed=3), 6))
    with pytest.raises(ValueError, match="seq_len"):
        TurnpackDataLoader.Config(dataset_path=str(out)).build(
            dp_world_size=1, dp_rank=0, tokenizer=titan_tokenizer, seq_len=SEQ_LEN * 2, local_batch_size=BATCH
        )
    shutil.rmtree(out)
