"""A pretrained Hugging Face causal LM behind the interface the training loop calls.

``[model] hf = "path/to/model_dir"`` loads a local checkpoint (``config.json`` +
safetensors) with ``transformers.AutoModelForCausalLM`` and wraps it in
:class:`HFCausalLM`, which takes the same arguments as the reference
:class:`~turnpack.train.model.Transformer`: packed rows (``input_ids``,
``position_ids`` restarting per document), turnpack's *shifted* labels
(``labels[t]`` is what ``logits[t]`` predicts) and a document mask built once
per batch.  The mask goes to the model as its ``attention_mask``, which
transformers uses as is when it is 4D or a ``BlockMask``:

* ``flex`` (``attn_implementation="flex_attention"``, GPU): the FlexAttention
  ``BlockMask`` of :func:`turnpack.attention.document_block_mask`;
* ``sdpa`` (CPU, or GPU by choice): the dense boolean ``[batch, 1, seq, seq]``
  mask of :func:`turnpack.attention.dense_document_mask`.

Either way each document of a row attends only to itself, and positions restart
per document, so a packed row trains exactly like its conversations alone.
Prefix-tree rows (``prefix_starts`` / ``prefix_ends``, :mod:`turnpack.attention`)
get the tree mask the same way, so each branch trains as trunk prefix + branch.  The
loss is computed here in float32 from the logits and the shifted labels, not by
the model (whose loss shifts the labels again).

:func:`save_pretrained` writes a folder that ``from_pretrained`` (and so vLLM)
loads: the model's config and safetensors, its generation config, and the
tokenizer files with the chat template that trained it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from turnpack.train.config import ConfigError
from turnpack.train.model import attention_mask_kwargs, next_token_loss

if TYPE_CHECKING:  # pragma: no cover - import only for annotations
    from torch.nn.attention.flex_attention import BlockMask

    from turnpack.train.model import MaskKwargs

__all__ = ["TOKENIZER_FILES", "HFCausalLM", "load_hf_model", "save_pretrained"]

#: Tokenizer and template files copied from the tokenizer's folder next to a saved model.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)

_ATTN_IMPLEMENTATION = {"flex": "flex_attention", "sdpa": "sdpa"}


class HFCausalLM(nn.Module):
    """A ``transformers`` causal LM called like :class:`~turnpack.train.model.Transformer`.

    Attributes:
        hf: the wrapped ``PreTrainedModel`` (what :func:`save_pretrained` saves).
        backend: ``"flex"`` or ``"sdpa"``, the attention it was loaded with.
        source: the folder it was loaded from.
    """

    def __init__(self, hf: nn.Module, backend: Literal["flex", "sdpa"], source: str) -> None:
        super().__init__()
        self.hf = hf
        self.backend = backend
        self.source = source

    @property
    def vocab_rows(self) -> int:
        """Rows of the input embedding: every token id must be below this."""
        return int(self.hf.get_input_embeddings().weight.shape[0])

    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        """Number of unique parameters (tied weights count once)."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            for module in (self.hf.get_input_embeddings(), self.hf.get_output_embeddings()):
                if module is not None:
                    params.pop(id(module.weight), None)
        return sum(p.numel() for p in params.values())

    def resolved_backend(self, device: torch.device | str | None = None) -> Literal["flex", "sdpa"]:
        """The attention backend (fixed when the model was loaded)."""
        return self.backend

    def decoder_layers(self) -> Iterator[nn.Module]:
        """The repeated blocks (``_no_split_modules``): FSDP2 shards each one on its own."""
        names = set(getattr(self.hf, "_no_split_modules", None) or ())
        found = False
        for module in self.hf.modules():
            if type(module).__name__ in names:
                found = True
                yield module
        if not found:
            raise ValueError(
                f"{type(self.hf).__name__} names no decoder layer class (_no_split_modules is "
                f"{sorted(names)}): cannot shard it per layer"
            )

    def enable_activation_checkpointing(self) -> None:
        """Recompute each decoder layer's activations in the backward pass."""
        kwargs = {"use_reentrant": False}
        if hasattr(self.hf, "activation_checkpointing_enable"):  # transformers 5.x's name
            self.hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def build_attention_mask(
        self,
        document_ids: Tensor,
        *,
        prefix_starts: Tensor | None = None,
        prefix_ends: Tensor | None = None,
    ) -> MaskKwargs:
        """The document mask for this model's backend, built once per batch (see the module docs).

        ``prefix_starts`` / ``prefix_ends`` (both or neither) make it the mask of prefix-tree rows
        (:mod:`turnpack.attention`); transformers uses it as it is, so branches whose positions
        continue from their branch point are masked right (its own detection from positions could not).
        """
        return attention_mask_kwargs(self.backend, document_ids, prefix_starts, prefix_ends)

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Tensor | None = None,
        *,
        block_mask: BlockMask | None = None,
        dense_mask: Tensor | None = None,
        labels: Tensor | None = None,
        loss_reduction: Literal["mean", "sum"] = "mean",
        loss_weights: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits, and the loss over turnpack's shifted ``labels`` when given.

        Same contract as :meth:`turnpack.train.model.Transformer.forward`.  Without a mask,
        transformers infers the documents from restarting ``position_ids`` (``use_cache=False``
        here); without either, attention is plain causal over the whole row.
        """
        if block_mask is not None and dense_mask is not None:
            raise ValueError("pass either block_mask or dense_mask, not both")
        mask = block_mask if block_mask is not None else dense_mask
        out = self.hf(input_ids=input_ids, position_ids=position_ids, attention_mask=mask, use_cache=False)
        if labels is None:
            return out.logits
        return out.logits, next_token_loss(out.logits, labels, loss_reduction, loss_weights)


def _import_transformers() -> Any:
    try:
        import transformers
    except ModuleNotFoundError:
        raise ConfigError("model.hf needs Hugging Face transformers: pip install 'turnpack[hf]'") from None
    return transformers


def load_hf_model(
    path: str,
    *,
    backend: Literal["auto", "flex", "sdpa"],
    device: torch.device,
    vocab_size: int | None,
) -> HFCausalLM:
    """Load the checkpoint at ``path`` in float32 and check it against the data's tokenizer.

    Args:
        path: a local model folder (``config.json`` + safetensors).
        backend: ``"auto"`` is ``"flex"`` on CUDA and ``"sdpa"`` elsewhere (FlexAttention has no
            backward pass on CPU).
        device: where training runs (decides ``"auto"``).
        vocab_size: the tokenizer's vocabulary (ids ``0..vocab_size-1``), or None if the data
            cannot tell.

    Raises:
        ConfigError: no model folder at ``path``; the folder holds a ``tokenizer.json`` of another
            vocabulary size than the data's tokenizer; or the model's embedding has fewer rows than
            the tokenizer has tokens (ids past the embedding would fail, or silently index garbage,
            in the first step).
    """
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"model.hf: {path} is not a Hugging Face model folder (no config.json)")
    transformers = _import_transformers()
    if backend == "auto":
        backend = "flex" if device.type == "cuda" else "sdpa"
    # float32 master weights: bf16 is applied per step (autocast, or FSDP2's mixed precision).
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch.float32, attn_implementation=_ATTN_IMPLEMENTATION[backend]
    )
    # from_pretrained returns the model in eval mode, where transformers neither recomputes layers
    # (activation checkpointing) nor applies dropout: training needs train mode.
    hf.train()
    model = HFCausalLM(hf, backend, str(folder))
    own = folder / "tokenizer.json"
    if vocab_size is not None and own.is_file():
        # Ids index the embedding by meaning: a tokenizer that fits the embedding but is not the
        # model's own (another vocabulary) would train silently on the wrong tokens.
        from turnpack._core import ChatTokenizer

        own_size = ChatTokenizer(str(own), chat_template="").vocab_size
        if own_size != vocab_size:
            raise ConfigError(
                f"model.hf: the data's tokenizer has {vocab_size} tokens but {own} has {own_size}: "
                "the data is encoded with another vocabulary than the model's (data.tokenizer names the "
                "tokenizer; by default the model folder's, and data.source = 'example' uses the bundled "
                "example tokenizer)"
            )
    if vocab_size is not None and vocab_size > model.vocab_rows:
        raise ConfigError(
            f"model.hf: {path} has an embedding of {model.vocab_rows} rows but the tokenizer has "
            f"{vocab_size} tokens (ids up to {vocab_size - 1}): the tokenizer does not belong to this "
            "model (set data.tokenizer to the model's own tokenizer)"
        )
    return model


def save_pretrained(
    model: HFCausalLM,
    out_dir: str | Path,
    *,
    state_dict: Mapping[str, Tensor] | None = None,
    tokenizer_dir: str | Path | None = None,
    tokenizer_json: str | Path | None = None,
    chat_template: str | None = None,
) -> Path:
    """Write ``out_dir`` so that ``AutoModelForCausalLM.from_pretrained(out_dir)`` loads the trained model.

    Args:
        model: the trained model.
        out_dir: the folder to write (created; existing files are replaced).
        state_dict: the full (unsharded) state dict of ``model`` when it is sharded (FSDP2);
            by default the model's own.
        tokenizer_dir: a folder whose tokenizer files (:data:`TOKENIZER_FILES`) are copied beside
            the weights.
        tokenizer_json: a lone tokenizer.json to copy instead (no folder).
        chat_template: the template that trained the model, written as ``chat_template.jinja``
            (it replaces the folder's own when the run used another one).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_state = None
    if state_dict is not None:
        hf_state = {k.removeprefix("hf."): v for k, v in state_dict.items()}
    model.hf.save_pretrained(str(out), state_dict=hf_state, safe_serialization=True)
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            src = Path(tokenizer_dir) / name
            if src.is_file():
                shutil.copyfile(src, out / name)
    if tokenizer_json is not None:
        shutil.copyfile(tokenizer_json, out / "tokenizer.json")
        config_path = out / "tokenizer_config.json"
        if not config_path.exists():
            config_path.write_text(
                json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}, indent=2) + "\n", encoding="utf-8"
            )
    if chat_template is not None:
        (out / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
        # A template inside tokenizer_config.json would win over the file for some readers: drop it.
        config_path = out / "tokenizer_config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text(encoding="utf-8"))
            if config.pop("chat_template", None) is not None:
                config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out
