"""The demo's performance bars, checked on a reproduced repository's `eval/` folder.

`check_bars(root)` computes every model's AUROC itself from `eval/<model>/predictions/<split>.csv` (so a
replaced predictions file is caught even when `metrics.json` is stale), cross-checks `metrics.json` against it,
and returns one readable message per violated bar: models that should learn the pair rule have lower bounds,
models that should stay at chance have upper bounds, the ensemble keeps up with its best member and rgcl with
clip_fusion.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from sklearn.metrics import roc_auc_score

LABELLED_SPLITS = ("dev_seen", "dev_unseen", "test_seen", "test_unseen")

# lowest AUROC on test_unseen of the models that should learn the pair rule
# (lmm_lora: LMM-RGCL's first stage with its classifier head, on llava_lora's base and bar; dev_seen / dev_unseen
# 0.957 / 0.957 in world 0 and 0.914 / 0.968 in world 572, llava_lora's 0.955 / 0.958 and 0.909 / 0.972)
LEARNERS = {"clip_fusion": 0.90, "mmbt": 0.90, "visualbert": 0.90, "course_mlp": 0.90, "llava_lora": 0.85,
            "lmm_lora": 0.85, "rgcl": 0.90, "rgcl_bce_only": 0.90, "rgcl_knn": 0.85, "lmm_rgcl": 0.85,
            "lmm_rgcl_knn": 0.85, "concat_bert": 0.80}
# unimodal models cannot see the pair, zero-shot models were never taught the rule: at most CHANCE_BAR
AT_CHANCE = ("clip_linear_image", "clip_linear_text", "course_cnn", "course_lstm", "course_transformer",
             "clip_zeroshot", "llava_zeroshot", "lmm_zeroshot", "image_grid", "image_region", "text_bert",
             "late_fusion")  # late fusion: the benchmark paper's point, the confounders defeat it
CHANCE_BAR = 0.65
ENSEMBLE_SLACK = 0.03  # below its best member; seed noise is 0.01-0.02
RGCL_SLACK = 0.03  # rgcl below clip_fusion, on test_unseen
# the fine-grained heads (the demo world's WOAH 2021 labels): lowest mean per-label AUROC of the protected
# categories and of the attack types on dev_unseen (the test splits have no fine-grained labels; a predictor of
# the class priors scores 0.5, where the scorer's micro-AUROC would give it about 0.9). Bars set on the values
# of worlds 0 and 1 (docs/measurements.md, session 17); lmm_lora's attack types (3 epochs of LoRA; attacks
# need the pair) reached 0.801 and 0.762 there, 0.745 (world 0) and 0.673 (world 468, CI) on an AVX2 CPU: its
# bar for them is 0.60, still 0.1 above what a dead head scores (session 18)
FINE_GRAINED = {"clip_fusion": 0.75, "mmbt": 0.75, "visualbert": 0.75, "lmm_lora": 0.70}
FINE_GRAINED_TASK = {("lmm_lora", "attack"): 0.60}  # (model, task) -> its own bar, where it differs
FINE_GRAINED_SPLIT = "dev_unseen"
# splits besides test_unseen whose bars the e2e test held before the bars moved here
ALSO_ON = {"clip_fusion": ("dev_unseen",), "clip_linear_image": ("dev_unseen",), "clip_linear_text": ("dev_unseen",),
           "course_lstm": ("dev_unseen", "test_seen"), "course_transformer": ("dev_unseen", "test_seen")}


def check_bars(root: Path) -> list[str]:
    """Every violated bar of the reproduced repository at `root` as a message; empty when all hold."""
    members = json.loads((root / "models" / "ensemble" / "ensemble.json").read_text())["config"]["members"]
    aurocs, problems = {}, []
    for model in dict.fromkeys([*LEARNERS, *AT_CHANCE, "ensemble", *members]):
        aurocs[model], model_problems = read_aurocs(root / "eval" / model)
        problems += model_problems
    return problems + violated(aurocs, members) + late_fusion_problems(root)


def late_fusion_problems(root: Path, split: str = "test_unseen") -> list[str]:
    """late_fusion's predictions must be the mean of its members' (models/late_fusion/ensemble.json), meme by meme:
    an upper bound alone would pass a late_fusion that lost its members."""
    members = json.loads((root / "models" / "late_fusion" / "ensemble.json").read_text())["config"]["members"]
    rows = {model: read_probs(root / "eval" / model / "predictions" / f"{split}.csv")
            for model in ("late_fusion", *members)}
    if any(set(rows[m]) != set(rows["late_fusion"]) for m in members):
        return [f"late_fusion {split}: scored other memes than its members {members}"]
    off = [i for i, p in rows["late_fusion"].items() if abs(p - sum(rows[m][i] for m in members) / len(members)) > 1e-6]
    return [f"late_fusion {split}: {len(off)} memes not scored with the mean of {members}"] if off else []


def read_probs(path: Path) -> dict[int, float]:
    with path.open() as file:
        return {int(row["id"]): float(row["proba"]) for row in csv.DictReader(file)}


def check_committed_bars(root: Path) -> list[str]:
    """The same bars on the committed demo's `eval/<model>/metrics.json` (DVC keeps them in git; the
    predictions are in DVC's cache only): what world 0's `dvc repro` gave when dvc.lock was written."""
    import yaml

    members = yaml.safe_load((root / "params.yaml").read_text())["ensemble"]["members"]
    aurocs, problems = {}, []
    for model in dict.fromkeys([*LEARNERS, *AT_CHANCE, "ensemble", *members]):
        path = root / "eval" / model / "metrics.json"
        if not path.is_file():
            problems.append(f"{model}: no metrics.json ({path} missing)")
            aurocs[model] = {}
            continue
        aurocs[model] = {split: entry["auroc"] for split, entry in json.loads(path.read_text()).items()
                         if split in LABELLED_SPLITS and isinstance(entry, dict) and entry.get("auroc") is not None}
    return problems + violated(aurocs, members)


def violated(aurocs: dict[str, dict[str, float]], members: list[str]) -> list[str]:
    """One message per bar that `aurocs` ({model: {split: AUROC}}) violates; missing values are skipped (the
    callers report missing files)."""
    problems = []
    for model, split, low, high in bars(aurocs, members):
        value = aurocs[model].get(split)
        if value is not None and not low <= value <= high:
            problems.append(f"{model} {split}: AUROC {value:.3f} outside [{low:.3f}, {high:.3f}]")
    return problems


def bars(aurocs: dict[str, dict[str, float]], members: list[str]) -> Iterator[tuple[str, str, float, float]]:
    """(model, split, lowest, highest AUROC) for every bar."""
    for model, low in LEARNERS.items():
        for split in ("test_unseen", *ALSO_ON.get(model, ())):
            yield model, split, low, 1.0
    for model in AT_CHANCE:
        for split in ("test_unseen", *ALSO_ON.get(model, ())):
            yield model, split, 0.0, CHANCE_BAR
    best = max(aurocs[member].get("test_unseen", 0.0) for member in members)
    yield "ensemble", "test_unseen", best - ENSEMBLE_SLACK, 1.0
    yield "rgcl", "test_unseen", aurocs["clip_fusion"].get("test_unseen", 1.0) - RGCL_SLACK, 1.0
    for split in LABELLED_SPLITS:  # LoRA learns what its zero-shot base does not
        yield "llava_lora", split, aurocs["llava_zeroshot"].get(split, 0.0), 1.0
        yield "lmm_lora", split, aurocs["lmm_zeroshot"].get(split, 0.0), 1.0


def read_aurocs(model_dir: Path) -> tuple[dict[str, float], list[str]]:
    """AUROC per labelled split from the predictions, and what is missing or where metrics.json disagrees."""
    model, aurocs, problems = model_dir.name, {}, []
    for split in LABELLED_SPLITS:
        path = model_dir / "predictions" / f"{split}.csv"
        if path.is_file():
            aurocs[split] = predictions_auroc(path)
        else:
            problems.append(f"{model} {split}: no predictions ({path} missing)")
    if not (model_dir / "metrics.json").is_file():
        return aurocs, [*problems, f"{model}: no metrics.json"]
    for split, entry in json.loads((model_dir / "metrics.json").read_text()).items():
        stated = entry["auroc"]
        if split in aurocs and (stated is None or abs(stated - aurocs[split]) > 1e-9):
            stated = "null" if stated is None else f"{stated:.4f}"
            problems.append(f"{model} {split}: metrics.json says AUROC {stated}, "
                            f"its predictions give {aurocs[split]:.4f}")
    return aurocs, problems


def predictions_auroc(path: Path) -> float:
    """sklearn's AUROC of a predictions CSV (id, proba, label), over its labelled rows."""
    with path.open() as file:
        rows = [row for row in csv.DictReader(file) if row["label"] != ""]
    return float(roc_auc_score([int(row["label"]) for row in rows], [float(row["proba"]) for row in rows]))


def check_fine_grained_bars(root: Path) -> list[str]:
    """The fine-grained bars on a reproduced repository, computed from each model's submission files and the
    memes' annotations (hatememes.shared_task, which also checks the files against predictions/<split>.csv)."""
    from hatememes.shared_task import evaluate_fine_grained

    results = {}
    for model in FINE_GRAINED:
        try:
            results[model] = evaluate_fine_grained(root / "data" / "memes", root / "eval" / model / "predictions")
        except (OSError, ValueError) as error:
            results[model] = {"error": str(error)}
    return fine_grained_violations(results)


def check_committed_fine_grained_bars(root: Path) -> list[str]:
    """The same bars on the committed demo's eval/<model>/fine_grained.json (what the evaluate stage wrote)."""
    results = {}
    for model in FINE_GRAINED:
        path = root / "eval" / model / "fine_grained.json"
        results[model] = json.loads(path.read_text()) if path.is_file() else {"error": f"{path} missing"}
    return fine_grained_violations(results)


def fine_grained_bar(model: str, task: str) -> float:
    return FINE_GRAINED_TASK.get((model, task), FINE_GRAINED[model])


def fine_grained_violations(results: dict[str, dict]) -> list[str]:
    """One message per model whose pc or attack mean per-label AUROC on FINE_GRAINED_SPLIT is below its bar."""
    problems = []
    for model in FINE_GRAINED:
        result = results[model]
        if "error" in result:
            problems.append(f"{model} fine-grained: {result['error']}")
            continue
        per_label = result.get("splits", {}).get(FINE_GRAINED_SPLIT, {}).get("per_label")
        if per_label is None:
            problems.append(f"{model} fine-grained: no pc/attack scores on {FINE_GRAINED_SPLIT} (heads off, or "
                            "no annotations)")
            continue
        for task in ("pc", "attack"):
            value, low = per_label[task]["macro"], fine_grained_bar(model, task)
            if value is None or value < low:
                shown = "undefined" if value is None else f"{value:.3f}"
                problems.append(f"{model} fine-grained {task} {FINE_GRAINED_SPLIT}: mean per-label AUROC {shown} "
                                f"< {low:.3f}")
    return problems
