"""Two-process DDP training on CPU (gloo) under torchrun.

* A run interrupted after step 3 (its checkpoint copied into a fresh run
  directory) and resumed under torchrun gives exactly the losses of the
  uninterrupted two-process run.
* The two-process losses equal single-process losses on the same global batch:
  the loss is the mean over the trained tokens of the whole global batch, not a
  mean of per-rank means (ranks hold different numbers of trained tokens).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist
from distributed import SETTINGS, STEPS, logged_losses, torchrun, write_config
from turnpack.attention import dense_document_mask
from turnpack.data import IGNORE_INDEX
from turnpack.train import build_model, examples, train
from turnpack.train.config import TrainConfig, apply_override
from turnpack.train.data import build_loader

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is unavailable")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    """An uninterrupted two-process run (checkpoints at steps 3 and 6)."""
    root = tmp_path_factory.mktemp("ddp")
    proc = torchrun(write_config(root / "full.json", root / "full"), root)
    assert "device cpu x 2" in proc.stdout
    return root


def test_ddp_trains_and_resumes_with_identical_losses(ddp_run):
    full = logged_losses(ddp_run / "full")
    assert list(full) == list(range(1, STEPS + 1))
    assert full[STEPS] < full[1]
    ckpt = torch.load(ddp_run / "full" / "checkpoints" / "step_00000003.pt", weights_only=False)
    assert [r["loader"]["rank"] for r in ckpt["ranks"]] == [0, 1]  # each rank's own data position

    resumed = ddp_run / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(ddp_run / "full" / "checkpoints" / "step_00000003.pt", resumed / "checkpoints")
    proc = torchrun(write_config(ddp_run / "resumed.json", resumed), ddp_run)
    assert "resumed from" in proc.stdout
    assert logged_losses(resumed) == {s: v for s, v in full.items() if s > 3}


def test_ddp_losses_equal_single_process_on_the_global_batch(ddp_run, tmp_path):
    """One process with twice the rows per step sees the same rows (see PackedBatches)."""
    config = TrainConfig()
    settings = {**SETTINGS, "data.batch_size": 4, "train.out_dir": str(tmp_path), "checkpoint.every": 0}
    for key, value in settings.items():
        config = apply_override(config, f"{key}={json.dumps(value)}")
    single = {r["step"]: r["loss"] for r in train(config, echo=lambda _: None).history}
    ddp = logged_losses(ddp_run / "full")
    assert single.keys() == ddp.keys()
    for step, loss in single.items():
        # Same arithmetic up to the order of float sums (all-reduce): equal to ~1e-6.
        assert loss == pytest.approx(ddp[step], rel=1e-4), step
    records = [json.loads(line) for line in (ddp_run / "full" / "log.jsonl").read_text().splitlines()]
    assert all(r["tokens"] == 2 * 2 * 512 for r in records)  # rows x ranks x seq_len per step

    # Control: where the two ranks' shares of a step hold different numbers of trained tokens, a mean
    # of per-rank means (plain DDP averaging of per-rank mean losses) is a different number, and the
    # logged loss must be the global mean instead.  Checked at step 1 (initial weights) and step 4
    # (weights of the step-3 checkpoint), with a tight tolerance: the same rows go through the same
    # kernels, so only the float summation order differs (~1e-7).
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, vocab_size=examples.VOCAB_SIZE, seq_len=512)
    batches = iter(build_loader(config.data, seed=config.train.seed).loader)
    first, fourth = [next(batches) for _ in range(4)][::3]
    at_step_1 = rank_means(model, first)
    ckpt = torch.load(ddp_run / "full" / "checkpoints" / "step_00000003.pt", weights_only=False)
    model.load_state_dict(ckpt["model"])
    at_step_4 = rank_means(model, fourth)
    unequal = 0
    for step, (global_mean, mean_of_means, counts) in [(1, at_step_1), (4, at_step_4)]:
        assert ddp[step] == pytest.approx(global_mean, rel=2e-6), step
        if counts[0] != counts[1]:
            unequal += 1
            assert abs(mean_of_means - global_mean) > 1e-5 * global_mean, step
    assert unequal, "the control needs a step whose ranks hold different numbers of trained tokens"


def rank_means(model, batch) -> tuple[float, float, list[int]]:
    """(mean over all trained tokens, mean of the two ranks' means, the ranks' token counts)."""
    sums, counts = [], []
    with torch.no_grad():
        for rows in (slice(0, 2), slice(2, 4)):  # rank 0, rank 1
            part = {k: v[rows] for k, v in batch.items()}
            mask = dense_document_mask(part["document_ids"])
            _, loss_sum = model(
                part["input_ids"], part["position_ids"], labels=part["labels"], dense_mask=mask,
                loss_reduction="sum",
            )  # fmt: skip
            sums.append(loss_sum.item())
            counts.append(int((part["labels"] != IGNORE_INDEX).sum()))
    return sum(sums) / sum(counts), (sums[0] / counts[0] + sums[1] / counts[1]) / 2, counts
