"""The Accelerate loop: it learns, keeps the best dev epoch, and resumes a killed run exactly."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))

from toy_training import LOOP, toy_items, toy_model  # noqa: E402

from hatememes.training import auroc_or_nan, predict, train  # noqa: E402


def test_clip_fusion_learns_a_pairwise_rule_and_keeps_the_best_epoch(tmp_path, learned):
    torch.manual_seed(learned.seed)
    model = toy_model()
    data_seed = 1 + 10 * learned.seed
    dev = toy_items(120, seed=data_seed + 1)
    loop = dataclasses.replace(LOOP, epochs=8)  # 4 epochs: 0.84-0.98 over seeds 0-4 (docs/learned-margins.md)
    result = train(model, toy_items(400, seed=data_seed), dev, loop, tmp_path)
    test = toy_items(200, seed=data_seed + 2)
    ids, probs = predict(model, test)
    assert ids.tolist() == test.ids
    learned.check("test AUROC", roc_auc_score(test.labels, probs), 0.9)
    assert result.best_auroc == max(h["dev_auroc"] for h in result.history)
    _, dev_probs = predict(model, dev)
    assert roc_auc_score(dev.labels, dev_probs) == pytest.approx(result.best_auroc)
    assert (tmp_path / "dvclive" / "metrics.json").is_file()


def run_toy(out: Path, slow: bool = False) -> subprocess.Popen:
    command = [sys.executable, str(HELPERS / "toy_training.py"), str(out)] + (["--slow"] if slow else [])
    env = {**os.environ, "PYTHONPATH": str(HELPERS)}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def mid_epoch_checkpoints(out: Path) -> list[str]:
    """Complete checkpoints taken inside epoch 1 (after some of its batches)."""
    return [p.name for p in (out / "checkpoints").glob("step-*-epoch-0001")
            if "batch-000000" not in p.name and (p / "loop_state.json").is_file()]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_predictions(tmp_path):
    reference = tmp_path / "reference"
    reference_run = run_toy(reference)
    reference_output = reference_run.communicate(timeout=300)[0].decode()
    assert reference_run.returncode == 0, reference_output[-2000:]
    interrupted = tmp_path / "interrupted"
    process = run_toy(interrupted, slow=True)
    deadline = time.time() + 240
    while time.time() < deadline and not mid_epoch_checkpoints(interrupted):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "probs.npy").exists(), "the run finished before it could be killed"
    assert mid_epoch_checkpoints(interrupted)
    resumed = run_toy(interrupted)
    output = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, output[-2000:]
    assert "resuming from step-" in output and "epoch-0001" in output  # it continued, it did not start over
    np.testing.assert_array_equal(np.load(interrupted / "probs.npy"), np.load(reference / "probs.npy"))


def test_a_rewritten_base_model_discards_the_checkpoints_of_the_old_one(tmp_path, monkeypatch):
    """The base folder keeps its name when the stage upstream rebuilds it: its contents decide."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))
    import train as stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "model.safetensors").write_bytes(b"old weights")
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "train.safetensors").write_bytes(b"features")
    section = {"model": {"base": "base", "prompt": "USER: <image>\n" + "x" * 5000}, "loop": {"epochs": 2}}
    checkpoints = tmp_path / "checkpoints"

    def fingerprint() -> dict:
        return {"params": section, "inputs": stage.input_digests(section, [tmp_path / "features"])}

    assert sorted(fingerprint()["inputs"]) == [str(tmp_path / "features" / "train.safetensors"),
                                               str(Path("base") / "model.safetensors")]
    stage.discard_stale_checkpoints(checkpoints, fingerprint())
    (checkpoints / "step-00000002").mkdir()
    stage.discard_stale_checkpoints(checkpoints, fingerprint())  # same inputs: resumable
    assert (checkpoints / "step-00000002").is_dir()
    (tmp_path / "base" / "model.safetensors").write_bytes(b"new weights")  # same size, same name
    stage.discard_stale_checkpoints(checkpoints, fingerprint())
    assert not (checkpoints / "step-00000002").exists()


def test_dev_auroc_equals_scikit_learn_with_ties_and_unlabelled_rows():
    rng = np.random.default_rng(0)
    for size in (2, 7, 50, 400):
        labels = rng.integers(-1, 2, size)  # -1: unlabelled
        labels[:2] = (0, 1)
        probs = rng.integers(0, 5, size) / 4 if size > 7 else rng.random(size)  # ties in the larger ones
        known = labels >= 0
        assert auroc_or_nan(probs, labels) == pytest.approx(roc_auc_score(labels[known], probs[known]), abs=1e-12)
    assert np.isnan(auroc_or_nan(np.array([0.2, 0.4]), np.array([1, 1])))
