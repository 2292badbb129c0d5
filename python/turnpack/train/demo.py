"""A short CPU training run on the built-in example dataset, end to end.

:func:`run_demo` generates register-machine dialogues (:mod:`turnpack.train.examples`),
encodes them with the bundled byte-level ChatML tokenizer, packs them, trains
the reference model with :func:`turnpack.train.train` (the same loop as
``turnpack train``), and then asks the model unseen dialogues' final questions,
answering greedily.  The answers depend on earlier turns, so they come out right
only if the model attends within its own conversation.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from turnpack.train import examples
from turnpack.train.config import EXAMPLE_CONFIG, TrainConfig, apply_override, load_config
from turnpack.train.loop import train
from turnpack.train.model import Transformer

__all__ = ["DemoResult", "answer", "demo_config", "run_demo"]

#: Seed of the held-out dialogues (training uses train.seed, 0 by default).
HELD_OUT_SEED = 1_000_003


@dataclass
class DemoResult:
    """What :func:`run_demo` measured."""

    losses: list[tuple[int, float]]  # (step, training loss) as logged
    accuracy: float  # exact-match accuracy of the final answers of held-out dialogues
    num_eval: int
    prompt: list[dict[str, str]]  # the shown held-out dialogue, up to its last question
    expected: str
    answer: str
    seconds: float
    samples: list[tuple[str, str, str]] = field(default_factory=list)  # (question, expected, answer)


def demo_config(out_dir: str | Path, *, steps: int = 1000, seed: int = 0, **overrides: Any) -> TrainConfig:
    """The demo's training config: ``turnpack train --config example`` on the CPU, without checkpoints.

    That config (``example_data/train_example.json``) trains a ~0.39M-parameter model (3 layers, width
    96, 6 heads; grouped-query attention slows learning to look registers up) on 8 packed rows of 256
    tokens (~32 dialogues) per step.  ``overrides`` are ``"section.key": value`` pairs applied last,
    e.g. ``{"train.lr": 1e-3}``.
    """
    config = load_config(EXAMPLE_CONFIG)
    settings = {
        "train.out_dir": str(out_dir),
        "train.max_steps": steps,
        "train.seed": seed,
        "train.device": "cpu",
        "train.log_every": max(1, steps // 20),
        "checkpoint.every": 0,
        "checkpoint.resume": "never",
        **overrides,
    }
    for key, value in settings.items():
        config = apply_override(config, f"{key}={json.dumps(value)}")
    return config


@torch.no_grad()
def answer(model: Transformer, messages: list[dict[str, str]], max_new_tokens: int = 8) -> str:
    """The model's greedy reply to ``messages`` (ending with a user turn), as text."""
    tok = examples.example_tokenizer()
    prompt = tok.tokenize(tok.render(messages, add_generation_prompt=True))
    device = next(model.parameters()).device
    out = model.generate(torch.tensor(prompt, device=device), max_new_tokens, eos_id=examples.IM_END_ID)
    return tok.decode(out.tolist()).removesuffix(examples.IM_END)


def _held_out(n: int, training: list[list[dict[str, str]]]) -> list[list[dict[str, str]]]:
    """``n`` dialogues from another seed, none of which occurs in the training set.

    Short dialogues have few variants, so many of them do occur there: skip those.
    """
    seen = {json.dumps(d) for d in training}
    rng = random.Random(HELD_OUT_SEED)
    fresh: list[list[dict[str, str]]] = []
    while len(fresh) < n:
        dialogue = examples.register_dialogue(rng, rng.randint(examples.MIN_TURNS, examples.MAX_TURNS))
        if json.dumps(dialogue) not in seen:
            fresh.append(dialogue)
    return fresh


def run_demo(
    steps: int = 1000,
    *,
    num_eval: int = 100,
    seed: int = 0,
    out_dir: str | Path | None = None,
    echo: Callable[[str], None] = print,
    **overrides: Any,
) -> DemoResult:
    """Train on the example dataset on CPU, print the loss falling, then answer unseen dialogues.

    Args:
        steps: optimizer steps (the default takes about a minute on 2 CPU cores).
        num_eval: held-out dialogues whose final question is asked.
        seed: seed of the training dialogues, the data order and the initial weights.
        out_dir: where the log and final checkpoint go (a temporary folder by default).
        echo: where the output lines go.
        overrides: further config settings, ``{"section.key": value}`` (e.g. ``{"model.n_layers": 2}``).
    """
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="turnpack-demo-") as tmp:
        config = demo_config(out_dir or tmp, steps=steps, seed=seed, **overrides)
        echo(
            f"Training the reference model on {config.data.num_examples} register-machine dialogues "
            f"for {steps} steps (CPU)."
        )
        result = train(config, echo=echo)
    model = result.model.eval()

    training = examples.register_dialogues(config.data.num_examples, seed=seed)
    held_out = _held_out(num_eval, training)
    samples = [(d[-2]["content"], d[-1]["content"], answer(model, d[:-1])) for d in held_out]
    correct = sum(expected == got for _, expected, got in samples)

    # Show a dialogue that needs some memory: the first with an addition and at least 5 exchanges
    # (chosen before looking at the answers).
    index = next((i for i, d in enumerate(held_out) if len(d) >= 10 and "add" in json.dumps(d)), 0)
    shown, (_, expected, got) = held_out[index], samples[index]
    echo("\nAn unseen dialogue; the model answers its last question:")
    for message in shown[:-1]:
        echo(f"  {message['role']:>9}: {message['content']}")
    echo(f"  expected : {expected}")
    echo(f"  model    : {got}")
    seconds = time.perf_counter() - start
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    echo(
        f"\nFinal answers right on {correct}/{len(samples)} unseen dialogues (a random digit: ~10%); "
        f"loss {first:.3f} -> {last:.3f}; {seconds:.0f} s in all."
    )
    return DemoResult(
        losses=[(r["step"], r["loss"]) for r in result.history],
        accuracy=correct / max(1, len(samples)),
        num_eval=len(samples),
        prompt=shown[:-1],
        expected=expected,
        answer=got,
        seconds=seconds,
        samples=samples,
    )
