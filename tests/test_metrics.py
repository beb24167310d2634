"""metrics.py against references: sklearn's AUROC, DeLong from its definition (by hand and brute force),
a paired bootstrap, and brute-force threshold search."""

import json
import math

import numpy as np
import pytest
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score, roc_curve

from hatememes import metrics
from hatememes.metrics import Predictions


def correlated_scores(n_pos, n_neg, seed, signal_a=1.0, signal_b=0.7, shared=0.8):
    """Two models' scores that share a noise term (correlated, as two models on the same memes are)."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.ones(n_pos, int), np.zeros(n_neg, int)])
    common = rng.normal(size=len(labels))
    a = signal_a * labels + shared * common + rng.normal(size=len(labels))
    b = signal_b * labels + shared * common + rng.normal(size=len(labels))
    return labels, 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b))


def delong_brute_force(labels, scores):
    """DeLong (1988) from the definition: psi over all (positive, negative) pairs, O(m n)."""
    pos, neg = scores[:, labels == 1], scores[:, labels == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])  # (k, m, n)
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)  # (k, m), (k, n)
    return psi.mean(axis=(1, 2)), np.cov(v10) / pos.shape[1] + np.cov(v01) / neg.shape[1]


def test_auroc_equals_sklearn():
    labels, a, _ = correlated_scores(70, 130, seed=0)
    assert metrics.auroc(labels, a) == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    aurocs, _ = metrics.delong_covariance(labels, np.stack([a, np.round(a, 1)]))  # with ties
    assert aurocs == pytest.approx([roc_auc_score(labels, a), roc_auc_score(labels, np.round(a, 1))], abs=1e-12)


@pytest.mark.parametrize("shape", [(7,), (300,), (4, 50)])
def test_midranks_equal_scipy_rankdata_with_ties(shape):
    values = np.random.default_rng(len(shape)).integers(0, 6, size=shape).astype(float)  # many ties
    np.testing.assert_array_equal(metrics.midranks(values), rankdata(values, axis=-1))


@pytest.mark.parametrize("seed", range(4))
def test_auroc_and_roc_points_equal_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=80)
    probs = np.round(rng.random(80) * 0.5 + 0.3 * labels, 1)  # ties within and across the classes
    assert metrics.auroc(labels, probs) == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)
    fpr, tpr, _ = roc_curve(labels, probs)
    ours = metrics.roc_points(labels, probs)
    np.testing.assert_allclose(ours[0], fpr, atol=1e-12)
    np.testing.assert_allclose(ours[1], tpr, atol=1e-12)


def test_delong_hand_computed_example():
    # positives: A = 0.9, 0.6, 0.4   B = 0.8, 0.3, 0.55      negatives: A = 0.5, 0.2   B = 0.6, 0.1
    labels = np.array([1, 1, 1, 0, 0])
    a = np.array([0.9, 0.6, 0.4, 0.5, 0.2])
    b = np.array([0.8, 0.3, 0.55, 0.6, 0.1])
    # V10 (per positive: share of negatives it outscores): A = [1, 1, 1/2], B = [1, 1/2, 1/2]
    # V01 (per negative: share of positives above it):     A = [2/3, 1],   B = [1/3, 1]
    # AUROC A = 5/6, B = 2/3.  S10 = cov over positives = [[1/12, 1/24], [1/24, 1/12]]
    # S01 = cov over negatives = [[1/18, 1/9], [1/9, 2/9]];  S = S10 / 3 + S01 / 2
    s = np.array([[1 / 12, 1 / 24], [1 / 24, 1 / 12]]) / 3 + np.array([[1 / 18, 1 / 9], [1 / 9, 2 / 9]]) / 2
    aurocs, covariance = metrics.delong_covariance(labels, np.stack([a, b]))
    assert aurocs == pytest.approx([5 / 6, 2 / 3])
    assert covariance == pytest.approx(s)
    # Var(A - B) = 1/18 + 5/36 - 2 * 5/72 = 1/18, so z = (1/6) / sqrt(1/18) = 1/sqrt(2)
    result = metrics.delong_test(labels, a, b)
    assert result.z == pytest.approx(1 / math.sqrt(2))
    assert result.p_value == pytest.approx(2 * norm.sf(1 / math.sqrt(2)))
    assert result.p_value == pytest.approx(0.4795, abs=1e-4)


def test_fast_delong_equals_brute_force_with_ties():
    labels, a, b = correlated_scores(40, 60, seed=1)
    scores = np.stack([np.round(a, 1), np.round(b, 2), a])  # rounding makes many ties
    fast_aurocs, fast_cov = metrics.delong_covariance(labels, scores)
    slow_aurocs, slow_cov = delong_brute_force(labels, scores)
    assert fast_aurocs == pytest.approx(slow_aurocs, abs=1e-12)
    assert fast_cov == pytest.approx(slow_cov, abs=1e-12)


def paired_bootstrap_differences(labels, a, b, n_boot, seed):
    """AUROC(a) - AUROC(b) on the same stratified resample of memes, for each replicate."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    index = np.concatenate([rng.choice(pos, (n_boot, len(pos))), rng.choice(neg, (n_boot, len(neg)))], axis=1)

    def aurocs(scores):
        ranks = rankdata(scores[index], axis=1)
        m, n = len(pos), len(neg)
        return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)

    return aurocs(a) - aurocs(b)


@pytest.mark.parametrize("seed, signal_b", [(3, 0.7), (9, 0.7), (7, 0.4)])  # p ~ 0.04, 0.29, 1e-4
def test_delong_agrees_with_paired_bootstrap(seed, signal_b):
    labels, a, b = correlated_scores(250, 350, seed=seed, signal_b=signal_b)
    result = metrics.delong_test(labels, a, b)
    differences = paired_bootstrap_differences(labels, a, b, n_boot=1500, seed=seed)
    bootstrap_se = differences.std(ddof=1)
    assert result.std_error == pytest.approx(bootstrap_se, rel=0.08)  # bootstrap SE itself is ~2% noisy
    bootstrap_p = 2 * norm.sf(abs(result.difference) / bootstrap_se)
    assert result.p_value == pytest.approx(bootstrap_p, abs=0.005 + 0.2 * bootstrap_p)
    # the correlation between the two models is what DeLong uses: ignoring it overstates the variance
    _, cov = metrics.delong_covariance(labels, np.stack([a, b]))
    assert cov[0, 1] > 0 and result.std_error < math.sqrt(cov[0, 0] + cov[1, 1])


def test_delong_same_scores_and_undefined_cases():
    labels, a, _ = correlated_scores(20, 20, seed=4)
    same = metrics.delong_test(labels, a, a)
    assert same.z == 0.0 and same.p_value == 1.0
    assert metrics.delong_test(np.ones(10, int), a[:10], a[:10]) is None


def test_bootstrap_ci_contains_estimate_and_narrows_with_n():
    widths = []
    for n in (100, 2000):
        labels, a, _ = correlated_scores(n // 2, n // 2, seed=5)
        low, high = metrics.bootstrap_auroc_ci(labels, a, n_boot=500, seed=0)
        assert low <= metrics.auroc(labels, a) <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # sqrt(20) ~ 4.5 in theory
    labels, a, _ = correlated_scores(50, 50, seed=6)
    assert metrics.bootstrap_auroc_ci(labels, a, 200, seed=1) == metrics.bootstrap_auroc_ci(labels, a, 200, seed=1)


@pytest.mark.parametrize("n_pos, n_neg, decimals, chunk", [(20, 20, 1, 256), (37, 90, 2, 64), (300, 120, 6, 100)])
def test_bootstrap_replicates_are_the_resampled_values_aurocs(n_pos, n_neg, decimals, chunk):
    """The counting bootstrap gives, bound for bound, the percentiles of the AUROCs (midranks, checked against
    scikit-learn above) of the resampled values themselves, drawn with the same generator in the same order:
    ties within and across classes (scores rounded to `decimals`), m != n, and several chunks."""
    labels, a, _ = correlated_scores(n_pos, n_neg, seed=n_pos)
    probs = np.round(a, decimals)
    positives, negatives = probs[labels == 1], probs[labels == 0]
    rng, replicates = np.random.default_rng(11), []
    for start in range(0, 500, chunk):
        b = min(chunk, 500 - start)
        drawn = np.concatenate([positives[rng.integers(0, n_pos, (b, n_pos))],
                                negatives[rng.integers(0, n_neg, (b, n_neg))]], axis=1)
        replicate_labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
        replicates += [metrics.auroc(replicate_labels, row) for row in drawn]
    for level in (0.95, 0.5, 0.0):
        tail = (1 - level) / 2 * 100
        expected = tuple(np.percentile(replicates, [tail, 100 - tail]))
        assert metrics.bootstrap_auroc_ci(labels, probs, 500, seed=11, level=level, chunk=chunk) == expected


def test_single_class_and_empty_splits_are_not_defined():
    entry = metrics.split_metrics(np.zeros(30, int), np.linspace(0, 1, 30), threshold=0.5, n_boot=100, seed=0)
    assert entry["auroc"] is None and entry["auroc_ci95"] is None
    assert "single class" in entry["note"] and entry["accuracy"] == pytest.approx(15 / 30)
    assert entry["f1"] == 0.0  # 15 false positives, no true positive
    empty = metrics.split_metrics(np.zeros(0, int), np.zeros(0), threshold=0.5, n_boot=100, seed=0)
    assert empty["auroc"] is None and empty["n"] == 0 and "empty" in empty["note"]
    json.dumps(entry, allow_nan=False), json.dumps(empty, allow_nan=False)


@pytest.mark.parametrize("criterion", ["accuracy", "f1"])
def test_choose_threshold_matches_brute_force(criterion):
    labels, a, _ = correlated_scores(40, 80, seed=7)
    a = np.round(a, 2)
    threshold = metrics.choose_threshold(labels, a, criterion)

    def score(t):
        accuracy, f1 = metrics.accuracy_f1(labels, a, t)
        return accuracy if criterion == "accuracy" else (f1 or 0.0)

    best = max(score(t) for t in np.linspace(0, 1, 2001))
    assert score(threshold) == pytest.approx(best)
    predicted = (a >= threshold).astype(int)
    accuracy, f1 = metrics.accuracy_f1(labels, a, threshold)
    assert accuracy == pytest.approx((predicted == labels).mean())
    tp = ((predicted == 1) & (labels == 1)).sum()
    assert f1 == pytest.approx(2 * tp / (predicted.sum() + labels.sum()))


def test_calibration_bins_and_ece():
    rng = np.random.default_rng(8)
    probs = rng.uniform(size=20000)
    labels = (rng.uniform(size=20000) < probs).astype(int)  # calibrated by construction
    bins = metrics.calibration_bins(labels, probs, n_bins=10)
    assert sum(b["count"] for b in bins) == 20000
    assert metrics.expected_calibration_error(labels, probs) < 0.02
    overconfident = np.where(probs > 0.5, 1.0, 0.0) * 0.98 + 0.01
    assert metrics.expected_calibration_error(labels, overconfident) > 0.2


def make_split(seed, n=200, labelled=True):
    labels, a, _ = correlated_scores(n // 2, n - n // 2, seed=seed)
    ids = np.arange(n) + 1000 * seed
    return Predictions(ids, a, labels if labelled else np.full(n, -1))


def test_evaluate_predictions_applies_dev_threshold_everywhere(tmp_path):
    predictions = {"dev_seen": make_split(1), "test_seen": make_split(2), "test_unseen": make_split(3, labelled=False)}
    result = metrics.write_metrics(tmp_path / "clip_fusion", predictions, n_boot=200, seed=0)
    dev = predictions["dev_seen"]
    expected = metrics.choose_threshold(dev.labels, dev.probs, "accuracy")
    assert set(result) == {"dev_seen", "test_seen"}  # the unlabelled split has no metrics
    assert result["dev_seen"]["threshold"] == result["test_seen"]["threshold"] == expected
    assert result["test_seen"]["threshold_source"] == "dev_seen, max accuracy"
    written = json.loads((tmp_path / "clip_fusion" / "metrics.json").read_text())
    assert written["test_seen"]["auroc"] == pytest.approx(roc_auc_score(predictions["test_seen"].labels,
                                                                        predictions["test_seen"].probs))
    for key in ("auroc_ci95", "accuracy", "f1", "n", "accuracy_at_0.5", "f1_at_0.5", "ece"):
        assert key in written["test_seen"]
    roc = np.loadtxt(tmp_path / "clip_fusion" / "roc" / "test_seen.csv", delimiter=",", skiprows=1)
    assert tuple(roc[0]) == (0.0, 0.0) and tuple(roc[-1]) == (1.0, 1.0)
    assert not (tmp_path / "clip_fusion" / "roc" / "test_unseen.csv").exists()


def test_threshold_falls_back_to_half_without_labelled_dev():
    predictions = {"dev_seen": make_split(1, labelled=False), "test_seen": make_split(2)}
    result = metrics.evaluate_predictions(predictions, n_boot=50)
    assert result["test_seen"]["threshold"] == 0.5 and "0.5" in result["test_seen"]["threshold_source"]


def test_predictions_csv_roundtrip(tmp_path):
    original = Predictions(np.array([5, 7, 9]), np.array([0.1, 0.123456789, 0.9]), np.array([0, -1, 1]))
    metrics.write_predictions(tmp_path / "p.csv", original)
    assert (tmp_path / "p.csv").read_text().splitlines()[2] == "7,0.123456789,"
    loaded = metrics.read_predictions(tmp_path / "p.csv")
    assert np.array_equal(loaded.ids, original.ids) and np.array_equal(loaded.labels, original.labels)
    assert np.array_equal(loaded.probs, original.probs)
