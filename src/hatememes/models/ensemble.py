"""The `ensemble` model: the mean, or a logistic stack, of other models' P(hateful) on the same memes.

Stacking follows Wolpert (1992), "Stacked generalization": a logistic regression over the members'
logits, fitted on held-out predictions. Here the held-out data is the dev split (`fit_split`, dev_seen by
default) and ONLY the dev split: the members were trained on `train`, so their train probabilities are
overfit and would teach the stacker to trust whichever member memorised most.

The stacker never scores a meme it was fitted on. Asked to score a meme id from its fit split (dev_seen
itself, or the dev_unseen memes that are also in dev_seen), it uses cross-fitting: the fit split's ids
are dealt into `n_folds` folds (by a seeded permutation of the ids, independent of labels) and such a
meme is scored by the stacker fitted on the other folds. Every other meme is scored by the stacker
fitted on the whole fit split. So dev metrics of the ensemble are honest out-of-fold numbers.

Two ways in: the model protocol (`fit(train, dev)` / `predict_proba(items)`, items carrying
`"member_probs": {member: P(hateful)}`), or straight from prediction files:

    ensemble = Ensemble.build(EnsembleConfig(members=("clip_fusion", "mmbt"), method="stacking"))
    ensemble.fit_members(load_member_predictions(eval_dir, ensemble.config.members, "dev_seen"))
    test = ensemble.predict_members(load_member_predictions(eval_dir, ensemble.config.members, "test_seen"))
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.linear_model import LogisticRegression

from hatememes.metrics import UNLABELLED, Predictions, read_predictions

EPSILON = 1e-6  # probabilities are clipped to [EPSILON, 1 - EPSILON] before the logit


@dataclass(frozen=True)
class EnsembleConfig:
    members: tuple[str, ...]
    method: Literal["mean", "stacking"] = "mean"
    fit_split: str = "dev_seen"  # the only split stacking learns from
    n_folds: int = 5  # cross-fitting folds for scoring memes of the fit split
    C: float = 1.0  # inverse L2 strength of the logistic stacker
    seed: int = 0  # the permutation that deals fit-split ids into folds


def load_member_predictions(eval_dir: Path, members: tuple[str, ...], split: str) -> dict[str, Predictions]:
    """`eval/<member>/predictions/<split>.csv` for every member."""
    found = {}
    for member in members:
        path = Path(eval_dir) / member / "predictions" / f"{split}.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: ensemble member {member!r} has no predictions for {split!r}")
        found[member] = read_predictions(path)
    return found


def member_matrix(predictions: Mapping[str, Predictions], members: tuple[str, ...]) -> Predictions:
    """The members' predictions aligned by meme id: ids (N,), labels (N,), probs (N, K) in `members` order."""
    first = predictions[members[0]]
    order = np.argsort(first.ids)
    ids = first.ids[order]
    columns = []
    for member in members:
        other = predictions[member]
        if len(other.ids) != len(ids) or not np.array_equal(np.sort(other.ids), ids):
            raise ValueError(f"member {member!r} scored other memes than {members[0]!r}")
        columns.append(other.probs[np.argsort(other.ids)])
    return Predictions(ids, np.stack(columns, axis=1), first.labels[order])  # probs (N, K)


def logits(probs: np.ndarray) -> np.ndarray:
    probs = np.clip(probs, EPSILON, 1 - EPSILON)
    return np.log(probs) - np.log1p(-probs)


class Ensemble:
    Config = EnsembleConfig
    inputs = ("predictions",)  # each item carries "member_probs": {member: P(hateful)}

    def __init__(self, config: EnsembleConfig):
        if not config.members:
            raise ValueError("an ensemble needs at least one member")
        self.config = config
        self.weights: np.ndarray | None = None  # (K + 1,) intercept then coefficients, whole fit split
        self.fold_weights = np.zeros((0, len(config.members) + 1))  # (F, K + 1), fold f left out
        self.fold_of_id: dict[int, int] = {}  # fit-split meme id -> its fold

    @classmethod
    def build(cls, config: EnsembleConfig, context=None) -> Ensemble:
        return cls(config)

    # ----- fitting: the fit split only

    def fit(self, train: list[dict], dev: list[dict]) -> None:
        """The model protocol: `train` is ignored on purpose (see the module docstring)."""
        self.fit_arrays(*self.items_to_arrays(dev))

    def fit_members(self, predictions: Mapping[str, Predictions]) -> None:
        """Fit on the members' predictions for the fit split (`load_member_predictions(..., fit_split)`)."""
        matrix = member_matrix(predictions, self.config.members)
        self.fit_arrays(matrix.ids, matrix.probs, matrix.labels)

    def fit_arrays(self, ids: np.ndarray, member_probs: np.ndarray, labels: np.ndarray) -> None:
        if self.config.method == "mean":
            return
        if np.any(labels == UNLABELLED):
            raise ValueError(f"stacking needs labels on every meme of {self.config.fit_split!r}")
        features = logits(member_probs)  # (N, K)
        self.weights = self.fit_logistic(features, labels)
        folds = self.deal_folds(ids)
        self.fold_of_id = {int(i): int(f) for i, f in zip(ids, folds, strict=True)}
        self.fold_weights = np.stack([
            self.fit_logistic(features[folds != f], labels[folds != f]) for f in range(self.config.n_folds)
        ])  # (F, K + 1)

    def deal_folds(self, ids: np.ndarray) -> np.ndarray:
        """Fold of each id: a seeded permutation of the sorted ids, dealt round-robin (labels play no part)."""
        if self.config.n_folds < 2:
            raise ValueError("stacking needs n_folds >= 2 to score its own fit split out of fold")
        sorted_ids = np.sort(ids)
        permuted = np.random.default_rng(self.config.seed).permutation(sorted_ids)
        fold_of = {int(i): k % self.config.n_folds for k, i in enumerate(permuted)}
        return np.array([fold_of[int(i)] for i in ids])

    def fit_logistic(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if len(np.unique(labels)) < 2:
            raise ValueError(f"a stacking fold of {self.config.fit_split!r} has one class; lower n_folds")
        model = LogisticRegression(C=self.config.C, max_iter=1000).fit(features, labels)
        return np.concatenate([model.intercept_, model.coef_[0]])  # (K + 1,)

    # ----- scoring

    def predict_proba(self, items: list[dict]) -> np.ndarray:
        ids, member_probs, _ = self.items_to_arrays(items)
        return self.predict_arrays(ids, member_probs)

    def predict_members(self, predictions: Mapping[str, Predictions]) -> Predictions:
        """The ensemble's predictions for one split from its members' predictions for that split."""
        matrix = member_matrix(predictions, self.config.members)
        return Predictions(matrix.ids, self.predict_arrays(matrix.ids, matrix.probs), matrix.labels)

    def predict_arrays(self, ids: np.ndarray, member_probs: np.ndarray) -> np.ndarray:
        """P(hateful) (N,) from member probabilities (N, K); fit-split memes are scored out of fold."""
        if self.config.method == "mean":
            return member_probs.mean(axis=1)
        if self.weights is None:
            raise RuntimeError("stacking ensemble is not fitted: call fit / fit_members first")
        weights = np.stack([self.weight_for(int(i)) for i in ids])  # (N, K + 1)
        scores = weights[:, 0] + (weights[:, 1:] * logits(member_probs)).sum(axis=1)  # (N,) logits
        return 1 / (1 + np.exp(-scores))

    def weight_for(self, meme_id: int) -> np.ndarray:
        fold = self.fold_of_id.get(meme_id)
        return self.weights if fold is None else self.fold_weights[fold]

    def items_to_arrays(self, items: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.array([item["id"] for item in items])
        member_probs = np.array([[item["member_probs"][m] for m in self.config.members] for item in items])
        labels = np.array([item.get("label", UNLABELLED) for item in items])
        return ids, member_probs.reshape(len(items), len(self.config.members)), labels

    # ----- persistence

    def save_pretrained(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "config": asdict(self.config),
            "weights": None if self.weights is None else self.weights.tolist(),
            "fold_weights": self.fold_weights.tolist(),
            "fold_of_id": {str(k): v for k, v in self.fold_of_id.items()},
        }
        (directory / "ensemble.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_pretrained(cls, directory: Path) -> Ensemble:
        state = json.loads((Path(directory) / "ensemble.json").read_text(encoding="utf-8"))
        config = state["config"]
        model = cls(EnsembleConfig(**{**config, "members": tuple(config["members"])}))
        if state["weights"] is not None:
            model.weights = np.array(state["weights"])
            model.fold_weights = np.array(state["fold_weights"]).reshape(-1, len(model.config.members) + 1)
            model.fold_of_id = {int(k): v for k, v in state["fold_of_id"].items()}
        return model
