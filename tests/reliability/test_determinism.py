"""Same seed, same bytes: training clip_fusion and evaluating it twice on CPU gives byte-identical
predictions and weights; another `train.clip_fusion.loop.seed` gives other ones.

(The subprocess runs in test_stage_runs.py check the same across processes: every rerun there is compared
byte for byte with a separate reference process.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from stage_runs import (
    evaluate_args,
    evaluate_main,
    fetched,
    predictions_of,
    train_args,
    train_main,
    tree_bytes,
    write_clip_features,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("determinism")
    memes = fetched(root)
    return memes, write_clip_features(memes, root / "features" / "clip").parent


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_and_evaluate(data: tuple[Path, Path], out: Path, *extra: str) -> dict[str, bytes]:
    memes, features = data
    assert train_main(train_args(memes, features, out / "model", *extra)) == 0
    assert evaluate_main(evaluate_args(memes, out / "model", out / "eval")) == 0
    weights = (out / "model" / "model.safetensors").read_bytes()
    return {**tree_bytes(predictions_of(out / "model")), "model.safetensors": weights}


@pytest.fixture(scope="module")
def seed_0(data, tmp_path_factory) -> dict[str, bytes]:
    return train_and_evaluate(data, tmp_path_factory.mktemp("seed0"))


def test_same_seed_gives_byte_identical_predictions_and_weights(data, seed_0, tmp_path):
    torch.manual_seed(1234)  # the global RNG state before the run must not matter
    again = train_and_evaluate(data, tmp_path)
    splits = ["dev_seen", "dev_unseen", "test_seen", "test_unseen", "train"]
    assert sorted(again) == sorted([f"{split}.csv" for split in splits] + ["model.safetensors"]
                                   + [f"fine_grained/{split}.jsonl" for split in splits])  # the demo's heads
    assert again == seed_0
    probs = [line.split(",")[1] for line in again["test_unseen.csv"].decode().splitlines()[1:]]
    assert len(set(probs)) == len(probs)  # real, distinct scores: not a constant that would be equal anyway


def test_another_seed_gives_other_predictions(data, seed_0, tmp_path):
    other = train_and_evaluate(data, tmp_path, "--set", "train.clip_fusion.loop.seed=1")
    assert other["model.safetensors"] != seed_0["model.safetensors"]
    for split in ("dev_seen.csv", "test_unseen.csv"):
        assert other[split] != seed_0[split]
