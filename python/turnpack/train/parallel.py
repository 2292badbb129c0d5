"""Data parallelism for ``turnpack train``: DDP or FSDP2, chosen by ``train.data_parallel``.

* ``"ddp"``: every rank holds the whole model; ``DistributedDataParallel``
  averages gradients over ranks after the last micro-batch of a step.
* ``"fsdp"``: ``torch.distributed.fsdp.fully_shard`` (FSDP2) on every decoder
  layer and then on the whole model, so each rank holds ``1/world_size`` of
  the parameters, gradients and optimizer state, and gathers one layer's
  parameters at a time.  With bf16 the :class:`MixedPrecisionPolicy` gathers
  parameters in bf16 and reduces gradients in float32 (master weights and
  optimizer state stay float32); ``train.fsdp_cpu_offload`` keeps the shards
  in CPU memory between uses.  Checkpoints are distributed
  (``torch.distributed.checkpoint``, see :mod:`turnpack.train.checkpoint`).

Both average gradients over ranks (DDP all-reduce, FSDP2 reduce-scatter), so
the loop's loss scaling (``world_size / trained tokens of the global batch``)
gives the gradient of the mean loss over every trained token of the global
batch either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor, nn

__all__ = [
    "ShardableModel",
    "clip_grad_norm",
    "gradient_sync",
    "is_fsdp",
    "shard_fsdp",
    "wrap_ddp",
]


class ShardableModel(Protocol):
    """What FSDP2 sharding needs from a model: its repeated blocks."""

    def decoder_layers(self) -> Iterable[nn.Module]: ...


def shard_fsdp(
    model: nn.Module,
    *,
    device: torch.device,
    param_dtype: torch.dtype | None,
    cpu_offload: bool = False,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """Apply FSDP2 in place: ``fully_shard`` each decoder layer, then the root (embeddings, head).

    Args:
        model: the unwrapped model (:class:`~turnpack.train.model.Transformer` or
            :class:`~turnpack.train.hf_model.HFCausalLM`), in a process group, on any device:
            each layer moves to ``device`` as it is sharded, so no rank holds the whole model there.
        device: the training device (of this rank); the mesh spans every rank of the group.
        param_dtype: gather parameters in this dtype for compute (bf16), reducing gradients in
            float32; None keeps float32 throughout.
        cpu_offload: keep parameter, gradient and optimizer shards in CPU memory.
        reshard_after_forward: free each layer's gathered parameters after its forward (ZeRO-3);
            False keeps them until the backward (ZeRO-2: more memory, fewer all-gathers).
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    kwargs: dict[str, Any] = {
        "mesh": init_device_mesh(device.type, (dist.get_world_size(),)),
        "mp_policy": MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        if param_dtype is not None
        else MixedPrecisionPolicy(),
        "offload_policy": CPUOffloadPolicy() if cpu_offload else OffloadPolicy(),
    }
    layers = list(model.decoder_layers())  # type: ignore[operator]
    for i, layer in enumerate(layers):
        # The last layer's parameters are needed again at once by the backward: keep them gathered.
        last = i == len(layers) - 1
        fully_shard(layer, reshard_after_forward=reshard_after_forward and not last, **kwargs)
    fully_shard(model, reshard_after_forward=reshard_after_forward, **kwargs)
    return model


def is_fsdp(model: nn.Module) -> bool:
    """True if ``model`` was sharded by :func:`shard_fsdp`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` (or its compiled version)."""
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


@contextlib.contextmanager
def gradient_sync(model: nn.Module, raw_model: nn.Module, enabled: bool) -> Iterator[None]:
    """Reduce gradients over ranks in this backward only if ``enabled`` (the step's last micro-batch).

    DDP skips its all-reduce under ``no_sync()``; FSDP2 skips its reduce-scatter after
    ``set_requires_gradient_sync(False)`` and accumulates unsharded gradients instead.
    """
    if enabled:
        yield
        return
    if is_fsdp(raw_model):
        raw_model.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            raw_model.set_requires_gradient_sync(True)  # type: ignore[operator]
        return
    with model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext():
        yield


def clip_grad_norm(parameters: Iterable[Tensor], max_norm: float) -> Tensor:
    """Clip the global gradient norm (over all ranks' shards under FSDP2); return it as a plain tensor.

    ``max_norm`` 0 only measures the norm.
    """
    params = [p for p in parameters if p.grad is not None]
    norm = nn.utils.clip_grad_norm_(params, max_norm or float("inf"))
    full_tensor = getattr(norm, "full_tensor", None)  # a DTensor under FSDP2
    return full_tensor() if full_tensor is not None else norm
