"""The WOAH 2021 shared task's scores: ours against a transcription of its scripts/scorer.py on 20 memes in the
task's own format (a label that is never a first label, multi-label gold, a hateful meme with attack_empty, scores
at exactly 0.5 and tied), per-category AUROC against scikit-learn, and the submission file's round trip."""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer

from hatememes.data.fine_grained import ATTACK_LABELS, NUM_FINE, PC_LABELS, read_fine_labels
from hatememes.metrics import Predictions, write_predictions
from hatememes.shared_task import (
    evaluate_fine_grained,
    per_category_auroc,
    read_submission,
    score_task,
    write_submission,
)

TASKS = ("hate", "pc", "attack")
B = "not_hateful"
# (id, gold_pc, gold_attack) of the hateful memes; "disability", "slurs" and "inciting_violence" are never a
# first label (the scorer leaves them out), "sex" attacks no meme, 105 is hateful with attack_empty
HATEFUL = [
    (102, ["race"], ["dehumanizing"]),
    (103, ["religion", "race"], ["mocking", "slurs"]),
    (104, ["race", "disability"], ["contempt"]),
    (105, ["religion"], ["attack_empty"]),
    (107, ["nationality"], ["exclusion", "inciting_violence"]),
    (108, ["race"], ["inferiority", "mocking"]),
    (109, ["religion", "nationality"], ["dehumanizing", "inciting_violence"]),
    (112, ["nationality", "disability"], ["mocking"]),
    (115, ["religion"], ["contempt", "slurs"]),
]
BENIGN = [101, 106, 110, 111, 113, 114, 116, 117, 118, 119, 120]


def annotation(meme_id: int, split: str) -> dict:
    """A meme's record as the task's data/annotations/<split>.json has it."""
    hateful = {i: (pc, attack) for i, pc, attack in HATEFUL}
    pc, attack = hateful.get(meme_id, (["pc_empty"], ["attack_empty"]))
    return {"id": meme_id, "set_name": split, "img": f"img/{meme_id:05d}.png", "text": f"meme {meme_id}",
            "gold_hate": ["hateful" if meme_id in hateful else B], "gold_pc": pc, "gold_attack": attack,
            "pc": [pc, pc[:1]] if meme_id in hateful else "None",
            "attack": [attack, attack[:1]] if meme_id in hateful else "None"}


def model_outputs(ids: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(P(hateful) (N,), fine-grained probabilities (N, NUM_FINE)): noisy, a few exactly 0.5, a few tied."""
    rng = np.random.default_rng(seed)
    gold = np.array([i in {h[0] for h in HATEFUL} for i in ids], dtype=float)
    hate = 1 / (1 + np.exp(-(1.5 * (gold - 0.5) + rng.normal(size=len(ids)))))
    fine = rng.uniform(size=(len(ids), NUM_FINE))
    hate[[0, 3]] = 0.5
    hate[5] = hate[6]
    fine[:4, 0] = 0.5
    fine[4:8, 3] = fine[0, 3]
    return hate, fine


def scorer(gold_path: Path, pred_path: Path) -> dict:
    """scripts/scorer.py of facebookresearch/fine_grained_hateful_memes (5b26ed6) transcribed, one change:
    np.asarray where it has np.matrix, which the scikit-learn we run refuses. {task: (f1, roc_auc, classes)}."""

    def evaluate(scores, labels, CLASSES):  # noqa: N803  the scorer's name
        mlb = MultiLabelBinarizer()
        mlb.fit([CLASSES])
        mlb.classes_ = np.array(CLASSES)
        gold_label = mlb.transform(labels.tolist())
        pred_score = np.asarray(scores.tolist())
        pred_label = (pred_score > 0.5).astype(int)
        roc_auc = roc_auc_score(gold_label, pred_score, average="micro", multi_class="ovr")
        f1 = f1_score(gold_label, pred_label, average="micro")
        return f1, roc_auc

    with open(gold_path, encoding="utf-8") as gold_f:
        reference = pd.read_json(gold_f, lines=True)
    with open(pred_path, encoding="utf-8") as pred_f:
        predictions = pd.read_json(pred_f, lines=True)
    eval_dataset = predictions.merge(reference, on="id")
    result = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MultiLabelBinarizer: "unknown class(es) ... will be ignored"
        for task in TASKS:
            classes = eval_dataset[f"gold_{task}"].apply(lambda x: x[0]).unique()
            pred = eval_dataset[f"pred_{task}"].apply(lambda x: [x[k] for k in classes])  # noqa: B023
            gold = eval_dataset[f"gold_{task}"]
            f1, roc_auc = evaluate(pred, gold, classes)
            result[task] = (f1, roc_auc, list(classes))
    return result


@pytest.fixture
def world(tmp_path):
    """data/memes/fine_grained/ of dev_seen and dev_unseen (20 memes each, dev_unseen in another order), and a
    model's predictions/ with a submission per split."""
    memes, predictions = tmp_path / "memes", tmp_path / "predictions"
    ids = sorted([h[0] for h in HATEFUL] + BENIGN)
    for k, split in enumerate(("dev_seen", "dev_unseen")):
        order = ids if k == 0 else ids[::-1]
        lines = [json.dumps(annotation(i, split)) for i in order]
        (memes / "fine_grained").mkdir(parents=True, exist_ok=True)
        (memes / "fine_grained" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        hate, fine = model_outputs(order, seed=k)
        labels = np.array([int(i in {h[0] for h in HATEFUL}) for i in order])
        write_predictions(predictions / f"{split}.csv", Predictions(np.array(order), hate, labels))
        write_submission(predictions / "fine_grained" / f"{split}.jsonl", split, order, hate, fine)
    return memes, predictions


def test_the_fixture_has_the_scorer_s_quirks(world):
    memes, _ = world
    labels = read_fine_labels(memes, "dev_seen")
    firsts = {name for fine in labels.values() for name in (fine.gold_pc[0], fine.gold_attack[0])}
    assert {"disability", "slurs", "inciting_violence"} & firsts == set()
    assert any(len(fine.gold_pc) > 1 for fine in labels.values())
    assert any(fine.gold_hate == ("hateful",) and fine.gold_attack == ("attack_empty",) for fine in labels.values())


@pytest.mark.parametrize("split", ["dev_seen", "dev_unseen"])
def test_score_task_is_the_shared_task_s_scorer(world, split):
    memes, predictions = world
    expected = scorer(memes / "fine_grained" / f"{split}.jsonl", predictions / "fine_grained" / f"{split}.jsonl")
    gold = [json.loads(line) for line in (memes / "fine_grained" / f"{split}.jsonl").read_text().splitlines()]
    submission = read_submission(predictions / "fine_grained" / f"{split}.jsonl")
    for task in TASKS:
        ours = score_task([g[f"gold_{task}"] for g in gold], [submission[g["id"]][f"pred_{task}"] for g in gold])
        f1, roc_auc, classes = expected[task]
        assert ours["roc_auc"] == pytest.approx(roc_auc, abs=1e-12, rel=0), task
        assert ours["f1_micro"] == pytest.approx(f1, abs=1e-12, rel=0), task
        assert ours["classes"] == classes and ours["n"] == len(gold)


@pytest.mark.parametrize("split", ["dev_seen", "dev_unseen"])
def test_evaluate_fine_grained_scores_every_task_as_the_scorer(world, split):
    memes, predictions = world
    expected = scorer(memes / "fine_grained" / f"{split}.jsonl", predictions / "fine_grained" / f"{split}.jsonl")
    result = evaluate_fine_grained(memes, predictions)
    assert result["annotations"] and result["heads"] and list(result["splits"]) == ["dev_seen", "dev_unseen"]
    for task in TASKS:
        ours = result["splits"][split]["shared_task"][task]
        assert (ours["f1_micro"], ours["roc_auc"]) == pytest.approx(expected[task][:2], abs=1e-12, rel=0), task


def test_hate_is_the_scorer_s_micro_auroc_not_the_binary_one():
    gold = [["hateful"], [B], [B], ["hateful"]]
    probs = [0.3, 0.2, 0.05, 0.1]  # binary AUROC 0.75; the two columns' micro AUROC 0.625
    micro = roc_auc_score(np.array([[0, 1], [1, 0], [1, 0], [0, 1]]),
                          np.array([[1 - p, p] for p in probs]), average="micro")
    ours = score_task(gold, [{B: 1 - p, "hateful": p} for p in probs])
    assert ours["roc_auc"] == pytest.approx(micro, abs=1e-12) and ours["classes"] == ["hateful", B]
    assert ours["roc_auc"] == pytest.approx(0.625) and roc_auc_score([1, 0, 0, 1], probs) == pytest.approx(0.75)


def test_one_class_has_no_auroc_and_says_why():
    result = score_task([[B], [B]], [{B: 0.2}, {B: 0.7}])
    assert result["roc_auc"] is None and "not defined" in result["note"]
    assert result["f1_micro"] == pytest.approx(f1_score([1, 1], [0, 1]))


def test_without_models_with_heads_pc_and_attack_are_none(world):
    memes, predictions = world
    for path in (predictions / "fine_grained").glob("*.jsonl"):
        path.unlink()
    result = evaluate_fine_grained(memes, predictions)
    assert not result["heads"]
    for entry in result["splits"].values():
        assert entry["shared_task"]["pc"] is None and entry["shared_task"]["attack"] is None
        assert entry["shared_task"]["hate"]["roc_auc"] is not None


def test_per_category_auroc_is_each_category_s_hateful_memes_against_every_benign_one(world):
    memes, predictions = world
    labels = read_fine_labels(memes, "dev_unseen")
    frame = pd.read_csv(predictions / "dev_unseen.csv")
    result = per_category_auroc(frame["id"].tolist(), frame["proba"].tolist(), labels)
    assert list(result) == list(PC_LABELS[1:])
    for category, entry in result.items():
        hateful = np.array([category in labels[i].gold_pc and labels[i].gold_hate == ("hateful",) for i in frame["id"]])
        benign = np.array([labels[i].gold_hate == (B,) for i in frame["id"]])
        keep = hateful | benign
        assert (entry["n_hateful"], entry["n_benign"]) == (int(hateful.sum()), len(BENIGN))
        if category == "sex":
            assert entry["auroc"] is None and entry["note"] == "no hateful meme attacks sex"
            continue
        assert entry["auroc"] == pytest.approx(roc_auc_score(hateful[keep], frame["proba"][keep]), abs=1e-12)
    weakest = evaluate_fine_grained(memes, predictions)["splits"]["dev_unseen"]["weakest"]
    assert weakest == sorted((c for c in result if c != "sex"), key=lambda c: result[c]["auroc"])


def test_submission_round_trip(tmp_path):
    ids = [7, 3, 12]
    hate = np.array([0.25, 0.5, 1.0])
    fine = np.linspace(0, 1, 3 * NUM_FINE).reshape(3, NUM_FINE)
    write_submission(tmp_path / "dev_seen.jsonl", "dev_seen", ids, hate, fine)
    submission = read_submission(tmp_path / "dev_seen.jsonl")
    assert list(submission) == ids
    for k, meme_id in enumerate(ids):
        record = submission[meme_id]
        assert record["set_name"] == "dev_seen"
        assert record["pred_hate"] == {B: 1 - hate[k], "hateful": hate[k]}
        assert record["pred_pc"] == dict(zip(PC_LABELS, fine[k, :len(PC_LABELS)], strict=True))
        assert record["pred_attack"] == dict(zip(ATTACK_LABELS, fine[k, len(PC_LABELS):], strict=True))
    assert [p.name for p in tmp_path.iterdir()] == ["dev_seen.jsonl"]  # no temporary file left beside it


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["pred_pc"].pop("race"), "pred_pc has no score for 'race'"),
    (lambda r: r["pred_attack"].update(slurs="high"), "pred_attack['slurs'] = 'high', not a number in [0, 1]"),
    (lambda r: r["pred_hate"].update(hateful=1.5), "pred_hate['hateful'] = 1.5, not a number in [0, 1]"),
    (lambda r: r["pred_pc"].update(caste=0.1), "pred_pc has unknown labels ['caste']"),
    (lambda r: r.update(id=2), "id 2 again"),
])
def test_a_bad_submission_names_the_file_and_line(tmp_path, edit, message):
    path = tmp_path / "dev_seen.jsonl"
    write_submission(path, "dev_seen", [1, 2, 3], [0.1, 0.2, 0.3], np.full((3, NUM_FINE), 0.4))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    edit(records[2])
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with pytest.raises(ValueError, match="dev_seen.jsonl:3: ") as error:
        read_submission(path)
    assert message in str(error.value)


@pytest.mark.parametrize("file", ["dev_unseen.csv", "fine_grained/dev_unseen.jsonl"])
def test_predictions_must_cover_the_annotated_memes(world, file):
    memes, predictions = world
    path = predictions / file
    lines = path.read_text().splitlines()
    drop = 1 if file.endswith(".csv") else 0  # the csv's header stays
    path.write_text("\n".join(lines[:drop] + lines[drop + 1:]) + "\n")
    missing = 120  # dev_unseen lists the memes from the last id down
    with pytest.raises(ValueError, match=f"{path}: no prediction for annotated meme {missing} "):
        evaluate_fine_grained(memes, predictions)


def test_a_submission_must_agree_with_the_model_s_predictions(world):
    memes, predictions = world
    path = predictions / "fine_grained" / "dev_seen.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[4]["pred_hate"]["hateful"] = 1 - records[4]["pred_hate"]["hateful"]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with pytest.raises(ValueError, match=f"meme {records[4]['id']} has P\\(hateful\\)"):
        evaluate_fine_grained(memes, predictions)


def test_without_annotations_nothing_is_scored(tmp_path):
    predictions = tmp_path / "predictions"
    write_predictions(predictions / "dev_seen.csv", Predictions(np.array([1, 2]), np.array([0.2, 0.8]),
                                                                np.array([0, 1])))
    result = evaluate_fine_grained(tmp_path / "memes", predictions)
    assert result["annotations"] is False and result["splits"] == {} and result["heads"] is False
    assert "`fetch.fine_grained`" in result["note"]


def test_a_meme_scored_twice_is_named(world):
    memes, predictions = world
    path = predictions / "dev_seen.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[3]]) + "\n")
    with pytest.raises(ValueError, match=f"{path}: meme {lines[3].split(',')[0]} scored twice"):
        evaluate_fine_grained(memes, predictions)


def test_per_label_auroc_is_each_columns_auroc_and_the_priors_score_one_half():
    from hatememes.shared_task import per_label_auroc

    rng = np.random.default_rng(0)
    names = ("pc_empty", "race", "sex", "religion")
    gold = [[names[k % 3]] + (["religion"] if k % 5 == 0 else []) for k in range(60)]
    scores = [{name: float(rng.uniform()) + (0.5 if name in labels else 0.0) for name in names} for labels in gold]
    result = per_label_auroc(gold, scores, names)
    for name in names:
        targets = [int(name in labels) for labels in gold]
        assert result["auroc"][name] == pytest.approx(roc_auc_score(targets, [s[name] for s in scores]), abs=1e-12)
    assert result["macro"] == pytest.approx(np.mean(list(result["auroc"].values())), abs=1e-12)
    priors = {name: np.mean([name in labels for labels in gold]) for name in names}
    assert per_label_auroc(gold, [priors] * len(gold), names)["macro"] == 0.5  # the scorer's micro rewards them
    assert per_label_auroc(gold, [{"slurs": 0.1}] * len(gold), ("slurs",)) == {"auroc": {"slurs": None},
                                                                                "macro": None}  # one class
