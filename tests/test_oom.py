"""Out of memory: training starts over with half the micro-batch and twice the accumulation (the same effective
batch), scoring halves its batch; both end as a run that had used the smaller sizes from the start."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from toy_training import LOOP, toy_items  # noqa: E402

from hatememes.models import BuildContext  # noqa: E402
from hatememes.models.clip_fusion import ClipFusion, ClipFusionConfig  # noqa: E402
from hatememes.training import predict, train  # noqa: E402

KEY = "train.clip_fusion.loop"


class SmallDeviceFusion(ClipFusion):
    """ClipFusion on a device that holds `limit` memes a forward pass: a larger batch raises CUDA's
    out-of-memory error once `grace` forward passes have run (so that a run has written checkpoints first)."""

    limit = 10**9
    grace = 0
    passes = 0

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.passes += 1
        if len(batch["labels"]) > self.limit and self.passes > self.grace:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
        return super().forward(batch)


def fusion(limit: int = 10**9, grace: int = 0) -> SmallDeviceFusion:
    torch.manual_seed(0)  # the same initial weights for every model of a test
    model = SmallDeviceFusion.build(ClipFusionConfig(projection_dim=32, pre_output_dim=32,
                                                     drop_probs=(0.1, 0.0, 0.1)),
                                    BuildContext(feature_meta={"clip": {"dim": 16}}))
    model.limit, model.grace = limit, grace
    return model


def test_training_starts_over_with_half_the_micro_batch_and_ends_as_a_run_at_that_size(tmp_path, capsys):
    train_items, dev_items, test_items = toy_items(96, seed=1), toy_items(48, seed=2), toy_items(40, seed=3)
    loop = dataclasses.replace(LOOP, epochs=2, batch_size=16, grad_accum=1, eval_batch_size=16, checkpoint_every=2)
    forced = fusion(limit=4, grace=3)  # the 4th forward pass (step 4, after the step-2 checkpoint) runs out
    result = train(forced, train_items, dev_items, loop, tmp_path / "forced")
    out = capsys.readouterr().out
    assert (result.batch_size, result.grad_accum) == (4, 4)  # 16 x 1 -> 8 x 2 -> 4 x 4: the effective batch is 16
    assert (f"train: out of memory at {KEY}.batch_size = 16 (grad_accum 1); starting over with batch_size 8, "
            "grad_accum 2 (effective batch 16 unchanged); this attempt's checkpoints are discarded") in out
    assert f"{KEY}.batch_size = 8 (grad_accum 2); starting over with batch_size 4, grad_accum 4" in out
    assert f"scoring: out of memory at {KEY}.eval_batch_size = 16; retrying with 8" in out  # dev, while training

    unforced = fusion()
    reference = train(unforced, train_items, dev_items, dataclasses.replace(loop, batch_size=4, grad_accum=4,
                                                                            eval_batch_size=4),
                      tmp_path / "unforced")
    assert result.history == reference.history
    np.testing.assert_array_equal(predict(forced, test_items, batch_size=4)[1],
                                  predict(unforced, test_items, batch_size=4)[1])

    rerun = train(fusion(), train_items, dev_items, loop, tmp_path / "forced")  # the params still say 16 x 1
    assert "resuming with batch_size 4, grad_accum 4" in capsys.readouterr().out
    assert (rerun.batch_size, rerun.grad_accum, rerun.history) == (4, 4, result.history)


def test_training_gives_up_at_a_micro_batch_of_one_naming_the_param(tmp_path):
    loop = dataclasses.replace(LOOP, epochs=1, batch_size=2, eval_batch_size=2)
    with pytest.raises(MemoryError, match=f"out of memory at {KEY}.batch_size = 1 \\(grad_accum 2\\)"):
        train(fusion(limit=0), toy_items(8, seed=1), toy_items(8, seed=2), loop, tmp_path)


def test_other_runtime_errors_are_not_retried(tmp_path, capsys, monkeypatch):
    def broken(self, batch):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(SmallDeviceFusion, "forward", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        train(fusion(), toy_items(32, seed=1), toy_items(16, seed=2), dataclasses.replace(LOOP, epochs=1), tmp_path)
    assert "out of memory" not in capsys.readouterr().out


def test_scoring_halves_its_batch_and_gives_the_unforced_predictions(capsys):
    items = toy_items(40, seed=3)
    ids, probs = predict(fusion(limit=5).eval(), items, batch_size=16)
    assert capsys.readouterr().out.splitlines() == [
        f"scoring: out of memory at {KEY}.eval_batch_size = 16; retrying with 8",
        f"scoring: out of memory at {KEY}.eval_batch_size = 8; retrying with 4"]
    assert ids.tolist() == items.ids
    np.testing.assert_array_equal(probs, predict(fusion().eval(), items, batch_size=4)[1])
    unforced = predict(fusion().eval(), items, batch_size=16)[1]  # the same rows, up to the kernels' rounding
    np.testing.assert_allclose(probs, unforced, rtol=0, atol=1e-6)
    with pytest.raises(MemoryError, match=f"out of memory at {KEY}.eval_batch_size = 1"):
        predict(fusion(limit=0), items, batch_size=2)
