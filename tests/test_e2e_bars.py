"""The e2e bar code (tests/helpers/e2e_bars.py) on a synthetic `eval/` tree, no pipeline run: it passes a
tree where every bar holds, and reports a model whose predictions are replaced by a constant, by a copy
shuffled against the labels, or (for a model that should stay at chance) by predictions that learnt."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hatememes.metrics import Predictions, read_predictions, write_predictions

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from e2e_bars import AT_CHANCE, LABELLED_SPLITS, LEARNERS, check_bars  # noqa: E402

MEMES_PER_SPLIT = 200
MEMBERS = ["clip_fusion", "mmbt", "visualbert"]


def learnt_probs(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Probabilities that rank the labels well, with noise (AUROC about 0.97)."""
    scores = labels + rng.normal(0.0, 0.35, len(labels))
    return 1 / (1 + np.exp(-4 * (scores - 0.5)))


def write_model(root: Path, model: str, probs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
    """eval/<model>/predictions/<split>.csv and a metrics.json consistent with them."""
    for split in LABELLED_SPLITS:
        ids = np.arange(len(labels[split])) + 1000 * LABELLED_SPLITS.index(split)
        write_predictions(root / "eval" / model / "predictions" / f"{split}.csv",
                          Predictions(ids, probs[split], labels[split]))
    metrics = {split: {"auroc": roc_auc_score(labels[split], probs[split])} for split in LABELLED_SPLITS}
    (root / "eval" / model / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A reproduced demo's eval/ and models/ensemble/ensemble.json, where every bar holds."""
    rng = np.random.default_rng(0)
    labels = {split: rng.permutation(np.arange(MEMES_PER_SPLIT) % 2) for split in LABELLED_SPLITS}
    probs = {}
    for model in LEARNERS:
        probs[model] = {split: learnt_probs(labels[split], rng) for split in LABELLED_SPLITS}
    for model in AT_CHANCE:
        probs[model] = {split: rng.uniform(size=MEMES_PER_SPLIT) for split in LABELLED_SPLITS}
    probs["ensemble"] = {split: np.mean([probs[m][split] for m in MEMBERS], axis=0) for split in LABELLED_SPLITS}
    for model, model_probs in probs.items():
        write_model(tmp_path, model, model_probs, labels)
    (tmp_path / "models" / "ensemble").mkdir(parents=True)
    (tmp_path / "models" / "ensemble" / "ensemble.json").write_text(json.dumps({"config": {"members": MEMBERS}}))
    return tmp_path


def replace_probs(root: Path, model: str, new_probs) -> None:
    """Rewrite eval/<model>/predictions/test_unseen.csv with new_probs(old probs); metrics.json goes stale."""
    path = root / "eval" / model / "predictions" / "test_unseen.csv"
    old = read_predictions(path)
    write_predictions(path, Predictions(old.ids, new_probs(old.probs), old.labels))


def test_every_bar_holds_on_the_synthetic_demo(demo):
    assert check_bars(demo) == []


@pytest.mark.parametrize("tampering", ["constant", "shuffled"])
@pytest.mark.parametrize("model", [*LEARNERS, "ensemble"])
def test_a_model_that_stops_learning_is_reported(demo, model, tampering):
    rng = np.random.default_rng(1)
    replace_probs(demo, model, lambda probs: np.full_like(probs, 0.5) if tampering == "constant"
                  else rng.permutation(probs))
    problems = check_bars(demo)
    assert any(p.startswith(f"{model} test_unseen: AUROC") for p in problems), problems  # below its bar
    assert any(p.startswith(f"{model} test_unseen: metrics.json says") for p in problems), problems  # stale
    assert all(p.startswith(f"{model} ") for p in problems), problems


@pytest.mark.parametrize("model", AT_CHANCE)
def test_a_model_that_should_stay_at_chance_but_learns_is_reported(demo, model):
    rng = np.random.default_rng(2)
    labels = read_predictions(demo / "eval" / model / "predictions" / "test_unseen.csv").labels
    replace_probs(demo, model, lambda probs: learnt_probs(labels, rng))
    assert any(p.startswith(f"{model} test_unseen: AUROC") and p.endswith("outside [0.000, 0.650]")
               for p in check_bars(demo))


def test_a_model_without_predictions_is_reported(demo):
    (demo / "eval" / "mmbt" / "predictions" / "test_unseen.csv").unlink()
    assert check_bars(demo) == [f"mmbt test_unseen: no predictions "
                                f"({demo / 'eval' / 'mmbt' / 'predictions' / 'test_unseen.csv'} missing)"]


def test_every_model_held_at_chance_has_a_positive_control():
    """A dead model passes an upper bound: each one gets a label its modality carries (tests/test_e2e.py)."""
    from positive_controls import CONTROL_BAR, CONTROLS

    assert set(CONTROLS) == set(AT_CHANCE) and CONTROL_BAR >= 0.9


def test_the_committed_demo_meets_every_bar(tmp_path):
    """World 0 as committed (eval/*/metrics.json, written with dvc.lock by a fresh clone's `dvc repro`) meets
    every bar; CI's end-to-end run reproduces another world each commit. A model whose committed AUROC fell
    to chance is reported."""
    import shutil

    from e2e_bars import check_committed_bars

    root = Path(__file__).parents[1]
    assert check_committed_bars(root) == []
    shutil.copytree(root / "eval", tmp_path / "eval")
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    metrics = tmp_path / "eval" / "rgcl" / "metrics.json"
    dead = {split: {**entry, "auroc": 0.5} if isinstance(entry, dict) else entry
            for split, entry in json.loads(metrics.read_text()).items()}
    metrics.write_text(json.dumps(dead))
    problems = check_committed_bars(tmp_path)
    assert "rgcl test_unseen: AUROC 0.500 outside [0.900, 1.000]" in problems
    (tmp_path / "eval" / "lmm_lora" / "metrics.json").unlink()
    assert any(problem.startswith("lmm_lora: no metrics.json") for problem in check_committed_bars(tmp_path))
