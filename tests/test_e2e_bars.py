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
from e2e_bars import (  # noqa: E402
    AT_CHANCE,
    FINE_GRAINED,
    FINE_GRAINED_SPLIT,
    LABELLED_SPLITS,
    LEARNERS,
    check_bars,
    check_fine_grained_bars,
)

MEMES_PER_SPLIT = 200
MEMBERS = ["clip_fusion", "mmbt", "visualbert"]
LATE_FUSION = ["text_bert", "image_grid"]


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
    probs["late_fusion"] = {split: np.mean([probs[m][split] for m in LATE_FUSION], axis=0) for split in LABELLED_SPLITS}
    for model, model_probs in probs.items():
        write_model(tmp_path, model, model_probs, labels)
    for name, members in (("ensemble", MEMBERS), ("late_fusion", LATE_FUSION)):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "ensemble.json").write_text(json.dumps({"config": {"members": members}}))
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


def test_a_late_fusion_that_is_not_the_mean_of_its_members_is_reported(demo):
    replace_probs(demo, "late_fusion", lambda probs: probs * 0.9)  # still at chance, no longer the members' mean
    expected = "late_fusion test_unseen: 200 memes not scored with the mean of ['text_bert', 'image_grid']"
    assert expected in check_bars(demo)


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


def test_the_committed_demo_meets_every_fine_grained_bar(tmp_path):
    """World 0's committed eval/<model>/fine_grained.json meets the fine-grained bars; a dead head is reported."""
    import shutil

    from e2e_bars import check_committed_fine_grained_bars

    root = Path(__file__).parents[1]
    assert check_committed_fine_grained_bars(root) == []
    shutil.copytree(root / "eval", tmp_path / "eval")
    path = tmp_path / "eval" / "mmbt" / "fine_grained.json"
    result = json.loads(path.read_text())
    result["splits"][FINE_GRAINED_SPLIT]["per_label"]["attack"]["macro"] = 0.5
    path.write_text(json.dumps(result))
    assert check_committed_fine_grained_bars(tmp_path) == [
        f"mmbt fine-grained attack {FINE_GRAINED_SPLIT}: mean per-label AUROC 0.500 < {FINE_GRAINED['mmbt']:.3f}"]


# ----- the fine-grained bars


@pytest.fixture
def fine_demo(tmp_path: Path) -> Path:
    """data/memes/fine_grained/dev_unseen.jsonl and, for every model with fine-grained bars, predictions and a
    submission whose scores rank every label well: every fine-grained bar holds."""
    from hatememes.data.fine_grained import ATTACK_LABELS, HATE_LABELS, PC_LABELS, fine_labels_path
    from hatememes.shared_task import write_submission

    rng = np.random.default_rng(0)
    ids = np.arange(MEMES_PER_SPLIT) + 1
    labels = rng.permutation(ids % 2)
    records = []
    for meme_id, label in zip(ids, labels, strict=True):
        pc = PC_LABELS[1 + meme_id % 5] if label else "pc_empty"
        attack = ATTACK_LABELS[1 + meme_id % 7] if label else "attack_empty"
        records.append({"id": int(meme_id), "gold_hate": [HATE_LABELS[label]], "gold_pc": [pc],
                        "gold_attack": [attack]})
    path = fine_labels_path(tmp_path / "data" / "memes", FINE_GRAINED_SPLIT)
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    targets = np.array([[float(name in r["gold_pc"]) for name in PC_LABELS]
                        + [float(name in r["gold_attack"]) for name in ATTACK_LABELS] for r in records])
    for model in FINE_GRAINED:
        folder = tmp_path / "eval" / model / "predictions"
        probs = learnt_probs(labels, rng)
        write_predictions(folder / f"{FINE_GRAINED_SPLIT}.csv", Predictions(ids, probs, labels))
        write_submission(folder / "fine_grained" / f"{FINE_GRAINED_SPLIT}.jsonl", FINE_GRAINED_SPLIT, ids, probs,
                         1 / (1 + np.exp(-4 * (targets + rng.normal(0.0, 0.35, targets.shape) - 0.5))))
    return tmp_path


def test_every_fine_grained_bar_holds_on_the_synthetic_demo(fine_demo):
    assert check_fine_grained_bars(fine_demo) == []


@pytest.mark.parametrize("tampering", ["constant", "priors", "shuffled", "no heads"])
@pytest.mark.parametrize("model", FINE_GRAINED)
def test_fine_grained_heads_that_learnt_nothing_are_reported(fine_demo, model, tampering):
    from hatememes.shared_task import read_submission, write_submission

    path = fine_demo / "eval" / model / "predictions" / "fine_grained" / f"{FINE_GRAINED_SPLIT}.jsonl"
    if tampering == "no heads":
        path.unlink()
    else:
        submission = read_submission(path)
        fine = np.array([list(r["pred_pc"].values()) + list(r["pred_attack"].values()) for r in submission.values()])
        rng = np.random.default_rng(1)
        fine = {"constant": lambda: np.full_like(fine, 0.5), "shuffled": lambda: rng.permutation(fine),
                "priors": lambda: np.broadcast_to(fine.mean(0), fine.shape)}[tampering]()
        write_submission(path, FINE_GRAINED_SPLIT, list(submission),
                         [r["pred_hate"]["hateful"] for r in submission.values()], fine)
    problems = check_fine_grained_bars(fine_demo)
    assert problems and all(p.startswith(f"{model} fine-grained") for p in problems), problems
    if tampering != "no heads":  # each task's bar, the lower ones included, fails a dead head
        assert {p.split()[2] for p in problems} == {"pc", "attack"}, problems
