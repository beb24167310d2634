"""The ensemble: the mean is the mean; stacking learns from the fit split only and never scores a meme it saw."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from hatememes.metrics import Predictions, write_predictions
from hatememes.models.ensemble import Ensemble, EnsembleConfig, load_member_predictions, logits

MEMBERS = ("good", "weak", "flipped")


def member_predictions(ids, seed, members=MEMBERS):
    """Members of known quality on memes `ids`: a good one, a weak one, one whose scores are reversed."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, len(ids))
    signal = {"good": 2.0, "weak": 0.5, "flipped": -1.5}
    return {
        m: Predictions(ids, 1 / (1 + np.exp(-(signal.get(m, 0.0) * labels + rng.normal(size=len(ids))))), labels)
        for m in members
    }


def stacking(members=MEMBERS, **options):
    return Ensemble.build(EnsembleConfig(members=members, method="stacking", **options))


def test_mean_is_the_mean_of_member_probabilities():
    dev = member_predictions(np.arange(50), seed=0)
    ensemble = Ensemble.build(EnsembleConfig(members=("good", "weak")))
    ensemble.fit_members(dev)
    scored = ensemble.predict_members({m: Predictions(p.ids[::-1], p.probs[::-1], p.labels[::-1])
                                       for m, p in dev.items()})  # any row order: aligned by id
    assert np.allclose(scored.probs, (dev["good"].probs + dev["weak"].probs) / 2)
    assert np.array_equal(scored.ids, dev["good"].ids)


def test_stacking_never_scores_a_meme_with_a_model_that_saw_its_label():
    dev = member_predictions(np.arange(100, 300), seed=1)
    i = 17  # any dev meme
    before = stacking()
    before.fit_members(dev)
    flipped = {m: Predictions(p.ids, p.probs, np.where(np.arange(len(p.ids)) == i, 1 - p.labels, p.labels))
               for m, p in dev.items()}
    after = stacking()
    after.fit_members(flipped)
    # the meme's own label does not move its score ...
    assert before.predict_members(dev).probs[i] == pytest.approx(after.predict_members(dev).probs[i], abs=1e-12)
    # ... although a stacker fitted on all of dev (what a leak would use) does move: the test has power
    features = logits(np.stack([dev[m].probs for m in MEMBERS], axis=1))
    in_sample = [w[0] + features[i] @ w[1:] for w in (before.weights, after.weights)]
    assert abs(in_sample[0] - in_sample[1]) > 1e-3
    # and it equals a logistic regression fitted, independently, on the other folds
    fold = before.fold_of_id[int(dev["good"].ids[i])]
    others = np.array([before.fold_of_id[int(k)] != fold for k in dev["good"].ids])
    reference = LogisticRegression(C=1.0, max_iter=1000).fit(features[others], dev["good"].labels[others])
    assert before.predict_members(dev).probs[i] == pytest.approx(reference.predict_proba(features[[i]])[0, 1])


def test_noise_members_do_not_look_good_on_the_fit_split():
    noise = tuple(f"noise{k}" for k in range(50))
    dev = member_predictions(np.arange(120), seed=3, members=noise)  # members know nothing
    ensemble = stacking(members=noise, C=10.0)
    ensemble.fit_members(dev)
    labels = dev["noise0"].labels
    features = logits(np.stack([dev[m].probs for m in noise], axis=1))
    in_sample = roc_auc_score(labels, features @ ensemble.weights[1:])
    out_of_fold = roc_auc_score(labels, ensemble.predict_members(dev).probs)
    assert in_sample > 0.85  # what scoring the fit split in sample would report
    assert out_of_fold < 0.65  # what the ensemble reports: chance, as it should


def test_other_splits_use_the_whole_fit_split_and_overlapping_ids_stay_out_of_fold():
    dev_seen = member_predictions(np.arange(0, 200), seed=3)
    dev_unseen = member_predictions(np.arange(150, 350), seed=4)  # ids 150..199 are also in dev_seen
    ensemble = stacking()
    ensemble.fit_members(dev_seen)
    scored = ensemble.predict_members(dev_unseen).probs
    features = logits(np.stack([dev_unseen[m].probs for m in MEMBERS], axis=1))
    whole = 1 / (1 + np.exp(-(ensemble.weights[0] + features @ ensemble.weights[1:])))
    assert np.allclose(scored[50:], whole[50:])  # unseen memes: the whole-dev stacker
    assert not np.allclose(scored[:50], whole[:50])  # memes of dev_seen: out of fold


def test_stacking_learns_member_weights_that_the_mean_cannot(learned):
    data_seed = 5 + 2 * learned.seed
    dev = member_predictions(np.arange(400), seed=data_seed)
    test = member_predictions(np.arange(400, 800), seed=data_seed + 1)
    results = {}
    for method in ("mean", "stacking"):
        ensemble = Ensemble.build(EnsembleConfig(members=MEMBERS, method=method))
        ensemble.fit_members(dev)
        results[method] = roc_auc_score(test["good"].labels, ensemble.predict_members(test).probs)
    learned.check("stacking - mean AUROC", results["stacking"] - results["mean"], 0.05)
    learned.check("stacking - best member AUROC",
                  results["stacking"] - roc_auc_score(test["good"].labels, test["good"].probs), -0.01)


def test_protocol_path_file_path_and_save_load_agree(tmp_path):
    dev, test = member_predictions(np.arange(120), seed=7), member_predictions(np.arange(500, 560), seed=8)
    for member in MEMBERS:
        write_predictions(tmp_path / "eval" / member / "predictions" / "dev_seen.csv", dev[member])
        write_predictions(tmp_path / "eval" / member / "predictions" / "test_seen.csv", test[member])
    from_files = stacking()
    from_files.fit_members(load_member_predictions(tmp_path / "eval", MEMBERS, "dev_seen"))
    expected = from_files.predict_members(load_member_predictions(tmp_path / "eval", MEMBERS, "test_seen")).probs

    def items(split):
        return [{"id": int(i), "text": "", "label": int(y), "member_probs": {m: split[m].probs[k] for m in MEMBERS}}
                for k, (i, y) in enumerate(zip(split["good"].ids, split["good"].labels, strict=True))]

    protocol = stacking()
    protocol.fit(train=[], dev=items(dev))
    assert np.allclose(protocol.predict_proba(items(test)), expected)
    given_train = stacking()
    given_train.fit(train=items(test), dev=items(dev))  # the protocol's train split is ignored by design
    assert np.array_equal(given_train.predict_proba(items(test)), protocol.predict_proba(items(test)))
    protocol.save_pretrained(tmp_path / "models" / "ensemble")
    loaded = Ensemble.from_pretrained(tmp_path / "models" / "ensemble")
    assert loaded.config == protocol.config
    assert np.array_equal(loaded.predict_proba(items(dev)), protocol.predict_proba(items(dev)))


def test_clear_errors():
    dev = member_predictions(np.arange(40), seed=9)
    shifted = dict(dev, weak=Predictions(dev["weak"].ids + 1, dev["weak"].probs, dev["weak"].labels))
    with pytest.raises(ValueError, match="other memes"):
        stacking().fit_members(shifted)
    with pytest.raises(RuntimeError, match="not fitted"):
        stacking().predict_members(dev)
    with pytest.raises(FileNotFoundError, match="no predictions"):
        load_member_predictions("/nonexistent", MEMBERS, "dev_seen")
    unlabelled = {m: Predictions(p.ids, p.probs, np.full(len(p.ids), -1)) for m, p in dev.items()}
    with pytest.raises(ValueError, match="labels"):
        stacking().fit_members(unlabelled)
