"""The WOAH 2021 shared task on fine-grained hateful memes (facebookresearch/fine_grained_hateful_memes; Mathias
et al. 2021, "Findings of the WOAH 5 Shared Task on Fine Grained Hateful Memes Detection"): its submission
format, its scores, and each model's hate AUROC per protected category.

    write_submission(path, "dev_seen", ids, hate_probs, fine_probs)   # fine_probs (N, NUM_FINE)
    submission = read_submission(path)                                # {id: record}, validated
    result = evaluate_fine_grained(Path("data/memes"), Path("eval/clip_fusion/predictions"))

A submission is one JSON record a line, as the task's README has it:

    {"id": 83745, "set_name": "dev_seen", "pred_hate": {"not_hateful": 0.99, "hateful": 0.01},
     "pred_pc": {<every PC_LABELS entry>: score}, "pred_attack": {<every ATTACK_LABELS entry>: score}}

`score_task` scores one task (hate, pc or attack) as the task's scripts/scorer.py does, quirks kept:
- the classes are the unique FIRST gold labels of the scored memes, so a label that is never a meme's first
  label is left out, of the scores and of the gold (MultiLabelBinarizer drops labels outside its classes);
- roc_auc is the micro average: every (meme, class) pair one sample of one binary AUROC. Hate is scored the same
  way over the two columns not_hateful = 1 - p and hateful = p, which is not the benchmark's binary AUROC of p;
- f1_micro thresholds each score at > 0.5.
The micro AUROC is a binary AUROC of the flattened pairs, so `hatememes.metrics.auroc` computes it: numpy only,
no scikit-learn (tests/test_shared_task.py checks every number against a transcription of the scorer).

`evaluate_fine_grained` scores a model's predictions on the annotated dev splits (the test splits have no
fine-grained labels): hate from predictions/<split>.csv, pc and attack from the submission files of a model with
fine-grained heads (predictions/fine_grained/<split>.jsonl), and per protected category the hate AUROC of the
category's hateful memes against every benign meme.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hatememes.data.fine_grained import (
    ATTACK_LABELS,
    FOLDER,
    HATE_LABELS,
    NUM_FINE,
    PC_LABELS,
    FineLabels,
    read_fine_labels,
)
from hatememes.evaluation import read_predictions_folder
from hatememes.files import write_text
from hatememes.metrics import auroc, undefined_reason

SPLITS = ("dev_seen", "dev_unseen")  # the annotated splits a model is scored on (train fitted it)
CATEGORIES = PC_LABELS[1:]  # the protected categories, without pc_empty
PREDICTED = {"pred_hate": HATE_LABELS, "pred_pc": PC_LABELS, "pred_attack": ATTACK_LABELS}  # submission fields
THRESHOLD = 0.5  # the scorer's: a class is predicted where its score is > 0.5
HATE_TOLERANCE = 1e-9  # how far a submission's P(hateful) may be from the model's predictions/<split>.csv


# ----- the scorer


def score_task(gold: Sequence[Sequence[str]], scores: Sequence[Mapping[str, float]]) -> dict:
    """One task as scripts/scorer.py scores it: {"roc_auc", "f1_micro", "n", "classes"}, `classes` the unique
    first gold labels in order of appearance; roc_auc None and a "note" where it is not defined.

    `gold`: each meme's gold labels; `scores`: each meme's {label: score}, holding at least every class."""
    if len(gold) != len(scores):
        raise ValueError(f"{len(gold)} memes' gold labels but {len(scores)} memes' scores")
    if not gold:
        return {"roc_auc": None, "f1_micro": None, "n": 0, "classes": [], "note": "no memes to score"}
    for k, labels in enumerate(gold):
        if not labels:
            raise ValueError(f"meme {k}: no gold label (the scorer needs a first one)")
    classes = list(dict.fromkeys(labels[0] for labels in gold))
    targets = np.array([[name in labels for name in classes] for labels in gold], dtype=np.int64)  # (N, C)
    matrix = np.array([class_scores(meme_scores, classes, k) for k, meme_scores in enumerate(scores)])  # (N, C)
    result = {"roc_auc": auroc(targets.ravel(), matrix.ravel()),  # micro: every (meme, class) pair one sample
              "f1_micro": f1_micro(targets, matrix > THRESHOLD), "n": len(gold), "classes": classes}
    if result["roc_auc"] is None:
        result["note"] = f"micro AUROC over {classes}: {undefined_reason(targets.ravel())}"
    return result


def class_scores(meme_scores: Mapping[str, float], classes: list[str], k: int) -> list[float]:
    missing = [name for name in classes if name not in meme_scores]
    if missing:
        raise ValueError(f"meme {k}: no score for {missing[0]!r} (its scores: {sorted(meme_scores)})")
    return [float(meme_scores[name]) for name in classes]


def f1_micro(targets: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of every (meme, class) pair pooled: 2 TP / (2 TP + FP + FN); 0 where nothing is true or predicted."""
    true_positives = int((targets.astype(bool) & predicted).sum())
    pooled = int(targets.sum()) + int(predicted.sum())  # 2 TP + FP + FN
    return 2 * true_positives / pooled if pooled else 0.0


# ----- submission files


def write_submission(path: Path, split: str, ids: Sequence[int], hate_probs: Sequence[float],
                     fine_probs: np.ndarray) -> None:
    """A split's submission: `hate_probs` (N,) the model's P(hateful), `fine_probs` (N, NUM_FINE) its
    fine-grained heads' probabilities, PC_LABELS columns then ATTACK_LABELS columns. Written atomically."""
    fine_probs = np.asarray(fine_probs, dtype=np.float64)
    if fine_probs.shape != (len(ids), NUM_FINE) or len(hate_probs) != len(ids):
        raise ValueError(f"{path}: {len(ids)} ids, {len(hate_probs)} hate probabilities and fine-grained "
                         f"probabilities of shape {fine_probs.shape}; expected ({len(ids)}, {NUM_FINE})")
    lines = []
    for meme_id, p, row in zip(ids, hate_probs, fine_probs, strict=True):
        record = {"id": int(meme_id), "set_name": split,
                  "pred_hate": {"not_hateful": 1 - float(p), "hateful": float(p)}, **fine_scores(row)}
        lines.append(json.dumps(record) + "\n")
    write_text(path, "".join(lines))


def fine_scores(row: np.ndarray) -> dict[str, dict[str, float]]:
    """One meme's fine-grained probabilities (NUM_FINE,) as the submission's pred_pc and pred_attack."""
    values = np.asarray(row, dtype=np.float64).tolist()
    return {"pred_pc": dict(zip(PC_LABELS, values[:len(PC_LABELS)], strict=True)),
            "pred_attack": dict(zip(ATTACK_LABELS, values[len(PC_LABELS):], strict=True))}


def read_submission(path: Path) -> dict[int, dict]:
    """{id: record} of a submission file, in its order. Every record needs an integer id, met once, a set_name,
    and a score in [0, 1] for every label of pred_hate, pred_pc and pred_attack (and no other label); an error
    names the file, the line and what is wrong."""
    path = Path(path)
    records = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            record = parse_record(line, where)
            if record["id"] in records:
                raise ValueError(f"{where}: id {record['id']} again (each meme once)")
            records[record["id"]] = record
    return records


def parse_record(line: str, where: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not a JSON record ({error})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: not a JSON object")
    if type(record.get("id")) is not int:
        raise ValueError(f"{where}: id {record.get('id')!r} is not an integer")
    if not isinstance(record.get("set_name"), str):
        raise ValueError(f"{where}: no set_name")
    for field, labels in PREDICTED.items():
        check_scores(record.get(field), field, labels, where)
    return record


def check_scores(scores: object, field: str, labels: tuple[str, ...], where: str) -> None:
    if not isinstance(scores, dict):
        raise ValueError(f"{where}: {field} is not a {{label: score}} object")
    for label in labels:
        if label not in scores:
            raise ValueError(f"{where}: {field} has no score for {label!r}")
        value = scores[label]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"{where}: {field}[{label!r}] = {value!r}, not a number in [0, 1]")
    unknown = sorted(set(scores) - set(labels))
    if unknown:
        raise ValueError(f"{where}: {field} has unknown labels {unknown} (valid: {', '.join(labels)})")


# ----- per protected category


def per_category_auroc(ids: Sequence[int], probs: Sequence[float], labels: dict[int, FineLabels]) -> dict:
    """{category: {"auroc", "n_hateful", "n_benign"}} for each protected category: the hate AUROC of P(hateful)
    on the category's hateful memes against every benign meme (a meme attacking two categories counts in both),
    over the memes of `ids` that `labels` annotates; auroc None with a "note" where it is not defined."""
    scored = [(meme_id, float(p)) for meme_id, p in zip(ids, probs, strict=True) if meme_id in labels]
    hateful = [(labels[meme_id], p) for meme_id, p in scored if "hateful" in labels[meme_id].gold_hate]
    benign = np.array([p for meme_id, p in scored if "hateful" not in labels[meme_id].gold_hate])
    result = {}
    for category in CATEGORIES:
        attacked = np.array([p for fine, p in hateful if category in fine.gold_pc])
        targets = np.r_[np.ones(len(attacked), dtype=np.int64), np.zeros(len(benign), dtype=np.int64)]
        entry = {"auroc": auroc(targets, np.r_[attacked, benign]), "n_hateful": len(attacked), "n_benign": len(benign)}
        if entry["auroc"] is None:
            entry["note"] = (f"no hateful meme attacks {category}" if not len(attacked)
                             else undefined_reason(targets))
        result[category] = entry
    return result


def weakest(per_category: dict) -> list[str]:
    """The categories with an AUROC, lowest first (ties by name)."""
    defined = [c for c, entry in per_category.items() if entry["auroc"] is not None]
    return sorted(defined, key=lambda c: (per_category[c]["auroc"], c))


# ----- a model's predictions on the annotated splits


def evaluate_fine_grained(memes_dir: Path, predictions_dir: Path) -> dict:
    """{"annotations", "note", "heads", "splits": {split: {"shared_task", "per_category", "weakest"}}} of one
    model on the annotated dev splits (`SPLITS`); "splits" is empty where data/memes has no fine-grained labels.
    `heads`: the model wrote fine-grained submissions (predictions_dir/fine_grained/), so pc and attack are
    scored; without them they are None. Every annotated meme must be in the model's files."""
    memes_dir, predictions_dir = Path(memes_dir), Path(predictions_dir)
    heads = any((predictions_dir / FOLDER).glob("*.jsonl"))
    annotated = {split: labels for split in SPLITS if (labels := read_fine_labels(memes_dir, split))}
    if not annotated:
        return {"annotations": False, "heads": heads, "splits": {},
                "note": (f"no fine-grained labels (WOAH 2021) in {memes_dir / FOLDER}: set params "
                         "`fetch.fine_grained` to the folder of the shared task's annotations to add them")}
    return {"annotations": True, "heads": heads,
            "note": (f"scored as the WOAH 2021 shared task's scripts/scorer.py on {', '.join(annotated)}; the test "
                     "splits have no fine-grained labels"),
            "splits": {split: evaluate_split(predictions_dir, split, labels, heads)
                       for split, labels in annotated.items()}}


def evaluate_split(predictions_dir: Path, split: str, labels: dict[int, FineLabels], heads: bool) -> dict:
    csv = predictions_dir / f"{split}.csv"
    predictions = read_predictions_folder(predictions_dir, [split])[split]
    probs = by_id(csv, predictions.ids.tolist(), predictions.probs.tolist(), labels)
    ids = list(labels)
    hate_scores = [{"not_hateful": 1 - probs[i], "hateful": probs[i]} for i in ids]
    shared_task = {"hate": score_task([labels[i].gold_hate for i in ids], hate_scores), "pc": None, "attack": None}
    per_label = None
    if heads:
        submission = read_split_submission(predictions_dir / FOLDER / f"{split}.jsonl", split, labels, probs)
        gold = {"pc": [labels[i].gold_pc for i in ids], "attack": [labels[i].gold_attack for i in ids]}
        scores = {task: [submission[i][f"pred_{task}"] for i in ids] for task in gold}
        shared_task.update({task: score_task(gold[task], scores[task]) for task in gold})
        per_label = {task: per_label_auroc(gold[task], scores[task], TASK_LABELS[task]) for task in gold}
    per_category = per_category_auroc(ids, [probs[i] for i in ids], labels)
    return {"shared_task": shared_task, "per_label": per_label, "per_category": per_category,
            "weakest": weakest(per_category)}


TASK_LABELS = {"pc": PC_LABELS, "attack": ATTACK_LABELS}


def per_label_auroc(gold: Sequence[Sequence[str]], scores: Sequence[Mapping[str, float]],
                    names: tuple[str, ...]) -> dict:
    """{"auroc": {label: AUROC of its column, None where one class}, "macro": their mean}: unlike the scorer's
    micro-AUROC, which pools the columns and so rewards each label's frequency alone (the empty labels are
    most memes'), a predictor of the class priors scores 0.5 here."""
    per_label = {}
    for name in names:
        targets = np.array([name in labels for labels in gold], dtype=np.int64)
        per_label[name] = auroc(targets, np.array([float(meme[name]) for meme in scores]))
    defined = [value for value in per_label.values() if value is not None]
    return {"auroc": per_label, "macro": float(np.mean(defined)) if defined else None}


def by_id(path: Path, ids: list[int], values: list, labels: dict[int, FineLabels]) -> dict:
    """{id: value} of a file's rows, which must hold every annotated meme, each once (the file and the first
    missing or doubled id are named)."""
    found = dict(zip(ids, values, strict=True))
    if len(found) != len(ids):
        doubled = next(i for k, i in enumerate(ids) if i in ids[:k])
        raise ValueError(f"{path}: meme {doubled} scored twice")
    missing = [meme_id for meme_id in labels if meme_id not in found]
    if missing:
        raise ValueError(f"{path}: no prediction for annotated meme {missing[0]} ({len(missing)} of the "
                         f"{len(labels)} annotated memes missing)")
    return found


def read_split_submission(path: Path, split: str, labels: dict[int, FineLabels], probs: dict[int, float]) -> dict:
    """A split's submission, checked against the annotations and the model's P(hateful) in <split>.csv."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found, while {path.parent} holds other splits' submissions")
    submission = read_submission(path)
    by_id(path, list(submission), list(submission.values()), labels)
    for meme_id in labels:
        record = submission[meme_id]
        if record["set_name"] != split:
            raise ValueError(f"{path}: meme {meme_id} has set_name {record['set_name']!r}, not {split!r}")
        if not math.isclose(record["pred_hate"]["hateful"], probs[meme_id], rel_tol=0, abs_tol=HATE_TOLERANCE):
            raise ValueError(f"{path}: meme {meme_id} has P(hateful) {record['pred_hate']['hateful']!r}, but "
                             f"{path.parent.parent / f'{split}.csv'} has {probs[meme_id]!r}")
    return submission
