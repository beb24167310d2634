"""Resumable checkpoints hold what training changes (trainable parameters, buffers, optimizer, scheduler and RNG
states), resume exactly without the frozen weights, keep the newest `keep_checkpoints`, and refuse one that
lacks a trainable weight."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from toy_training import LOOP, toy_items, toy_model  # noqa: E402

from hatememes.data.readers import MemeItems  # noqa: E402
from hatememes.models import BuildContext  # noqa: E402
from hatememes.models.clip_fusion import ClipFusion, ClipFusionConfig  # noqa: E402
from hatememes.models.llava_tiny import build_tiny_base  # noqa: E402
from hatememes.training import LoopParams, complete_checkpoints, predict, train  # noqa: E402
from test_llava import TINY, ItemList, lora, memes, write_corpus  # noqa: E402


class FrozenImageFusion(ClipFusion):
    """ClipFusion with its image projection frozen (a pretrained tower's stand-in) and a BatchNorm before its
    head: parameters a checkpoint leaves out, and buffers it must keep."""

    def __init__(self, config: ClipFusionConfig):
        super().__init__(config)
        self.image_projection.requires_grad_(False)
        self.pre_output.insert(0, nn.BatchNorm1d(config.projection_dim))


def frozen_fusion() -> FrozenImageFusion:
    torch.manual_seed(0)  # what a rerun does: the same base, the same initial weights
    return FrozenImageFusion.build(ClipFusionConfig(projection_dim=32, pre_output_dim=32,
                                                    drop_probs=(0.1, 0.0, 0.1)),
                                   BuildContext(feature_meta={"clip": {"dim": 16}}))


class Killed(Exception):
    """Stands in for a killed process."""


class KilledItems(MemeItems):
    """Training memes whose reading stops the run after `reads` of them."""

    def __init__(self, items: MemeItems, reads: int):
        super().__init__(items.memes_dir, items.memes, items.features)
        self.reads = reads

    def __getitem__(self, index: int) -> dict:
        self.reads -= 1
        if self.reads < 0:
            raise Killed
        return super().__getitem__(index)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def test_tiny_llava_lora_checkpoint_holds_the_adapters_not_the_base(tmp_path):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as test_llava: one thread is faster on a shared 2-core machine
    try:
        base = build_tiny_base(write_corpus(tmp_path / "corpus", 120), tmp_path / "base", TINY)
        model = lora(base)
        items = ItemList(memes(32, 3))
        train(model, items, items, LoopParams(epochs=1, batch_size=16, lr=1.0e-3), tmp_path / "run")
    finally:
        torch.set_num_threads(previous)
    (checkpoint,) = complete_checkpoints(tmp_path / "run" / "checkpoints")
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    adapter_bytes = sum(p.numel() * p.element_size() for p in trainable.values())
    assert set(load_file(checkpoint / "model.safetensors")) == set(trainable)  # no frozen base, no buffers here
    # measured: 326 kB (before, with the whole model: 702 kB) for 94 kB of adapters
    assert folder_bytes(checkpoint) <= 4 * adapter_bytes + 2**20


def test_a_model_with_a_frozen_part_resumes_bit_identically(tmp_path, capsys):
    train_items, dev_items, test_items = toy_items(128, seed=1), toy_items(48, seed=2), toy_items(40, seed=3)
    loop = dataclasses.replace(LOOP, epochs=3, checkpoint_every=3)  # 8 batches an epoch
    reference = frozen_fusion()
    train(reference, train_items, dev_items, loop, tmp_path / "reference")

    with pytest.raises(Killed):  # while reading epoch 1's 6th batch
        train(frozen_fusion(), KilledItems(train_items, 128 + 5 * 16 + 3), dev_items, loop, tmp_path / "killed")
    (checkpoint,) = complete_checkpoints(tmp_path / "killed" / "checkpoints")
    assert checkpoint.name == "step-00000012-batch-000004-epoch-0001"
    saved = load_file(checkpoint / "model.safetensors")
    assert not any(name.startswith("image_projection.") for name in saved)  # frozen: rebuilt, not saved
    assert {"pre_output.0.running_mean", "pre_output.0.running_var", "pre_output.0.num_batches_tracked"} <= set(saved)

    resumed = frozen_fusion()
    train(resumed, train_items, dev_items, loop, tmp_path / "killed")
    assert f"resuming from {checkpoint.name}" in capsys.readouterr().out
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    np.testing.assert_array_equal(predict(resumed, test_items)[1], predict(reference, test_items)[1])


def test_keep_checkpoints_leaves_the_newest_complete_ones(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "step-00000001-batch-000001-epoch-0000.partial").mkdir(parents=True)  # a killed run's half
    loop = dataclasses.replace(LOOP, epochs=2, checkpoint_every=3, keep_checkpoints=2)  # 4 batches an epoch
    train(toy_model(), toy_items(64, seed=1), toy_items(32, seed=2), loop, tmp_path)
    # written: step 3 (epoch 0, batch 3), 4 (epoch 1 starts), 6 (epoch 1, batch 2), 8 (epoch 2 starts)
    assert sorted(path.name for path in checkpoints.glob("step-*")) == [
        "step-00000006-batch-000002-epoch-0001", "step-00000008-batch-000000-epoch-0002"]


def test_a_checkpoint_missing_a_trainable_weight_fails_on_resume(tmp_path):
    loop = dataclasses.replace(LOOP, epochs=1)
    train_items, dev_items = toy_items(32, seed=1), toy_items(16, seed=2)
    train(toy_model(), train_items, dev_items, loop, tmp_path)
    (checkpoint,) = complete_checkpoints(tmp_path / "checkpoints")
    weights = load_file(checkpoint / "model.safetensors")
    del weights["classifier.weight"]
    save_file(weights, checkpoint / "model.safetensors")
    with pytest.raises(RuntimeError, match=r"missing trainable weights: \['classifier.weight'\]"):
        train(toy_model(), train_items, dev_items, loop, tmp_path)


class RecordingEngine:
    """Stands in for a DeepSpeed engine (deepspeed is not installed here) and records what Accelerate asks of it."""

    def __init__(self):
        self.calls = []

    def save_checkpoint(self, save_dir, tag, **kwargs):
        self.calls.append(("save", tag, kwargs))
        (Path(save_dir) / tag).mkdir()

    def load_checkpoint(self, load_dir, tag, **kwargs):
        self.calls.append(("load", tag, kwargs))


def test_deepspeed_checkpoints_leave_the_frozen_base_out(tmp_path, monkeypatch):
    """Under DeepSpeed, Accelerate's `save_state` hands the model's states to the engine, past our pre-hooks; the
    engine is asked to leave frozen parameters out (DeepSpeedEngine.save_checkpoint's
    `exclude_frozen_parameters`) and to load non-strictly what it wrote. Through Accelerate's real save_state and
    load_state, with the DeepSpeed branch taken."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from hatememes.training import LoopState, make_accelerator, resume, save_checkpoint

    accelerator = make_accelerator(LOOP)
    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType.DEEPSPEED))
    engine = RecordingEngine()
    accelerator._models.append(engine)
    save_checkpoint(accelerator, LoopState(step=3, batches_done=3), tmp_path, keep=1)
    (checkpoint,) = complete_checkpoints(tmp_path)
    assert resume(accelerator, tmp_path).step == 3
    assert engine.calls == [("save", "pytorch_model", {"exclude_frozen_parameters": True}),
                            ("load", "pytorch_model", {"load_module_strict": False})]
    assert not (checkpoint / "model.safetensors").exists()  # nothing written around the engine
