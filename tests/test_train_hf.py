"""``turnpack train`` on pretrained Hugging Face checkpoints (``model.hf``), single process on CPU.

The checkpoints are tiny Qwen3 / Llama models built from configs (tests/hf_models.py, no download)
with the bundled example tokenizer beside them.

* packed rows through :class:`HFCausalLM` give the loss and gradients of each conversation alone;
* training runs, the loss falls, and ``final_model`` loads with ``from_pretrained`` (weights and
  tokenizer, with the chat template that trained it);
* resuming from a checkpoint gives the losses of an uninterrupted run;
* the tokenizer defaults to the model's folder, and one with more tokens than the embedding has rows
  is an error before the first step;
* activation checkpointing changes no loss.
"""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import turnpack
from hf_models import tiny_model_dir
from turnpack.attention import dense_document_mask
from turnpack.data import IGNORE_INDEX
from turnpack.train import examples, train
from turnpack.train.config import ConfigError, ModelSection, TrainConfig, apply_override
from turnpack.train.hf_model import HFCausalLM, load_hf_model

SETTINGS = {
    "data.num_examples": 120,
    "data.seq_len": 256,
    "data.batch_size": 2,
    "train.max_steps": 6,
    "train.warmup_steps": 2,
    "train.lr": 1e-2,
    "train.log_every": 1,
    "train.device": "cpu",
    "checkpoint.every": 3,
    "checkpoint.keep": 0,
}


def make_config(out_dir, model_dir, **extra) -> TrainConfig:
    config = TrainConfig()
    settings = {**SETTINGS, "model.hf": str(model_dir), "train.out_dir": str(out_dir), **extra}
    for key, value in settings.items():
        config = apply_override(config, f"{key}={json.dumps(value)}")
    return config


def quiet(_: str) -> None:
    pass


def losses(result) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in result.history}


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("qwen3"), "qwen3")


@pytest.fixture(scope="module")
def full_run(qwen_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, train(make_config(out, qwen_dir), echo=quiet)


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_packed_rows_train_like_each_conversation_alone(arch, tmp_path):
    """Loss and gradients of packed rows equal the per-conversation ones (float64, within 1e-5)."""
    folder = tiny_model_dir(tmp_path / arch, arch)
    model = load_hf_model(str(folder), backend="sdpa", device=torch.device("cpu"), vocab_size=300).double()
    tok = examples.example_tokenizer()
    encodings = tok.encode_batch(examples.register_dialogues(12, seed=3))
    packed = turnpack.pack(encodings, 160, pad_id=examples.PAD_ID)
    assert len(packed) >= 2 and packed.stats["packed"] == 12
    rows = {
        k: torch.from_numpy(getattr(packed, k).astype("int64"))
        for k in ("input_ids", "labels", "position_ids", "document_ids")
    }
    assert (rows["document_ids"].amax(dim=1) >= 2).all(), "every row must hold several conversations"

    def grads() -> dict[str, torch.Tensor]:
        out = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        return out

    trained = int((rows["labels"] != IGNORE_INDEX).sum())
    _, packed_sum = model(rows["input_ids"], rows["position_ids"], labels=rows["labels"], loss_reduction="sum",
                          dense_mask=dense_document_mask(rows["document_ids"]))  # fmt: skip
    (packed_sum / trained).backward()
    packed_grads = grads()

    alone_sum = torch.zeros((), dtype=torch.float64)
    for enc in encodings:
        ids = torch.from_numpy(enc.input_ids.astype("int64"))[None]
        labels = torch.where(torch.from_numpy(enc.mask[1:]), ids[0, 1:], IGNORE_INDEX)
        labels = torch.cat([labels, torch.tensor([IGNORE_INDEX])])[None]
        _, s = model(ids, labels=labels, loss_reduction="sum")
        alone_sum = alone_sum + s
    assert trained == sum(int(e.mask[1:].sum()) for e in encodings)
    (alone_sum / trained).backward()
    alone_grads = grads()

    assert (packed_sum / trained).item() == pytest.approx((alone_sum / trained).item(), abs=1e-5)
    for name, g in packed_grads.items():
        torch.testing.assert_close(g, alone_grads[name], atol=1e-5, rtol=1e-5, msg=name)

    # Control: the same rows without document separation (plain causal over each row, positions
    # 0..L-1) do not match.  (Without a mask but with restarting position_ids, transformers infers
    # the documents itself and the loss matches: the separation is what is measured here.)
    _, leaky = model(rows["input_ids"], labels=rows["labels"], loss_reduction="sum")
    assert abs(leaky.item() - packed_sum.item()) / trained > 1e-5


def test_training_saves_a_model_that_from_pretrained_loads(full_run, qwen_dir):
    out, result = full_run
    history = losses(result)
    assert list(history) == list(range(1, 7)) and history[6] < history[1]
    assert isinstance(result.model, HFCausalLM)
    final = result.final_model
    assert final == out / "final_model"
    loaded = transformers.AutoModelForCausalLM.from_pretrained(final)
    trained_state = result.model.hf.state_dict()
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(value, trained_state[name], atol=0, rtol=0, msg=name)
    # Trained: the weights moved away from the checkpoint it started from.
    start = transformers.AutoModelForCausalLM.from_pretrained(qwen_dir).state_dict()
    assert any(not torch.equal(start[n], v) for n, v in loaded.state_dict().items())

    # The tokenizer and chat template that encoded the data sit beside the weights.
    hf_tok = transformers.AutoTokenizer.from_pretrained(final)
    dialogue = examples.register_dialogues(1, seed=9)[0]
    ours = turnpack.ChatTokenizer.from_dir(str(final))
    assert hf_tok.apply_chat_template(dialogue, tokenize=False) == ours.render(dialogue)
    assert (
        hf_tok(ours.render(dialogue), add_special_tokens=False)["input_ids"]
        == ours.encode(dialogue).input_ids.tolist()
    )


def test_resume_gives_the_losses_of_an_uninterrupted_run(full_run, qwen_dir, tmp_path):
    out, result = full_run
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(out / "checkpoints" / "step_00000003.pt", resumed / "checkpoints")
    lines: list[str] = []
    again = train(make_config(resumed, qwen_dir), echo=lines.append)
    assert any("resumed from" in line for line in lines)
    assert losses(again) == {s: v for s, v in losses(result).items() if s > 3}


def test_activation_checkpointing_changes_no_loss(full_run, qwen_dir, tmp_path):
    _, result = full_run
    config = make_config(tmp_path, qwen_dir, **{"train.max_steps": 3, "checkpoint.every": 0,
                                                "train.activation_checkpointing": True})  # fmt: skip
    run = train(config, echo=quiet)
    assert run.model.hf.training and any(
        getattr(m, "gradient_checkpointing", False) for m in run.model.hf.modules()
    )
    recomputed = losses(run)
    for step, loss in recomputed.items():
        assert loss == pytest.approx(losses(result)[step], rel=1e-6)


@pytest.mark.parametrize("kind", ["hf", "reference"])
def test_activation_checkpointing_recomputes_every_layer_in_the_backward(kind, qwen_dir):
    """Each decoder layer runs once in the forward and once more in the backward (the recompute)."""
    from turnpack.train.model import Transformer, config_tiny

    def layer_calls(checkpointing: bool) -> int:
        torch.manual_seed(0)
        if kind == "hf":
            model = load_hf_model(str(qwen_dir), backend="sdpa", device=torch.device("cpu"), vocab_size=300)
            assert model.hf.training  # from_pretrained gives eval mode, where transformers never recomputes
        else:
            model = Transformer(config_tiny(300, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=64))
        if checkpointing:
            model.enable_activation_checkpointing()
        calls = []
        for layer in model.decoder_layers():
            # A pre-hook on the layer's first part: the recompute calls the layer's forward, not the
            # layer (transformers keeps module hooks outside the checkpoint), and stops early, once it
            # holds what the backward needs.
            next(layer.children()).register_forward_pre_hook(lambda *_: calls.append(1))
        ids = torch.randint(0, 300, (2, 64))
        _, loss = model(ids, labels=ids.roll(-1, 1))
        loss.backward()
        return len(calls)

    layers = 2
    assert layer_calls(checkpointing=False) == layers
    assert layer_calls(checkpointing=True) == 2 * layers


def test_the_tokenizer_comes_from_the_model_folder(qwen_dir, tmp_path):
    """data.source = "dataset" without data.tokenizer encodes with the model folder's tokenizer."""
    data = tmp_path / "chats.jsonl"
    dialogues = examples.register_dialogues(40, seed=5)
    data.write_text("".join(json.dumps({"messages": d}) + "\n" for d in dialogues), encoding="utf-8")
    config = make_config(tmp_path / "run", qwen_dir, **{"data.source": "dataset", "data.path": str(data),
                                                        "train.max_steps": 2, "checkpoint.every": 0})  # fmt: skip
    result = train(config, echo=quiet)
    assert result.step == 2
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (result.final_model / name).read_bytes() == (qwen_dir / name).read_bytes(), name


def test_a_tokenizer_larger_than_the_embedding_is_an_error_before_training(tmp_path):
    small = tiny_model_dir(tmp_path / "small", "qwen3", vocab_size=256)
    with pytest.raises(ConfigError, match=r"embedding of 256 rows but the tokenizer has 300 tokens"):
        train(make_config(tmp_path / "run", small), echo=quiet)
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_data_encoded_with_another_vocabulary_than_the_models_is_an_error(tmp_path):
    """The example dialogues (a 300-token tokenizer) against a model folder with its own, smaller one
    (302 tokens, trained in the test): the ids fit the 512-row embedding, but they mean other tokens."""
    from tiny_tokenizer import tiny_tokenizer_json

    other = tiny_model_dir(tmp_path / "other", "qwen3", vocab_size=512)
    (other / "tokenizer.json").write_text(tiny_tokenizer_json(), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"the data's tokenizer has 300 tokens but .*tokenizer.json has 302"
    ):
        train(make_config(tmp_path / "run", other), echo=quiet)


def test_a_prepared_folder_of_another_vocabulary_is_an_error(qwen_dir, tmp_path):
    """`turnpack prepare` records its tokenizer's vocabulary; training checks the model's against it."""
    from tiny_tokenizer import tiny_tokenizer_json
    from turnpack import prepare

    data = tmp_path / "chats.jsonl"
    data.write_text(
        "".join(json.dumps({"messages": d}) + "\n" for d in examples.register_dialogues(40, seed=5))
    )
    out = tmp_path / "prepared"
    args = [str(data), "--tokenizer", str(qwen_dir), "--seq-len", "256", "--out", str(out), "--no-progress"]
    assert prepare.main(args) == 0
    assert json.loads((out / "index.json").read_text())["metadata"]["vocab_size"] == 300
    settings = {"data.source": "dataset", "data.path": str(out), "train.max_steps": 1, "checkpoint.every": 0}
    assert train(make_config(tmp_path / "same", qwen_dir, **settings), echo=quiet).step == 1

    other = tiny_model_dir(tmp_path / "other", "qwen3", vocab_size=512)
    (other / "tokenizer.json").write_text(tiny_tokenizer_json(), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"prepared with a tokenizer of 300 tokens, but data.tokenizer .* has 302"
    ):
        train(make_config(tmp_path / "run", other, **settings), echo=quiet)


def test_config_rejects_reference_keys_and_missing_folders(tmp_path):
    with pytest.raises(ConfigError, match=r"model.dim.*apply only to the reference model"):
        ModelSection(hf="x", dim=64)
    with pytest.raises(ConfigError, match=r"not a Hugging Face model folder"):
        train(make_config(tmp_path / "run", tmp_path / "nowhere"), echo=quiet)


def test_turnpack_train_and_the_hf_trainer_take_the_same_first_step(qwen_dir, tmp_path):
    """The same checkpoint on the same rows: turnpack train's first-step loss is transformers.Trainer's."""
    from turnpack.integrations import hf
    from turnpack.train.data import build_loader

    config = make_config(tmp_path / "turnpack", qwen_dir, **{"train.max_steps": 1, "checkpoint.every": 0})
    ours = train(config, echo=quiet).history[0]["loss"]
    rows = next(iter(build_loader(config.data, seed=config.train.seed).loader))  # the rows of that step

    model = transformers.AutoModelForCausalLM.from_pretrained(qwen_dir, attn_implementation="sdpa")
    seen: list[float] = []
    model.register_forward_hook(
        lambda module, args, kwargs, out: seen.append(out.loss.item()), with_kwargs=True
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"), report_to=[], use_cpu=True, remove_unused_columns=False,
        save_strategy="no", logging_steps=1, per_device_train_batch_size=SETTINGS["data.batch_size"],
        max_steps=1, disable_tqdm=True,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=hf.PackedRowsDataset(rows),
        data_collator=hf.DataCollatorForPackedRows(model),
    )  # fmt: skip
    trainer.train()
    assert seen and seen[0] == pytest.approx(ours, abs=1e-6)
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert logged[0] == pytest.approx(ours, abs=1e-4)
