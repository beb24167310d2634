"""Evaluation science for Hateful Memes: AUROC with a bootstrap CI, DeLong's test, thresholds, calibration.

The benchmark's metric is AUROC (Kiela et al. 2020); accuracy is the second one. What this module adds:
- `bootstrap_auroc_ci`: a stratified, seeded percentile bootstrap (positives and negatives resampled
  separately, so every replicate keeps the split's class balance and has a defined AUROC).
- `delong_test`: DeLong, DeLong & Clarke-Pearson (1988) for two correlated AUROCs on the same memes,
  computed with the O(n log n) midrank algorithm of Sun & Xu (2014), IEEE SPL 21(11).
- `choose_threshold`: the decision threshold that maximises accuracy (the challenge's second metric;
  `criterion="f1"` is the alternative) on the dev split, then applied unchanged to every split.
  Accuracy and F1 at the fixed 0.5 are reported beside it, under their own keys.
- `evaluate_predictions` -> the `eval/<name>/metrics.json` dict; `write_metrics` writes it and the ROC csvs.
A split with one class (or no memes) gets `"auroc": null` and a `"note"`, never a made-up number.

numpy only: midranks, AUROC and the ROC curve are written here (tests/test_metrics.py checks them against
scipy's `rankdata` and scikit-learn's `roc_auc_score` / `roc_curve`), so the evaluate stage does not pay
the 1.6 s of importing scipy.stats and sklearn.metrics.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UNLABELLED = -1


@dataclass(frozen=True)
class Predictions:
    """One model's scores on one split: the `eval/<name>/predictions/<split>.csv` contract."""

    ids: np.ndarray  # (N,) int
    probs: np.ndarray  # (N,) float, P(hateful)
    labels: np.ndarray  # (N,) int, 0/1, or -1 when unknown

    @property
    def labelled(self) -> Predictions:
        keep = self.labels != UNLABELLED
        return Predictions(self.ids[keep], self.probs[keep], self.labels[keep])

    @property
    def has_labels(self) -> bool:
        return bool(np.any(self.labels != UNLABELLED))


def read_predictions(path: Path) -> Predictions:
    with Path(path).open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    ids = np.array([int(r["id"]) for r in rows], dtype=np.int64)
    probs = np.array([float(r["proba"]) for r in rows], dtype=np.float64)
    labels = np.array([int(float(r["label"])) if r["label"] not in ("", None) else UNLABELLED for r in rows])
    return Predictions(ids, probs, labels.astype(np.int64))


def write_predictions(path: Path, predictions: Predictions) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "proba", "label"])
        for id_, prob, label in zip(predictions.ids, predictions.probs, predictions.labels, strict=True):
            writer.writerow([int(id_), repr(float(prob)), "" if label == UNLABELLED else int(label)])


def undefined_reason(labels: np.ndarray) -> str | None:
    """Why AUROC is not defined on these labels, or None when it is."""
    if len(labels) == 0:
        return "empty split: no labelled memes"
    if len(np.unique(labels)) < 2:
        return f"single class (all {int(labels[0])}): AUROC not defined"
    return None


def midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties given the mean of their ranks (scipy's `rankdata`)."""
    values = np.asarray(values)
    order = np.argsort(values, axis=-1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=-1)
    n = values.shape[-1]
    position = np.broadcast_to(np.arange(n), values.shape)
    starts = np.ones(values.shape, dtype=bool)  # True where a run of equal values begins
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends = np.ones(values.shape, dtype=bool)  # True where a run ends
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)  # each position's run start
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, position, n), -1), axis=-1), -1)  # its end
    ranks = np.empty(values.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=-1)
    return ranks


def auroc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """The Mann-Whitney U statistic over m positives and n negatives, U / (m n), ties counted half."""
    if undefined_reason(labels):
        return None
    labels = np.asarray(labels)
    m = int((labels == 1).sum())
    n = len(labels) - m
    return float((midranks(np.asarray(probs, dtype=np.float64))[labels == 1].sum() - m * (m + 1) / 2) / (m * n))


def bootstrap_auroc_ci(
    labels: np.ndarray, probs: np.ndarray, n_boot: int, seed: int, level: float = 0.95, chunk: int = 256
) -> tuple[float, float] | None:
    """Percentile CI of AUROC from a stratified bootstrap, `chunk` replicates at once.

    A replicate draws m positives and n negatives with replacement; its AUROC is U / (m n), U counting for
    every drawn positive the drawn negatives below it plus half those equal to it. Every drawn value is one
    of the originals, so the originals are sorted once: each positive's place among the sorted negatives
    (`np.searchsorted`) and a replicate's cumulative count of negatives drawn at each sorted place give U in
    O(m + n) a replicate, with no sort: the same U as midranks of every replicate (both count in halves,
    exactly), 4x faster at 125 memes and 8x at 2125 (1000 replicates, measured)."""
    if undefined_reason(labels) or n_boot < 1:
        return None
    positives, negatives = probs[labels == 1], probs[labels == 0]
    m, n = len(positives), len(negatives)
    order = np.argsort(negatives, kind="stable")
    place = np.empty(n, dtype=np.int64)
    place[order] = np.arange(n)  # each negative's index among the sorted negatives
    ordered = negatives[order]
    below = np.searchsorted(ordered, positives, side="left")  # (m,) sorted negatives strictly below
    at_or_below = np.searchsorted(ordered, positives, side="right")  # (m,) ... below or equal
    rng = np.random.default_rng(seed)
    aurocs = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        drawn_positives = rng.integers(0, m, (b, m))  # the same draws, in the same order, as resampling
        drawn_negatives = rng.integers(0, n, (b, n))  # the values themselves would take
        rows = np.arange(b)[:, None]
        counts = np.bincount((place[drawn_negatives] + rows * n).ravel(), minlength=b * n).reshape(b, n)
        cumulative = np.zeros((b, n + 1), dtype=np.int64)
        np.cumsum(counts, axis=1, out=cumulative[:, 1:])  # (b, n + 1): drawn negatives among the first k sorted
        twice_u = (np.take_along_axis(cumulative, below[drawn_positives], axis=1)
                   + np.take_along_axis(cumulative, at_or_below[drawn_positives], axis=1)).sum(axis=1)  # (b,)
        aurocs.append(twice_u / (2 * m * n))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.concatenate(aurocs), [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class DeLongResult:
    auroc_a: float
    auroc_b: float
    difference: float  # auroc_a - auroc_b
    std_error: float  # of the difference
    z: float
    p_value: float  # two-sided


def delong_covariance(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs (k,) and their DeLong covariance (k, k) for k score vectors `scores` (k, N) on the same memes.

    Sun & Xu (2014): with midranks of each score among all memes (tz), among positives (tx) and among
    negatives (ty), the structural components are V10 = (tz - tx) / n on positives and
    V01 = 1 - (tz - ty) / m on negatives; S = cov(V10) / m + cov(V01) / n."""
    scores = np.atleast_2d(scores)
    order = np.concatenate([np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)])
    m = int((labels == 1).sum())
    n = len(order) - m
    ordered = scores[:, order]  # (k, m + n), positives first
    tx = midranks(ordered[:, :m])  # (k, m)
    ty = midranks(ordered[:, m:])  # (k, n)
    tz = midranks(ordered)  # (k, m + n)
    aurocs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n  # (k,)
    v10 = (tz[:, :m] - tx) / n  # (k, m)
    v01 = 1.0 - (tz[:, m:] - ty) / m  # (k, n)
    covariance = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n  # (k, k)
    return aurocs, covariance


def delong_test(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> DeLongResult | None:
    """Two-sided test of AUROC(a) == AUROC(b) for two models scored on the same memes; None if undefined."""
    reason = undefined_reason(labels)
    if reason or min((labels == 1).sum(), (labels == 0).sum()) < 2:
        return None
    aurocs, covariance = delong_covariance(labels, np.stack([probs_a, probs_b]))
    difference = float(aurocs[0] - aurocs[1])
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    if variance <= 1e-15:  # identical rankings: no evidence of a difference
        z, p_value = 0.0, 1.0
    else:
        z = difference / math.sqrt(variance)
        p_value = math.erfc(abs(z) / math.sqrt(2))  # 2 (1 - Phi(|z|))
    return DeLongResult(float(aurocs[0]), float(aurocs[1]), difference, math.sqrt(max(variance, 0.0)), z, p_value)


def confusion_counts(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """(tp, fp, fn, tn) for each threshold, predicting hateful when prob >= threshold."""
    positives = np.sort(probs[labels == 1])
    negatives = np.sort(probs[labels == 0])
    tp = len(positives) - np.searchsorted(positives, thresholds, side="left")
    fp = len(negatives) - np.searchsorted(negatives, thresholds, side="left")
    return tp, fp, len(positives) - tp, len(negatives) - fp


def accuracy_f1(labels: np.ndarray, probs: np.ndarray, threshold: float) -> tuple[float | None, float | None]:
    if len(labels) == 0:
        return None, None
    tp, fp, fn, tn = (int(c[0]) for c in confusion_counts(labels, probs, np.array([threshold])))
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None  # no positives, none predicted
    return (tp + tn) / len(labels), f1


def choose_threshold(labels: np.ndarray, probs: np.ndarray, criterion: str = "accuracy") -> float:
    """The threshold maximising `criterion` ("accuracy" or "f1"): candidates are 0, 1 and the midpoints
    between consecutive distinct scores; ties go to the candidate closest to 0.5."""
    if criterion not in ("accuracy", "f1"):
        raise ValueError(f"criterion must be 'accuracy' or 'f1', got {criterion!r}")
    distinct = np.unique(probs)
    candidates = np.concatenate([[0.0], (distinct[:-1] + distinct[1:]) / 2, [1.0]])
    tp, fp, fn, tn = confusion_counts(labels, probs, candidates)
    if criterion == "accuracy":
        score = (tp + tn) / len(labels)
    else:
        score = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(len(candidates)), where=(2 * tp + fp + fn) > 0)
    best = np.flatnonzero(score >= score.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def calibration_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Equal-width bins over [0, 1]: count, mean predicted P(hateful), observed fraction hateful."""
    index = np.clip((probs * n_bins).astype(int), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        inside = index == b
        count = int(inside.sum())
        bins.append({
            "low": b / n_bins, "high": (b + 1) / n_bins, "count": count,
            "mean_proba": float(probs[inside].mean()) if count else None,
            "fraction_hateful": float(labels[inside].mean()) if count else None,
        })
    return bins


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float | None:
    if len(labels) == 0:
        return None
    bins = calibration_bins(labels, probs, n_bins)
    gaps = [b["count"] * abs(b["fraction_hateful"] - b["mean_proba"]) for b in bins if b["count"]]
    return float(sum(gaps) / len(labels))


def split_metrics(
    labels: np.ndarray, probs: np.ndarray, threshold: float, n_boot: int, seed: int, n_bins: int = 10
) -> dict:
    """Every number the report shows for one labelled split; AUROC entries are null with a note if undefined."""
    labels, probs = np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    accuracy, f1 = accuracy_f1(labels, probs, threshold)
    accuracy_half, f1_half = accuracy_f1(labels, probs, 0.5)
    entry = {
        "n": int(len(labels)), "n_hateful": int((labels == 1).sum()),
        "auroc": auroc(labels, probs), "auroc_ci95": bootstrap_auroc_ci(labels, probs, n_boot, seed),
        "accuracy": accuracy, "f1": f1, "threshold": threshold,
        "accuracy_at_0.5": accuracy_half, "f1_at_0.5": f1_half,
        "ece": expected_calibration_error(labels, probs, n_bins),
        "brier": float(np.mean((probs - labels) ** 2)) if len(labels) else None,
    }
    if entry["auroc_ci95"] is not None:
        entry["auroc_ci95"] = list(entry["auroc_ci95"])
    reason = undefined_reason(labels)
    if reason:
        entry["note"] = reason
    return entry


def dev_threshold(predictions: Mapping[str, Predictions], dev_split: str, criterion: str) -> tuple[float, str]:
    """The threshold chosen on `dev_split`, or 0.5 with the reason when the dev split cannot choose one."""
    dev = predictions.get(dev_split)
    if dev is None:
        return 0.5, f"0.5 (no {dev_split} predictions)"
    dev = dev.labelled
    if undefined_reason(dev.labels):
        return 0.5, f"0.5 ({dev_split}: {undefined_reason(dev.labels)})"
    return choose_threshold(dev.labels, dev.probs, criterion), f"{dev_split}, max {criterion}"


def evaluate_predictions(
    predictions: Mapping[str, Predictions],
    dev_split: str = "dev_seen",
    criterion: str = "accuracy",
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The `eval/<name>/metrics.json` dict: {split: split_metrics + threshold_source} for labelled splits."""
    threshold, source = dev_threshold(predictions, dev_split, criterion)
    metrics = {}
    for split, split_predictions in predictions.items():
        if not split_predictions.has_labels:
            continue
        labelled = split_predictions.labelled
        entry = split_metrics(labelled.labels, labelled.probs, threshold, n_boot, seed)
        entry["threshold_source"] = source
        unlabelled = len(split_predictions.ids) - len(labelled.ids)
        if unlabelled:
            entry["n_unlabelled"] = unlabelled
        metrics[split] = entry
    return metrics


def roc_points(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) from (0, 0) through every distinct score, highest first, keeping only the corners of the
    curve (scikit-learn's `roc_curve` with `drop_intermediate=True`)."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    order = np.argsort(probs, kind="mergesort")[::-1]
    scores, hits = probs[order], (labels[order] == 1)
    last_of_score = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # where each distinct score ends
    tps = np.cumsum(hits)[last_of_score]
    fps = 1 + last_of_score - tps
    if len(fps) > 2:  # drop the points on a straight segment between their neighbours
        corners = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps = fps[corners], tps[corners]
    fps, tps = np.r_[0, fps], np.r_[0, tps]
    return fps / fps[-1], tps / tps[-1]


def write_roc_csv(path: Path, labels: np.ndarray, probs: np.ndarray) -> None:
    fpr, tpr = roc_points(labels, probs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["fpr,tpr"] + [f"{f:.6g},{t:.6g}" for f, t in zip(fpr, tpr, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_metrics(model_eval_dir: Path, predictions: Mapping[str, Predictions], **options) -> dict:
    """Write `metrics.json` and `roc/<split>.csv` (splits where AUROC is defined) into `eval/<name>/`.

    `options` go to `evaluate_predictions` (dev_split, criterion, n_boot, seed)."""
    model_eval_dir = Path(model_eval_dir)
    metrics = evaluate_predictions(predictions, **options)
    model_eval_dir.mkdir(parents=True, exist_ok=True)
    (model_eval_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    for split, entry in metrics.items():
        if entry["auroc"] is not None:
            labelled = predictions[split].labelled
            write_roc_csv(model_eval_dir / "roc" / f"{split}.csv", labelled.labels, labelled.probs)
    return metrics
