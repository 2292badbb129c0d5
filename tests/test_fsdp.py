"""Two-process FSDP2 training on CPU (gloo) under torchrun (``train.data_parallel = "fsdp"``).

* FSDP2 losses equal single-process losses on the same global batch (within 1e-4), for the
  reference model and for a Hugging Face checkpoint (with gradient accumulation and activation
  checkpointing), and the Hugging Face model saved from the shards equals the single-process one;
* a run resumed from a distributed checkpoint (``torch.distributed.checkpoint``) gives exactly the
  losses of the uninterrupted run;
* a distributed checkpoint is refused by a run that does not shard, with a message saying why.

CPU offload (``train.fsdp_cpu_offload``) pins host memory and needs CUDA: it is checked by
``bench/gpu_train.py --check`` on a GPU, and refused on CPU with a clear error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist
from distributed import SETTINGS, STEPS, logged_losses, torchrun, write_config
from turnpack.train import train
from turnpack.train.config import ConfigError, TrainConfig, apply_override
from turnpack.train.loop import Distributed, _train

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is unavailable")

FSDP = {**SETTINGS, "train.data_parallel": "fsdp"}


def single_process(out_dir: Path, settings: dict) -> dict[int, float]:
    """The same run in this process with both ranks' rows in one batch."""
    config = TrainConfig()
    base = {k: v for k, v in settings.items() if k != "train.data_parallel"}
    merged = {**base, "data.batch_size": 2 * settings["data.batch_size"], "train.out_dir": str(out_dir),
              "checkpoint.every": 0}  # fmt: skip
    for key, value in merged.items():
        config = apply_override(config, f"{key}={json.dumps(value)}")
    return {r["step"]: r["loss"] for r in train(config, echo=lambda _: None).history}


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    """An uninterrupted two-process FSDP2 run of the reference model (checkpoints at steps 3 and 6)."""
    root = tmp_path_factory.mktemp("fsdp")
    proc = torchrun(write_config(root / "full.json", root / "full", FSDP), root)
    assert "device cpu x 2 (FSDP2)" in proc.stdout
    return root


def test_fsdp_losses_equal_single_process_on_the_global_batch(fsdp_run, tmp_path):
    sharded = logged_losses(fsdp_run / "full")
    assert list(sharded) == list(range(1, STEPS + 1)) and sharded[STEPS] < sharded[1]
    single = single_process(tmp_path, FSDP)
    for step, loss in single.items():
        assert loss == pytest.approx(sharded[step], rel=1e-4), step


def test_fsdp_resumes_from_a_distributed_checkpoint_with_identical_losses(fsdp_run):
    step3 = fsdp_run / "full" / "checkpoints" / "step_00000003"
    assert sorted(p.name for p in step3.iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
        "trainer_state.pt",
    ]
    state = torch.load(step3 / "trainer_state.pt", weights_only=False)
    assert state["step"] == 3 and [r["loader"]["rank"] for r in state["ranks"]] == [0, 1]

    resumed = fsdp_run / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(step3, resumed / "checkpoints" / step3.name)
    proc = torchrun(write_config(fsdp_run / "resumed.json", resumed, FSDP), fsdp_run)
    assert "resumed from" in proc.stdout
    full = logged_losses(fsdp_run / "full")
    assert logged_losses(resumed) == {s: v for s, v in full.items() if s > 3}


def test_a_distributed_checkpoint_needs_fsdp_to_resume(fsdp_run, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    shutil.copytree(
        fsdp_run / "full" / "checkpoints" / "step_00000003", tmp_path / "checkpoints" / "step_00000003"
    )
    config = TrainConfig()
    for key, value in {**SETTINGS, "train.out_dir": str(tmp_path)}.items():
        config = apply_override(config, f"{key}={json.dumps(value)}")
    with pytest.raises(RuntimeError, match=r"distributed \(FSDP2\) checkpoint.*train.data_parallel"):
        train(config, echo=lambda _: None)


def test_fsdp_in_one_process_equals_unsharded_training_and_resumes(tmp_path):
    """Without torchrun, "fsdp" shards over a process group of one (what CPU offload on one GPU uses)."""

    def run(out: Path, **extra) -> tuple[dict[int, float], list[str]]:
        config = TrainConfig()
        for key, value in {**SETTINGS, "train.out_dir": str(out), **extra}.items():
            config = apply_override(config, f"{key}={json.dumps(value)}")
        lines: list[str] = []
        history = {r["step"]: r["loss"] for r in train(config, echo=lines.append).history}
        assert not dist.is_initialized()  # the group of one is torn down again
        return history, lines

    plain, _ = run(tmp_path / "plain", **{"checkpoint.every": 0})
    sharded, lines = run(tmp_path / "sharded", **{"train.data_parallel": "fsdp"})
    assert any("device cpu x 1 (FSDP2)" in line for line in lines)
    for step, loss in plain.items():
        assert loss == pytest.approx(sharded[step], rel=1e-5), step
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    step3 = tmp_path / "sharded" / "checkpoints" / "step_00000003"
    shutil.copytree(step3, resumed / "checkpoints" / step3.name)
    # An explicit checkpoint.resume names the folder (it lies elsewhere than this run's out_dir).
    again, lines = run(resumed / "elsewhere", **{"train.data_parallel": "fsdp",
                                                "checkpoint.resume": str(resumed / "checkpoints" / step3.name)})  # fmt: skip
    assert any("resumed from" in line for line in lines)
    assert again == {s: v for s, v in sharded.items() if s > 3}


def test_cpu_offload_needs_cuda(tmp_path):
    """Offload is refused on a CPU device, before the first step."""
    config = TrainConfig()
    for key, value in {**FSDP, "train.out_dir": str(tmp_path), "train.fsdp_cpu_offload": True}.items():
        config = apply_override(config, f"{key}={json.dumps(value)}")
    with pytest.raises(ConfigError, match=r"fsdp_cpu_offload.*needs CUDA"):
        # As rank 0 of two: the check comes before anything uses the (here absent) process group.
        _train(config, Distributed(0, 2, 0), torch.device("cpu"), None, lambda _: None)


def test_fsdp_fine_tunes_a_hugging_face_model_like_one_process(tmp_path):
    pytest.importorskip("transformers")
    import transformers
    from hf_models import tiny_model_dir

    model_dir = tiny_model_dir(tmp_path / "qwen3", "qwen3")
    settings = {k: v for k, v in FSDP.items() if not k.startswith("model.")}
    settings.update({"model.hf": str(model_dir), "train.max_steps": 3, "checkpoint.every": 0,
                     "data.seq_len": 256, "train.grad_accum_steps": 2,
                     "train.activation_checkpointing": True})  # fmt: skip
    proc = torchrun(write_config(tmp_path / "hf.json", tmp_path / "sharded", settings), tmp_path)
    assert "(Hugging Face)" in proc.stdout and "(FSDP2)" in proc.stdout
    sharded = logged_losses(tmp_path / "sharded")
    single = single_process(tmp_path / "single", settings)
    for step, loss in single.items():
        assert loss == pytest.approx(sharded[step], rel=1e-4), step
    # The full weights gathered from the shards are the single process's weights.
    a = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "sharded" / "final_model").state_dict()
    b = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "single" / "final_model").state_dict()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-4, msg=name)
