"""A model trained from more seeds (`train.<model>.loop.seeds`): each extra seed's run is exactly the model
trained with that `loop.seed`, its predictions sit beside the model's, and the evaluate stage summarises the
runs (AUROC per run, mean, sample sd, the seed-averaged predictions' AUROC and CI), checked against
scikit-learn and numpy. On a fresh copy with the cheap clip_fusion setup, through `dvc repro`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from repo_copy import cheap_copy, run  # noqa: E402

pytestmark = pytest.mark.slow
MODEL = "clip_fusion"
CHEAP = ["fetch.synthetic.scale=0.02", "fetch.synthetic.pretrain_pairs=400", "pretrain.epochs=1",
         "pretrain.probe_pairs=100", "pretrain_llava.enabled=false", "evaluate.n_boot=200",
         f"train.{MODEL}.loop.epochs=3", f"train.{MODEL}.model.projection_dim=32",
         f"train.{MODEL}.model.pre_output_dim=32", f"train.{MODEL}.loop.seeds=[3]"]


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    repository = cheap_copy(tmp_path_factory.mktemp("seeds") / "hatememes", MODEL, CHEAP, "the cheap setup, two seeds")
    run(["dvc", "repro"], repository, timeout=1800)
    return repository


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    return np.array([float(r[1]) for r in rows]), np.array([int(r[2]) if r[2] else -1 for r in rows])


def test_a_seed_s_run_is_the_model_trained_with_that_seed(repository, tmp_path):
    seeds = repository / "eval" / MODEL / "predictions" / "seeds"
    assert sorted(p.name for p in seeds.iterdir()) == ["3"]
    run([sys.executable, "pipelines/train.py", MODEL, "--out", str(tmp_path / "model"), "--predictions",
         str(tmp_path / "predictions"), "--set", f"train.{MODEL}.loop.seed=3", "--set", f"train.{MODEL}.loop.seeds=[]"],
        repository)
    for split in ("train", "dev_seen", "test_unseen"):
        assert (seeds / "3" / f"{split}.csv").read_bytes() == (tmp_path / "predictions" / f"{split}.csv").read_bytes()
        main, _ = read_csv(repository / "eval" / MODEL / "predictions" / f"{split}.csv")
        other, _ = read_csv(seeds / "3" / f"{split}.csv")
        assert not np.array_equal(main, other)  # another seed: other initial weights and batches
    assert not (repository / "models" / MODEL / "seeds" / "3" / "model.json").exists()  # predictions, no model


def test_metrics_summarise_the_seeds(repository):
    metrics = json.loads((repository / "eval" / MODEL / "metrics.json").read_text())
    folder = repository / "eval" / MODEL / "predictions"
    for split in ("dev_seen", "dev_unseen", "test_unseen"):
        main, labels = read_csv(folder / f"{split}.csv")
        other, _ = read_csv(folder / "seeds" / "3" / f"{split}.csv")
        known = labels >= 0
        expected = [roc_auc_score(labels[known], p[known]) for p in (main, other)]
        summary = metrics[split]["seeds"]
        assert summary["seeds"] == ["model", "3"] and summary["runs"] == 2
        assert summary["auroc"] == pytest.approx(expected, abs=1e-12)
        assert summary["mean"] == pytest.approx(np.mean(expected)) and summary["sd"] == pytest.approx(
            np.std(expected, ddof=1))
        averaged = roc_auc_score(labels[known], ((main + other) / 2)[known])
        assert summary["averaged"]["auroc"] == pytest.approx(averaged, abs=1e-12)
        low, high = summary["averaged"]["ci"]
        assert low <= averaged <= high
        assert metrics[split]["auroc"] == pytest.approx(expected[0], abs=1e-12)  # the model's own stays as it was


def test_a_seed_given_twice_or_equal_to_the_model_s_is_refused(repository, tmp_path):
    result = run([sys.executable, "pipelines/train.py", MODEL, "--out", str(tmp_path / "m"), "--predictions",
                  str(tmp_path / "p"), "--set", f"train.{MODEL}.loop.seeds=[0, 3]"], repository, check=False)
    assert result.returncode != 0
    assert f"train.{MODEL}.loop.seeds = [0, 3]: each seed once, and not loop.seed (0)" in result.stdout + result.stderr


def test_a_numpy_course_network_takes_more_seeds_as_its_model_section_says(repository, tmp_path):
    """course_mlp draws its initial weights and batches from `model.seed`: `model.seeds` trains it again from each,
    and a seed's run is exactly the network trained with that `model.seed`."""
    train = [sys.executable, "pipelines/train.py", "course_mlp", "--set", "train.course_mlp.model.epochs=2"]
    run([*train, "--out", str(tmp_path / "m"), "--predictions", str(tmp_path / "p"),
         "--set", "train.course_mlp.model.seeds=[3]"], repository)
    run([*train, "--out", str(tmp_path / "m3"), "--predictions", str(tmp_path / "p3"),
         "--set", "train.course_mlp.model.seed=3"], repository)
    for split in ("train", "test_unseen"):
        seeded = (tmp_path / "p" / "seeds" / "3" / f"{split}.csv").read_bytes()
        assert seeded == (tmp_path / "p3" / f"{split}.csv").read_bytes()
        assert seeded != (tmp_path / "p" / f"{split}.csv").read_bytes()
    result = run([*train, "--out", str(tmp_path / "x"), "--predictions", str(tmp_path / "px"),
                  "--set", "train.course_mlp.model.seeds=[0]"], repository, check=False)
    assert "train.course_mlp.model.seeds = [0]: each seed once, and not model.seed (0)" in result.stdout + result.stderr
