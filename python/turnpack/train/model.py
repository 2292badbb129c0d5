"""A small Llama/Qwen-style decoder-only transformer for packed training rows.

Readable, single-file, in the spirit of nanoGPT:

* token embedding -> ``n_layers`` x (RMSNorm -> grouped-query attention with
  rotary embeddings -> residual; RMSNorm -> SwiGLU MLP -> residual) -> RMSNorm
  -> LM head (optionally tied to the embedding), no biases, no dropout;
* rotary embeddings are computed from ``position_ids``, so positions restart at
  0 for every document of a packed row;
* attention runs either through FlexAttention with a block-sparse
  :class:`~torch.nn.attention.flex_attention.BlockMask` or through
  ``scaled_dot_product_attention`` with a dense boolean mask (see
  :mod:`turnpack.attention`).  With both, a packed row is exactly equivalent to
  running each of its documents alone.

Typical training step on a packed batch (tensors ``[batch, seq_len]``)::

    model = Transformer(config_100m(vocab_size)).cuda()
    masks = model.build_attention_mask(  # once per batch
        batch["document_ids"], prefix_starts=batch.get("prefix_starts"), prefix_ends=batch.get("prefix_ends")
    )
    logits, loss = model(batch["input_ids"], batch["position_ids"], labels=batch["labels"], **masks)
    loss.backward()

``labels`` are already shifted by the packer: ``labels[t]`` is the token that
``logits[t]`` must predict, or -100 where nothing is trained.  Rows that also
carry ``prefix_starts`` / ``prefix_ends`` (prefix-tree rows, see
:mod:`turnpack.attention`) get the tree mask; without them the two are None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from turnpack.attention import dense_document_mask, document_block_mask, flex_attention_forward
from turnpack.data.batching import IGNORE_INDEX

if TYPE_CHECKING:  # pragma: no cover - import only for annotations
    from torch.nn.attention.flex_attention import BlockMask

__all__ = [
    "MLP",
    "Attention",
    "AttentionBackend",
    "Block",
    "MaskKwargs",
    "ModelConfig",
    "RMSNorm",
    "Transformer",
    "apply_rotary",
    "config_100m",
    "config_tiny",
    "next_token_loss",
    "rotary_cos_sin",
]

AttentionBackend = Literal["flex", "sdpa", "auto"]


@dataclass
class ModelConfig:
    """Hyper-parameters of :class:`Transformer`.

    Attributes:
        vocab_size: number of token ids (embedding rows).
        dim: model (residual stream) width; must be divisible by ``n_heads``.
        n_layers: number of transformer blocks.
        n_heads: query heads.
        n_kv_heads: key/value heads (grouped-query attention); divides ``n_heads``.
        ffn_hidden: hidden width of the SwiGLU MLP.
        max_seq_len: longest sequence (packed row or prompt + answer) the model
            is meant to see; :meth:`Transformer.generate` keeps only the last
            ``max_seq_len`` tokens as context, and forward rejects longer inputs.
        rope_theta: rotary embedding base.
        norm_eps: RMSNorm epsilon.
        tie_embeddings: share the token embedding with the LM head.
        attention_backend: ``"flex"`` (FlexAttention + BlockMask), ``"sdpa"``
            (scaled_dot_product_attention + dense bool mask) or ``"auto"``
            (flex on CUDA, sdpa elsewhere since FlexAttention has no CPU backward).
            Only decides which mask :meth:`Transformer.build_attention_mask` builds.
        init_std: standard deviation of the normal weight init; residual output
            projections use ``init_std / sqrt(2 * n_layers)``.
    """

    vocab_size: int
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    n_kv_heads: int = 4
    ffn_hidden: int = 2048
    max_seq_len: int = 4096
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    attention_backend: AttentionBackend = "auto"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.dim % self.n_heads != 0:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2 != 0:
            raise ValueError(f"head_dim ({self.head_dim}) must be even for rotary embeddings")
        if self.attention_backend not in ("flex", "sdpa", "auto"):
            raise ValueError(f"unknown attention_backend {self.attention_backend!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def config_100m(vocab_size: int = 32000, **overrides: object) -> ModelConfig:
    """~100M-parameter preset (Llama/Qwen-like shape, tied embeddings).

    dim 768, 12 layers, 12 query heads / 4 KV heads (head_dim 64), SwiGLU
    hidden 2048, RoPE theta 1e4.  With ``vocab_size=32000`` this is 100.1M
    parameters (24.6M of them in the tied embedding, 75.5M non-embedding).
    """
    cfg: dict[str, object] = {
        "vocab_size": vocab_size,
        "dim": 768,
        "n_layers": 12,
        "n_heads": 12,
        "n_kv_heads": 4,
        "ffn_hidden": 2048,
        "max_seq_len": 4096,
        "rope_theta": 10000.0,
        "norm_eps": 1e-5,
        "tie_embeddings": True,
    }
    cfg.update(overrides)
    return ModelConfig(**cfg)  # type: ignore[arg-type]


def config_tiny(vocab_size: int = 256, **overrides: object) -> ModelConfig:
    """A tiny preset for tests and CPU demos (well under 1M parameters for small vocabularies)."""
    cfg: dict[str, object] = {
        "vocab_size": vocab_size,
        "dim": 64,
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": 2,
        "ffn_hidden": 128,
        "max_seq_len": 512,
        "rope_theta": 10000.0,
        "norm_eps": 1e-5,
        "tie_embeddings": False,
    }
    cfg.update(overrides)
    return ModelConfig(**cfg)  # type: ignore[arg-type]


class MaskKwargs(TypedDict, total=False):
    """Keyword arguments returned by :meth:`Transformer.build_attention_mask`."""

    block_mask: BlockMask
    dense_mask: Tensor


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (no bias), computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rotary_cos_sin(position_ids: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """Rotary tables for arbitrary (e.g. per-document restarting) positions.

    Args:
        position_ids: integer tensor ``[batch, seq_len]``.
        head_dim: even head dimension.
        theta: rotary base.

    Returns:
        ``(cos, sin)``, float32 tensors ``[batch, 1, seq_len, head_dim // 2]``
        that broadcast over heads.  Computed on the fly (no buffers), so
        casting the model to bf16 does not degrade them.
    """
    exponent = torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (theta**exponent)
    angles = position_ids.to(torch.float32)[..., None] * inv_freq  # [B, T, head_dim/2]
    return angles.cos().unsqueeze(1), angles.sin().unsqueeze(1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``[batch, heads, seq, head_dim]`` (Llama's rotate-half layout)."""
    half = x.shape[-1] // 2
    x1, x2 = x.float()[..., :half], x.float()[..., half:]
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.type_as(x)


class Attention(nn.Module):
    """Grouped-query self-attention with rotary embeddings and a document mask."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.dim, config.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.dim, config.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.dim, config.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(config.n_heads * self.head_dim, config.dim, bias=False)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        *,
        block_mask: BlockMask | None = None,
        dense_mask: Tensor | None = None,
    ) -> Tensor:
        batch, seq_len, _ = x.shape
        q = self.q_proj(x).view(batch, seq_len, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, seq_len, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq_len, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        gqa = self.n_kv_heads != self.n_heads
        if block_mask is not None:
            y = flex_attention_forward(q, k, v, block_mask, enable_gqa=gqa)
        elif dense_mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask, enable_gqa=gqa)
        else:  # plain causal attention over the whole row
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        y = y.transpose(1, 2).reshape(batch, seq_len, self.n_heads * self.head_dim)
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.dim, config.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(config.dim, config.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(config.ffn_hidden, config.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = MLP(config)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        *,
        block_mask: BlockMask | None = None,
        dense_mask: Tensor | None = None,
    ) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, block_mask=block_mask, dense_mask=dense_mask)
        return x + self.mlp(self.mlp_norm(x))


def next_token_loss(
    logits: Tensor,
    labels: Tensor,
    reduction: Literal["mean", "sum"] = "mean",
    loss_weights: Tensor | None = None,
) -> Tensor:
    """Cross-entropy (in float32) of ``logits[b, t]`` against ``labels[b, t]``, turnpack's shifted labels.

    ``"sum"``: summed over the trained tokens (labels != -100); ``"mean"``: divided by their count
    (0 if there are none). With ``loss_weights`` (``[batch, seq_len]``, the packer's per-label
    weights from messages' ``weight``), each token's loss is scaled by its weight and ``"mean"`` is
    the weighted mean (divided by the sum of the trained tokens' weights).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"unknown loss_reduction {reduction!r}")
    flat_labels = labels.reshape(-1).long()
    if loss_weights is None:
        loss_sum = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            flat_labels,
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        if reduction == "sum":
            return loss_sum
        return loss_sum / (labels != IGNORE_INDEX).sum().clamp_min(1)
    if loss_weights.shape != labels.shape:
        raise ValueError(f"loss_weights has shape {tuple(loss_weights.shape)}, labels {tuple(labels.shape)}")
    per_token = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), flat_labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    weights = loss_weights.reshape(-1).float() * (flat_labels != IGNORE_INDEX)
    loss_sum = (per_token * weights).sum()
    if reduction == "sum":
        return loss_sum
    return loss_sum / weights.sum().clamp_min(torch.finfo(torch.float32).tiny)


def attention_mask_kwargs(
    backend: Literal["flex", "sdpa"],
    document_ids: Tensor,
    prefix_starts: Tensor | None = None,
    prefix_ends: Tensor | None = None,
) -> MaskKwargs:
    """The mask keyword arguments of both models' ``forward`` for ``backend``: a FlexAttention
    ``BlockMask`` or a dense SDPA mask, of prefix-tree rows when the prefix arrays are given."""
    if backend == "flex":
        return {
            "block_mask": document_block_mask(
                document_ids, prefix_starts=prefix_starts, prefix_ends=prefix_ends
            )
        }
    return {
        "dense_mask": dense_document_mask(document_ids, prefix_starts=prefix_starts, prefix_ends=prefix_ends)
    }


class Transformer(nn.Module):
    """Decoder-only language model; see the module docstring for usage."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_embeddings.weight
        #: Recompute each block's activations in the backward pass (see enable_activation_checkpointing).
        self.activation_checkpointing = False
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    def reset_parameters(self) -> None:
        """Normal(0, init_std) for embeddings and linears; residual projections
        (attention ``o_proj`` and MLP ``down_proj``) get ``init_std / sqrt(2 * n_layers)``
        (GPT-2 scheme); RMSNorm weights are 1."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                is_residual = name.endswith(("o_proj", "down_proj"))
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual else std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        """Number of (unique) parameters; tied weights count once.

        With ``exclude_embeddings`` the token embedding (and an untied LM head)
        are left out, as is customary when quoting "non-embedding" sizes.
        """
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            params.pop(id(self.tok_embeddings.weight), None)
            params.pop(id(self.lm_head.weight), None)
        return sum(p.numel() for p in params.values())

    def decoder_layers(self) -> list[Block]:
        """The repeated blocks: FSDP2 shards each one on its own (:mod:`turnpack.train.parallel`)."""
        return list(self.layers)

    def enable_activation_checkpointing(self) -> None:
        """Keep only each block's input in the forward pass and recompute the rest in the backward."""
        self.activation_checkpointing = True

    # ----------------------------------------------------------------- masks
    def resolved_backend(self, device: torch.device | str | None = None) -> Literal["flex", "sdpa"]:
        """The concrete backend: ``"auto"`` means flex on CUDA, sdpa elsewhere."""
        backend = self.config.attention_backend
        if backend != "auto":
            return backend
        if device is None:
            device = self.tok_embeddings.weight.device
        return "flex" if torch.device(device).type == "cuda" else "sdpa"

    def build_attention_mask(
        self,
        document_ids: Tensor,
        *,
        prefix_starts: Tensor | None = None,
        prefix_ends: Tensor | None = None,
    ) -> MaskKwargs:
        """Build the per-batch document mask for this model's backend.

        Returns a dict to splat into :meth:`forward`: ``{"block_mask": ...}``
        for flex or ``{"dense_mask": ...}`` for sdpa.  Build it once per batch;
        all layers share it.  ``prefix_starts`` / ``prefix_ends`` (both or
        neither) make it the mask of prefix-tree rows (:mod:`turnpack.attention`).
        """
        return attention_mask_kwargs(
            self.resolved_backend(document_ids.device), document_ids, prefix_starts, prefix_ends
        )

    # --------------------------------------------------------------- forward
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
        """Compute logits, and the loss when ``labels`` are given.

        Args:
            input_ids: ``[batch, seq_len]`` token ids.
            position_ids: ``[batch, seq_len]`` rotary positions (restarting per
                document for packed rows); ``None`` means ``0..seq_len-1``.
            block_mask: FlexAttention document mask (uses FlexAttention).
            dense_mask: bool ``[batch, 1, seq, seq]`` mask (uses SDPA).
                With neither mask, attention is plain causal over the whole row
                (right for a single sequence, wrong for a packed row).
            labels: ``[batch, seq_len]`` next-token targets aligned with
                ``input_ids`` (no shifting here), ``-100`` where not trained.
            loss_reduction: ``"mean"`` (default): summed cross-entropy over all
                trained tokens of the whole batch divided by their count (0 if
                there are none); ``"sum"``: the sum, for callers that normalise
                across micro-batches themselves.
            loss_weights: ``[batch, seq_len]`` per-label weights (the packer's
                ``loss_weights``): the loss is their weighted sum / mean
                (:func:`next_token_loss`).

        Returns:
            ``logits`` ``[batch, seq_len, vocab]``, or ``(logits, loss)``.
        """
        if block_mask is not None and dense_mask is not None:
            raise ValueError("pass either block_mask or dense_mask, not both")
        batch, seq_len = input_ids.shape
        if seq_len > self.config.max_seq_len:
            raise ValueError(f"sequence length {seq_len} exceeds max_seq_len {self.config.max_seq_len}")
        if position_ids is None:
            position_ids = torch.arange(seq_len, device=input_ids.device).expand(batch, seq_len)
        cos, sin = rotary_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta)
        x = self.tok_embeddings(input_ids)
        recompute = self.activation_checkpointing and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                x = checkpoint(
                    layer, x, cos, sin, block_mask=block_mask, dense_mask=dense_mask, use_reentrant=False
                )
            else:
                x = layer(x, cos, sin, block_mask=block_mask, dense_mask=dense_mask)
        logits = self.lm_head(self.norm(x))
        if labels is None:
            return logits
        return logits, next_token_loss(logits, labels, loss_reduction, loss_weights)

    # -------------------------------------------------------------- generate
    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        eos_id: int | None = None,
        *,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample a continuation of a single prompt (no KV cache: simple, not fast).

        Args:
            input_ids: prompt token ids, ``[seq_len]`` or ``[1, seq_len]``.
            max_new_tokens: upper bound on generated tokens.
            temperature: 0 for greedy decoding, else softmax temperature.
            eos_id: stop after emitting this token (it is included in the output).
            top_k: optionally sample only among the ``top_k`` most likely tokens.
            generator: optional RNG for reproducible sampling.

        Returns:
            1-D tensor of the newly generated token ids (prompt excluded).
        """
        if input_ids.dim() == 2:
            if input_ids.shape[0] != 1:
                raise ValueError("generate takes a single prompt")
            input_ids = input_ids[0]
        if input_ids.dim() != 1 or input_ids.numel() == 0:
            raise ValueError("generate needs a non-empty 1-D prompt")
        tokens = input_ids.to(self.tok_embeddings.weight.device)
        new_tokens: list[Tensor] = []
        for _ in range(max_new_tokens):
            context = tokens[-self.config.max_seq_len :].unsqueeze(0)
            logits = self(context)
            assert isinstance(logits, Tensor)
            next_logits = logits[0, -1].float()
            if temperature <= 0:
                next_id = next_logits.argmax().view(1)
            else:
                next_logits = next_logits / temperature
                if top_k is not None:
                    kth = torch.topk(next_logits, min(top_k, next_logits.numel())).values[-1]
                    next_logits = next_logits.masked_fill(next_logits < kth, float("-inf"))
                probs = torch.softmax(next_logits, dim=-1)
                next_id = torch.multinomial(probs, 1, generator=generator)
            next_id = next_id.to(tokens.dtype)
            new_tokens.append(next_id)
            tokens = torch.cat((tokens, next_id))
            if eos_id is not None and int(next_id.item()) == eos_id:
                break
        if not new_tokens:
            return tokens.new_empty(0)
        return torch.cat(new_tokens)
