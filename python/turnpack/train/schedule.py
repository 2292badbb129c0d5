"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

``lr(step) = base_lr * warmup_cosine(step, ...)`` where ``step`` counts the
optimizer steps already taken (0 for the first update)::

    step < warmup:           (step + 1) / warmup        (never 0: no wasted first step)
    warmup <= step < total:  min_ratio + (1 - min_ratio) * (1 + cos(pi * progress)) / 2
    step >= total:           min_ratio

with ``progress = (step - warmup) / (total - warmup)`` going from 0 to 1.

The schedule is a pure function of the step (as in nanoGPT), so the training
loop sets the learning rate itself before every step and a checkpoint needs
no scheduler state beyond the step: a resumed run follows its own config, e.g.
a longer cosine when ``max_steps`` was raised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["WarmupCosine", "warmup_cosine"]


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return min_ratio
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class WarmupCosine:
    """A base learning rate and its :func:`warmup_cosine` schedule: ``schedule(step)`` is the lr."""

    lr: float
    warmup_steps: int
    total_steps: int
    min_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise ValueError("need warmup_steps >= 0 and total_steps >= 1")
        if not 0.0 <= self.min_ratio <= 1.0:
            raise ValueError(f"min_ratio must be in [0, 1], got {self.min_ratio}")

    def __call__(self, step: int) -> float:
        return self.lr * warmup_cosine(
            step, warmup_steps=self.warmup_steps, total_steps=self.total_steps, min_ratio=self.min_ratio
        )
