"""A model's evaluation folder (DESIGN §7): its predictions, written by the stage that scores (train@,
ensemble), and its metrics, written by the evaluate stage (and the ensemble's) from those predictions.

    eval/<name>/predictions/<split>.csv   id,proba,label (label empty when unknown)
    eval/<name>/metrics.json              per labelled split: AUROC + 95% CI, accuracy, F1, threshold, n
    eval/<name>/roc/<split>.csv           fpr,tpr
    eval/<name>/predictions/seeds/<seed>/<split>.csv   the same model trained from more seeds (loop.seeds):
                                          metrics.json then holds, per split, `seeds`: every run's AUROC,
                                          their mean and sample sd, and the seed-averaged predictions' AUROC + CI

numpy only (no torch, scipy or scikit-learn): the evaluate stage starts in a fraction of a second.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from hatememes.metrics import (
    Predictions,
    auroc,
    bootstrap_auroc_ci,
    read_predictions,
    write_metrics,
    write_predictions,
)


@dataclass(frozen=True)
class EvaluateParams:
    n_boot: int = 1000
    seed: int = 0
    threshold_criterion: Literal["accuracy", "f1"] = "accuracy"


def write_predictions_folder(folder: Path, predictions: dict[str, Predictions],
                             fine_grained: dict[str, np.ndarray] | None = None) -> None:
    """`folder`/<split>.csv for every split, and for a model with fine-grained heads `folder`/fine_grained/
    <split>.jsonl in the WOAH 2021 shared task's submission format (hatememes.shared_task), written under
    `.<name>.partial` and moved in whole, so a killed run never leaves some splits of a new run beside others
    of an old one."""
    folder = Path(folder)
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for split, split_predictions in predictions.items():
        write_predictions(partial / f"{split}.csv", split_predictions)
    if fine_grained:
        from hatememes.shared_task import write_submission

        (partial / "fine_grained").mkdir()
        for split, fine in fine_grained.items():
            write_submission(partial / "fine_grained" / f"{split}.jsonl", split, predictions[split].ids,
                             predictions[split].probs, fine)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def read_predictions_folder(folder: Path, splits: list[str], expected_ids: dict[str, list[int]] | None = None
                            ) -> dict[str, Predictions]:
    """{split: Predictions} from `folder`/<split>.csv, in the order of `splits`. With `expected_ids`, each
    split's ids must be the split's memes, each once (the file and the first difference are named)."""
    folder = Path(folder)
    missing = [split for split in splits if not (folder / f"{split}.csv").is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: no predictions for {', '.join(missing)} (run the train stage)")
    predictions = {split: read_predictions(folder / f"{split}.csv") for split in splits}
    for split, ids in (expected_ids or {}).items():
        scored = predictions[split].ids.tolist()
        if sorted(scored) != sorted(ids):
            lost = sorted(set(ids) - set(scored))[:5]
            extra = sorted(set(scored) - set(ids))[:5]
            doubled = sorted(i for i, count in Counter(scored).items() if count > 1)[:5]
            raise ValueError(f"{folder / f'{split}.csv'}: {len(scored)} rows for the split's {len(ids)} memes "
                             f"(missing ids {lost}, unknown ids {extra}, doubled ids {doubled})")
    return predictions


def seed_summary(runs: list[Predictions], n_boot: int, seed: int) -> dict | None:
    """One split over several training seeds (the model's run first): each run's AUROC, their mean and sample
    sd (ddof 1), and the AUROC with bootstrap CI of the seed-averaged predictions (each meme's mean P over the
    runs). None where AUROC is not defined."""
    labelled = [run.labelled for run in runs]
    if any(not np.array_equal(run.ids, labelled[0].ids) or not np.array_equal(run.labels, labelled[0].labels)
           for run in labelled):
        raise ValueError("the seeds' predictions do not score the same memes with the same labels")
    values = [auroc(run.labels, run.probs) for run in labelled]
    if any(value is None for value in values):
        return None
    averaged = np.mean([run.probs for run in labelled], axis=0)
    low_high = bootstrap_auroc_ci(labelled[0].labels, averaged, n_boot, seed)
    return {"runs": len(runs), "auroc": values, "mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)),
            "averaged": {"auroc": auroc(labelled[0].labels, averaged), "ci": list(low_high) if low_high else None}}


def write_evaluation(out: Path, predictions: dict[str, Predictions], dev_split: str, config: EvaluateParams,
                     seeds: dict[str, dict[str, Predictions]] | None = None) -> dict:
    """metrics.json and roc/ into `out`, written under `.<name>.partial` first and moved in, metrics.json
    last, so a killed run never leaves a half evaluation that looks complete. Other files in `out`
    (predictions/, extra/) stay. `seeds`: {seed: predictions} of the model trained from more seeds."""
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    metrics = write_metrics(partial, predictions, dev_split=dev_split, criterion=config.threshold_criterion,
                            n_boot=config.n_boot, seed=config.seed)
    if seeds:
        for split, entry in metrics.items():
            summary = seed_summary([predictions[split], *(runs[split] for runs in seeds.values())], config.n_boot,
                                   config.seed)
            if summary is not None:
                entry["seeds"] = {"seeds": ["model", *seeds], **summary}
        (partial / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)
    for name in ("roc", "metrics.json"):
        shutil.rmtree(out / name, ignore_errors=True)
        if (partial / name).exists():
            (partial / name).rename(out / name)
    shutil.rmtree(partial, ignore_errors=True)
    for split, entry in metrics.items():
        value = "n/a" if entry["auroc"] is None else f"{entry['auroc']:.4f}"
        over = entry.get("seeds")
        spread = f"  seeds {over['mean']:.4f} ± {over['sd']:.4f} (n={over['runs']})" if over else ""
        print(f"{out.name:22s} {split:12s} AUROC {value}  n={entry['n']}{spread}")
    return metrics


def seed_folders(predictions_dir: Path) -> list[Path]:
    """predictions/seeds/<seed>/ in the seeds' numeric order (2 before 10); a folder not named by a number is
    an error (empty when the model was trained from one seed)."""
    folders = [p for p in (Path(predictions_dir) / "seeds").glob("*") if p.is_dir()]
    for folder in folders:
        if not folder.name.isdigit():
            raise ValueError(f"{folder}: not a seed's folder (predictions/seeds/<seed>/, the seed a number)")
    return sorted(folders, key=lambda p: int(p.name))


def read_seed_folders(predictions_dir: Path, splits: list[str], expected_ids: dict[str, list[int]]) -> dict:
    """{seed: predictions} from predictions/seeds/<seed>/ (empty when the model was trained from one seed)."""
    return {folder.name: read_predictions_folder(folder, splits, expected_ids)
            for folder in seed_folders(predictions_dir)}
