"""Writing a model's evaluation folder (DESIGN §7), shared by the evaluate and ensemble stages.

    eval/<name>/predictions/<split>.csv   id,proba,label (label empty when unknown)
    eval/<name>/metrics.json              per labelled split: AUROC + 95% CI, accuracy, F1, threshold, n
    eval/<name>/roc/<split>.csv           fpr,tpr
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hatememes.metrics import Predictions, write_metrics, write_predictions


@dataclass(frozen=True)
class EvaluateParams:
    n_boot: int = 1000
    seed: int = 0
    threshold_criterion: Literal["accuracy", "f1"] = "accuracy"


def write_evaluation(out: Path, predictions: dict[str, Predictions], dev_split: str, config: EvaluateParams) -> dict:
    """Everything is written under `.<name>.partial` first, then moved into `out` (metrics.json last), so a
    killed run never leaves a half evaluation that looks complete. Other files in `out` (extra/) stay."""
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for split, split_predictions in predictions.items():
        write_predictions(partial / "predictions" / f"{split}.csv", split_predictions)
    metrics = write_metrics(partial, predictions, dev_split=dev_split, criterion=config.threshold_criterion,
                            n_boot=config.n_boot, seed=config.seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)
    for name in ("predictions", "roc", "metrics.json"):
        shutil.rmtree(out / name, ignore_errors=True)
        if (partial / name).exists():
            (partial / name).rename(out / name)
    shutil.rmtree(partial, ignore_errors=True)
    for split, entry in metrics.items():
        auroc = "n/a" if entry["auroc"] is None else f"{entry['auroc']:.4f}"
        print(f"{out.name:22s} {split:12s} AUROC {auroc}  n={entry['n']}")
    return metrics
