"""The comparison report of every evaluated model: tables, DeLong tests, plots, error gallery, provenance.

    summary = build_report(eval_dir, memes_dir, out_dir, ReportParams(), resolved_params, models_dir)

reads `eval/<name>/predictions/<split>.csv` and `eval/<name>/metrics.json` (DESIGN §7; metrics are
recomputed from the predictions where metrics.json is missing), `data/memes/` (manifest and meme images
for the error gallery) and `models/<name>/params.json`, and writes into `out_dir`:
    report.md, report.html (self-contained: inline CSS, images as base64, nothing fetched), summary.json,
    summary.md (the AUROC table the README shows: `results_markdown`, `python -m hatememes.readme_results`),
    plots/headline.png, plots/roc_<split>.png, plots/auroc.png, plots/calibration_<split>.png,
    plots/errors_<split>.png.
The report leads with the answer: on the headline split (the first of HEADLINE_SPLITS with labels) the best
model, the models it beats by DeLong test with Holm's correction, the unimodal models' gap to it, and a dot plot
of every model's AUROC coloured by family (`ReportParams.families`). Tables follow, sorted by the headline
AUROC and grouped by family.
Published numbers sit beside the model of this run that reproduces each (REPRODUCES), with how ours differs.
Where data/memes has the WOAH 2021 fine-grained labels, a section scores every model as that shared task does
(hatememes.shared_task): its hate AUROC per protected category on dev_unseen, and the task's scores beside its
published baseline.
Figures are drawn on matplotlib `Figure` objects with the Agg canvas (no pyplot, no global backend).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import io
import json
import os
import re
import textwrap
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hatememes.data.memes import SPLITS, load_rgb, read_split
from hatememes.evaluation import seed_folders
from hatememes.metrics import (
    Predictions,
    calibration_bins,
    delong_test,
    evaluate_predictions,
    read_predictions,
    roc_points,
)
from hatememes.parallel import run_forked
from hatememes.shared_task import CATEGORIES, evaluate_fine_grained

TITLE = "hatememes: model comparison"
MISSING = "—"
HEADLINE_SPLITS = ("test_unseen", "test_seen", "dev_unseen", "dev_seen")  # the summary uses the first with labels
OTHER = "other"  # the family of a model that `ReportParams.families` does not name
UNIMODAL = "unimodal"  # the family whose gap to the best model the summary reports

# model -> family. One family per model, so each model is drawn and tabulated once. A family is what a reader
# compares within: `zero-shot` holds every model that never saw a training label (CLIP and LLaVA alike), so
# `LMM` holds the fine-tuned LLaVA only; the course networks form their own family although three of them see
# one modality, because they answer a different question (what hand-written networks reach) than the CLIP probes.
FAMILIES = {
    "clip_linear_image": UNIMODAL, "clip_linear_text": UNIMODAL,
    "clip_zeroshot": "zero-shot", "llava_zeroshot": "zero-shot", "lmm_zeroshot": "zero-shot",
    "clip_fusion": "fusion", "rgcl_bce_only": "fusion",
    "rgcl": "retrieval-guided", "rgcl_knn": "retrieval-guided",
    "mmbt": "multimodal transformer", "visualbert": "multimodal transformer",
    "llava_lora": "LMM", "lmm_lora": "LMM", "lmm_rgcl": "LMM", "lmm_rgcl_knn": "LMM",
    "course_mlp": "course network", "course_cnn": "course network", "course_lstm": "course network",
    "course_transformer": "course network",
    "ensemble": "ensemble",
}


@dataclass(frozen=True)
class ReportParams:
    models: tuple[str, ...] = ()  # eval/<name>/ folders to report, in this order; empty: every one found
    dev_split: str = "dev_seen"  # threshold split, used only when a model has no metrics.json
    threshold_criterion: Literal["accuracy", "f1"] = "accuracy"
    n_boot: int = 1000  # bootstrap replicates, used only when a model has no metrics.json
    seed: int = 0
    gallery_splits: tuple[str, ...] = ("test_unseen",)  # error gallery of the best model on each
    gallery_size: int = 4  # most confident false positives, and as many false negatives
    thumbnail_px: int = 160
    calibration_bins: int = 10
    alpha: float = 0.05  # significance level of the summary's Holm-corrected DeLong tests
    families: dict[str, str] = field(default_factory=lambda: dict(FAMILIES))  # model -> family; others: "other"
    # planned comparisons, each a DeLong test of the first model against the second on every evaluation split
    # (not Holm-adjusted: chosen before the run, not after looking at its ranking)
    pairs: tuple[tuple[str, str], ...] = (("rgcl", "clip_fusion"), ("rgcl", "rgcl_bce_only"))


@dataclass(frozen=True)
class Published:
    model: str
    source: str
    split: str
    auroc: float  # x100, as the papers print it
    accuracy: float | None = None
    note: str = ""


KIELA = "Kiela et al. 2020, The Hateful Memes Challenge (arXiv:2005.04790), Table 2"
HATE_CLIPPER = "Kumar & Nandakumar 2022, Hate-CLIPper (arXiv:2210.05916)"
PUBLISHED = (
    Published("Human", KIELA, "test_seen", 82.65, 84.70),
    Published("Image-Grid", KIELA, "test_seen", 52.63, 52.00),
    Published("Image-Region", KIELA, "test_seen", 55.92, 52.13),
    Published("Text BERT", KIELA, "test_seen", 65.08, 59.20),
    Published("Late Fusion", KIELA, "test_seen", 64.75, 59.66),
    Published("Concat BERT", KIELA, "test_seen", 65.79, 59.13),
    Published("MMBT-Grid", KIELA, "test_seen", 67.92, 60.06),
    Published("MMBT-Region", KIELA, "test_seen", 70.73, 60.23),
    Published("VisualBERT", KIELA, "test_seen", 71.33, 63.20),
    Published("VisualBERT COCO", KIELA, "test_seen", 71.41, 64.73),
    Published("Hate-CLIPper (align)", HATE_CLIPPER, "test_seen", 85.80, note="the abstract's headline 85.8"),
    Published("Hate-CLIPper (cross)", HATE_CLIPPER, "test_seen", 85.12),
    Published("RGCL", "Mei et al. 2024, ACL (RGCL, aclanthology 2024.acl-long.291)", "test_seen", 87.0,
              note="AUROC as quoted by our issue tracker; accuracy not copied (not checked offline)"),
    Published("LMM-RGCL (LLaVA-1.5-7B)", "Mei et al. 2025, EMNLP (arXiv:2502.13061)", "test_seen", 89.7, 80.9,
              note="retrieval-augmented LMM fine-tuning; figures from a secondary source (our issue tracker)"),
    Published("LMM-RGCL (Qwen2-VL-7B)", "Mei et al. 2025, EMNLP (arXiv:2502.13061)", "test_seen", 91.1,
              note="figure from a secondary source (our issue tracker); ours: lmm_lora (stage 1) and lmm_rgcl "
                   "with lmm_features.model: lmm_lora, as the full profile has them"),
)
def stage_one(params: dict) -> tuple[str, dict]:
    """LMM-RGCL's first stage in this run: the model whose hidden states `lmm_features` reads, and its section."""
    name = params.get("lmm_features", {}).get("model", "llava_lora")
    return name, params.get("train", {}).get(name, {}).get("model", {})


def lmm_rgcl_row(params: dict) -> str | None:
    """The published LMM-RGCL row of the base whose hidden states stage 2 read (none for another base)."""
    name, first = stage_one(params)
    base = str(first.get("base", "")).lower()
    if "qwen2-vl" in base:
        return "LMM-RGCL (Qwen2-VL-7B)"
    return "LMM-RGCL (LLaVA-1.5-7B)" if "llava" in base or name.startswith("llava") else None


IMAGE_ROWS = {"grid": "Image-Grid", "regions": "Image-Region"}  # the image-only model's row, by its features
# Which published row each of our models reproduces, read off its resolved `train.<model>.model` section and
# the run's params (a model with another setting reproduces none), and how ours differs from the published setup.
REPRODUCES = {
    "image_grid": lambda model, params: IMAGE_ROWS.get(model.get("image_features")),
    "image_region": lambda model, params: IMAGE_ROWS.get(model.get("image_features")),
    "text_bert": lambda model, params: "Text BERT",
    "late_fusion": lambda model, params: "Late Fusion" if late_fusion_as_published(params) else None,
    "concat_bert": lambda model, params: "Concat BERT",
    "mmbt": lambda model, params: "MMBT-Grid" if model.get("image_features") == "grid" else "MMBT-Region",
    "visualbert": lambda model, params: "VisualBERT COCO" if "visualbert" in str(model.get("init", ""))
    else "VisualBERT",
    "clip_fusion": lambda model, params: {"align": "Hate-CLIPper (align)", "cross": "Hate-CLIPper (cross)"}.get(
        model.get("fusion")),
    "lmm_rgcl": lambda model, params: lmm_rgcl_row(params),  # its stage 2, on stage 1's hidden states
    "rgcl": lambda model, params: "RGCL" if model.get("contrastive_weight", 0) > 0 else None,
}
# Hate-CLIPper as its authors ran it (gokulkarthik/hateclipper: run.sh of f712452 for align, of 1898520 for
# cross; main.py's defaults; datasets.py squashes to 224 px): what `hateclipper_differs` compares ours with
HATE_CLIPPER_RUN = {
    "features.clip": {"model": ("ViT-L-14", "ViT-L-14-quickgelu"), "pretrained": ("openai",), "pooled": (True,),
                      "resize_mode": ("squash",)},
    "model": {"num_mapping_layers": (1,), "num_pre_output_layers": (1,), "drop_probs": ((0.2, 0.4, 0.1),),
              "embeddings": ("pooled",)},
    "loop": {"epochs": (20,), "batch_size": (16,), "lr": (1.0e-4,), "weight_decay": (1.0e-4,),
             "schedule": ("constant",), "grad_clip": (0.1,), "mixed_precision": ("no",)},
}
HATE_CLIPPER_MAP_DIM = {"align": 1024, "cross": 32}


# RGCL as its authors ran it (JingbiaoMei/RGCL at 82a66c7: scripts/experiments.sh, src/run_rac.py's defaults,
# their CLIP features from generate_CLIP_embedding_HF.py: ViT-L/14-336's pooler outputs, CLIPProcessor's
# shortest-side resize and centre crop, which is open_clip's default for the openai weights)
RGCL_RUN = {
    "features.clip": {"model": ("ViT-L-14-336", "ViT-L-14-336-quickgelu"), "pretrained": ("openai",),
                      "pooled": (True,), "resize_mode": ("shortest", "")},
    "model": {"projection_dim": (1024,), "num_mapping_layers": (1,), "fusion": ("align",), "num_layers": (3,),
              "hidden_dim": (1024,), "drop_probs": ((0.2, 0.4, 0.1),), "embeddings": ("pooled",),
              "contrastive_weight": (0.5,), "contrastive_loss": ("triplet",), "margin": (0.1,),
              "hard_negatives": (1,), "pseudo_positives": (1,), "search_multiple": (12,)},
    "loop": {"epochs": (30,), "batch_size": (64,), "lr": (1.0e-4,), "weight_decay": (0.01,),
             "schedule": ("constant",), "grad_clip": (0.1,), "mixed_precision": ("no",)},
}
NO_DECAY_CLAUSE = "no weight decay on biases and norms (they decay every parameter)"

# The benchmark paper's baselines as MMF ran them (facebookresearch/mmf: projects/others/unimodal/configs/
# hateful_memes/{image,with_features,text,bert}.yaml and projects/others/concat_bert/hateful_memes/defaults.yaml:
# MLPClassifer with 2 layers of 768, AdamW, warmup_linear with 2000 warmup steps over 22000 updates; BERT
# base, all layers, the pooled [CLS] output): what `mmf_differs` compares ours with
MMF_HEAD = {"hidden_dim": (768,), "num_layers": (2,), "dropout": (0.5,)}
MMF_BERT = {"text_model": ("bert-base-uncased",), "num_hidden_layers": (None,), "pooling": ("cls",),
            "freeze_word_embeddings": (False,)}
MMF_LOOP = {"schedule": ("linear",), "warmup_steps": (2000,)}
MMF_RUNS = {
    "Image-Grid": {"model": {"image_features": ("grid",), **MMF_HEAD},
                   "loop": {"batch_size": (32,), "lr": (1.0e-5,), **MMF_LOOP}},
    "Image-Region": {"model": {"image_features": ("regions",), **MMF_HEAD},
                     "loop": {"batch_size": (32,), "lr": (5.0e-5,), **MMF_LOOP}},
    "Text BERT": {"model": {**MMF_BERT, **MMF_HEAD}, "loop": {"batch_size": (128,), "lr": (5.0e-5,), **MMF_LOOP}},
    "Concat BERT": {"model": {**MMF_BERT, "image_features": ("grid",), **MMF_HEAD},
                    "loop": {"batch_size": (64,), "lr": (1.0e-5,), **MMF_LOOP}},
}


def late_fusion_as_published(params: dict) -> bool:
    """The paper's Late Fusion: the mean of the text BERT's and the image-grid model's probabilities."""
    section = params.get("late_fusion", {})
    return section.get("method") == "mean" and sorted(section.get("members", [])) == ["image_grid", "text_bert"]


def image_source(params: dict, kind: str) -> str:
    """What the cached `kind` (grid or regions) features are, read off `features.<kind>`."""
    features = params.get("features", {}).get(kind, {})
    cnn = features.get("cnn", {})
    network = f"{cnn.get('backbone', '?')} ({cnn.get('pretrained', '?')}) at {cnn.get('image_size', '?')} px"
    if kind == "grid":
        return f"frozen, cached grid features of {network}"
    if features.get("precomputed_dir"):
        return f"MMF's released detector features ({features.get('precomputed_dir', '?')})"
    if features.get("detector"):
        return f"the top {features.get('num_boxes')} boxes of {features.get('detector')} RoIAligned on {network}"
    return f"{features.get('num_boxes')} fixed grid boxes RoIAligned on {network}, not detections"


def mmf_differs(params: dict, name: str) -> str:
    """How `train.<name>` departs from MMF's run of the row it reproduces, one clause each."""
    row = REPRODUCES[name](params.get("train", {}).get(name, {}).get("model", {}), params)
    model = params.get("train", {}).get(name, {}).get("model", {})
    image = {"Image-Grid": "grid", "Concat BERT": model.get("image_features", "grid"), "Image-Region": "regions"}
    clauses = run_clauses(MMF_RUNS[row], params, name)
    if row in image:
        clauses.insert(0, image_source(params, image[row]) + (
            " (MMF fine-tunes a detector fc7 layer on them)" if row == "Image-Region"
            else " (MMF fine-tunes the ResNet-152 end to end at 224 px)"))
    return "; ".join(clauses)


def mmbt_grid_differs(params: dict, name: str) -> str:
    """MMF trains its ResNet-152 with MMBT (`image_encoder: finetune`); the cached grid is a frozen one."""
    model = params.get("train", {}).get(name, {}).get("model", {})
    if model.get("image_encoder", "cached") == "finetune":
        return ""
    return image_source(params, "grid") + " (MMF fine-tunes the ResNet-152 end to end at 224 px)"


def late_fusion_differs(params: dict, name: str) -> str:
    """Ours averages the two trained models' probabilities; MMF's late_fusion model trains both heads at once."""
    return ("the mean of text_bert's and image_grid's P(hateful), each trained alone (MMF's late_fusion trains both "
            f"encoders and heads together and averages their logits); text_bert: {mmf_differs(params, 'text_bert')}; "
            f"image_grid: {mmf_differs(params, 'image_grid')}")


def run_clauses(run: dict, params: dict, name: str) -> list[str]:
    """One clause per param of `train.<name>` or the clip features that is not among the authors' values in
    `run` ({section: {key: (their value, other values equivalent to it)}}), read off the resolved params."""
    train, clip = params.get("train", {}).get(name, {}), params.get("features", {}).get("clip", {})
    sections = {"features.clip": clip, "model": train.get("model", {}), "loop": train.get("loop", {})}
    clauses = []
    for section, keys in run.items():
        for key, theirs in keys.items():
            value = sections[section].get(key)
            ours = tuple(value) if isinstance(value, list) else value
            if ours not in theirs:
                clauses.append(f"{section}.{key} {fmt_param(ours)} (theirs {fmt_param(theirs[0])})")
    return clauses


def hateclipper_differs(params: dict, name: str) -> str:
    """How `train.<name>` and the clip features depart from the authors' run, one clause each (the
    weight-decay clause holds for every run: our loop never decays biases and norms)."""
    clauses = run_clauses(HATE_CLIPPER_RUN, params, name)
    model = params.get("train", {}).get(name, {}).get("model", {})
    width = HATE_CLIPPER_MAP_DIM.get(model.get("fusion"))
    for key in ("projection_dim", "pre_output_dim"):
        if width is not None and model.get(key) != width:
            clauses.append(f"model.{key} {model.get(key)} (theirs {width})")
    return "; ".join(clauses + [NO_DECAY_CLAUSE])


def rgcl_differs(params: dict, name: str) -> str:
    """How `train.<name>` departs from the RGCL authors' run (the last three clauses hold for every run)."""
    return "; ".join(run_clauses(RGCL_RUN, params, name) + [
        "an anchor never retrieves itself (in theirs its own embedding is usually its pseudo-gold positive)",
        "the best epoch by dev AUROC (theirs by dev accuracy)", NO_DECAY_CLAUSE])


def lmm_rgcl_differs(params: dict, name: str) -> str:
    """How our two stages depart from LMM-RGCL's, read off stage 1's section (the model `lmm_features` reads)
    and `train.<name>.model` (stage 2)."""
    _, first = stage_one(params)
    second = params.get("train", {}).get(name, {}).get("model", {})
    if first.get("classifier_head"):
        stage1 = (f"stage 1: LoRA r {first.get('lora_r')}, the classifier head's BCE x {first.get('head_loss_weight')} "
                  f"+ the answer token's LM loss x {first.get('lm_loss_weight')}")
    else:
        stage1 = "stage 1 without the classifier head: LoRA with BCE on the Yes/No logits only"
    stage2 = (f"stage 2: rgcl's head ({second.get('num_layers')} x {second.get('hidden_dim')}, metric "
              f"{second.get('metric')}, {second.get('contrastive_loss')} loss) on the last-token hidden states")
    return "; ".join([stage1, stage2, "an anchor never retrieves itself"])


def fmt_param(value) -> str:
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    return '""' if value == "" else str(value)


DIFFERS = {
    "Image-Grid": mmf_differs,
    "Image-Region": mmf_differs,
    "Text BERT": mmf_differs,
    "Late Fusion": late_fusion_differs,
    "Concat BERT": mmf_differs,
    "MMBT-Grid": mmbt_grid_differs,
    "MMBT-Region": lambda params, name: image_source(params, "regions"),
    "VisualBERT": lambda params, name: image_source(params, "regions"),
    "VisualBERT COCO": lambda params, name: image_source(params, "regions") + (
        "" if params.get("features", {}).get("regions", {}).get("precomputed_dir")
        else " (the COCO checkpoint was pretrained on Faster R-CNN detections)"),
    "Hate-CLIPper (align)": hateclipper_differs,
    "Hate-CLIPper (cross)": hateclipper_differs,
    "RGCL": rgcl_differs,
    "LMM-RGCL (LLaVA-1.5-7B)": lmm_rgcl_differs,
    "LMM-RGCL (Qwen2-VL-7B)": lmm_rgcl_differs,
}


@dataclass
class ModelRun:
    name: str
    predictions: dict[str, Predictions]
    metrics: dict[str, dict]
    metrics_source: str
    extras: list[Path] = field(default_factory=list)
    seeds: dict[str, dict[str, Predictions]] = field(default_factory=dict)  # seed -> split -> more seeds' runs

    def runs(self, split: str) -> list[Predictions]:
        """The model's predictions on `split`, then each further seed's (predictions/seeds/<seed>/)."""
        return [self.predictions[split], *(runs[split] for runs in self.seeds.values() if split in runs)]


# ----- reading eval/


def discover_models(eval_dir: Path, names: tuple[str, ...]) -> list[str]:
    found = sorted(p.parent.name for p in Path(eval_dir).glob("*/predictions") if p.is_dir())
    if not names:
        return found
    missing = [n for n in names if n not in found]
    if missing:
        raise FileNotFoundError(f"{eval_dir}: no predictions for {missing} (found: {found})")
    return list(names)


def load_run(eval_dir: Path, name: str, params: ReportParams) -> ModelRun:
    folder = Path(eval_dir) / name
    predictions = {s: read_predictions(folder / "predictions" / f"{s}.csv")
                   for s in SPLITS if (folder / "predictions" / f"{s}.csv").exists()}
    if (folder / "metrics.json").exists():
        metrics, source = json.loads((folder / "metrics.json").read_text(encoding="utf-8")), "metrics.json"
    else:
        metrics = evaluate_predictions(predictions, params.dev_split, params.threshold_criterion, params.n_boot,
                                       params.seed)
        source = "recomputed from predictions"
    extras = sorted((p for p in (folder / "extra").glob("*") if p.suffix in (".png", ".json") and p.name != CAPTIONS),
                    key=lambda p: (p.stem, p.suffix != ".png"))  # a figure, then the table of its numbers
    seeds = {seed.name: {s: read_predictions(seed / f"{s}.csv") for s in SPLITS if (seed / f"{s}.csv").exists()}
             for seed in seed_folders(folder / "predictions")}
    return ModelRun(name, predictions, metrics, source, extras, seeds)


CAPTIONS = "captions.json"  # an extra folder's {file name: caption}, written by the stage that made the files


def extra_caption(path: Path) -> str:
    """What the producing stage says its file shows (extra/captions.json), else the file's name."""
    captions = path.parent / CAPTIONS
    if captions.is_file():
        return json.loads(captions.read_text(encoding="utf-8")).get(path.name, path.name)
    return path.name


def extra_table(path: Path) -> tuple[list[str], list[list[str]]] | None:
    """A table for the JSON extras the report knows (the explain stage's FGSM curve), else None."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("auroc_at_eps"), dict):
        return None
    curve = data["auroc_at_eps"]
    clean = curve.get("0")
    rows = [[eps, f"{float(eps) * 255:.1f}", fmt(auroc), MISSING if clean is None else f"{auroc - clean:+.3f}"]
            for eps, auroc in curve.items()]
    return ["FGSM eps", "eps × 255", f"AUROC ({data.get('split', MISSING)})", "change from eps 0"], rows


# ----- comparing models


def delong_against(best: Predictions, other: Predictions) -> dict | None:
    """DeLong test of `other` against `best` on the labelled memes both scored."""
    best, other = best.labelled, other.labelled
    common, in_best, in_other = np.intersect1d(best.ids, other.ids, return_indices=True)
    result = delong_test(best.labels[in_best], other.probs[in_other], best.probs[in_best])
    if result is None:
        return None
    return {"p": result.p_value, "z": result.z, "difference": result.difference, "n": int(len(common))}


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values (Holm 1979), in the order given.

    The k-th smallest of m p-values (k = 1..m) is multiplied by m - k + 1, capped at 1, and raised to the
    largest adjusted value before it, so the order of the p-values is kept. Rejecting where the adjusted p is
    at most alpha bounds the chance of any false rejection among the m tests by alpha."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()


SEED_RULE = ("Models trained from several seeds are tested once per seed: run k of a model against run k of "
             "the best model (a model without a run k uses its own, first run), Holm-adjusted over the split's models "
             "at each k; a difference counts as significant only if it is at every k, so the Holm p shown is the "
             "largest over the seeds.")


def compare_split(runs: list[ModelRun], split: str) -> dict:
    """One split: each model's metrics, the best model by AUROC (its own run), each model's DeLong test
    against it, with p-values Holm-adjusted over the split's comparisons (`p_holm`). With several seeds, the
    tests are repeated per seed and combined by SEED_RULE (`p_seeds`: the Holm p at each seed)."""
    rows = {run.name: dict(run.metrics[split]) for run in runs if split in run.metrics}
    scored = [run.name for run in runs if split in run.predictions]
    defined = {name: row["auroc"] for name, row in rows.items() if row.get("auroc") is not None}
    best = max(defined, key=defined.get) if defined else None
    by_name = {run.name: run for run in runs}
    for name, row in rows.items():
        row["delong_vs_best"] = None
        if best is not None and name != best and row.get("auroc") is not None:
            row["delong_vs_best"] = delong_against(by_name[best].predictions[split], by_name[name].predictions[split])
    tested = [name for name, row in rows.items() if row["delong_vs_best"] is not None]
    if tested:
        seeds = max(len(by_name[name].runs(split)) for name in [*tested, best])
        per_seed = [holm_adjust([seed_test(by_name[best], by_name[name], split, k)["p"] for name in tested])
                    for k in range(seeds)]
        for index, name in enumerate(tested):
            adjusted = [column[index] for column in per_seed]
            rows[name]["delong_vs_best"]["p_holm"] = max(adjusted)
            if seeds > 1:
                rows[name]["delong_vs_best"]["p_seeds"] = adjusted
    unlabelled = {name: {"n": len(by_name[name].predictions[split].ids)} for name in scored if name not in rows}
    return {"best": best, "rows": rows, "unlabelled": unlabelled}


def seed_test(best: ModelRun, other: ModelRun, split: str, k: int) -> dict:
    """DeLong of `other`'s run k against `best`'s run k (a model's own run where it has fewer); p 1 where the
    test is not defined on that pair."""
    best_runs, other_runs = best.runs(split), other.runs(split)
    result = delong_against(best_runs[k] if k < len(best_runs) else best_runs[0],
                            other_runs[k] if k < len(other_runs) else other_runs[0])
    return result or {"p": 1.0}


# ----- provenance


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def provenance(memes_dir: Path, models_dir: Path | None, names: list[str], resolved_params: dict) -> dict:
    params_text = json.dumps(resolved_params, sort_keys=True, default=str)
    record = {"params_sha256": sha256_of(params_text.encode()), "params": resolved_params, "manifest": None,
              "model_params": {}}
    manifest_path = Path(memes_dir) / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        keep = ("count", "hateful", "labelled", "rejected", "sha256")
        record["manifest"] = {
            "sha256": sha256_of(manifest_path.read_bytes()), "source": manifest.get("source"),
            "splits": {s: {k: v for k, v in info.items() if k in keep}
                       for s, info in manifest.get("splits", {}).items()},
        }
    for name in names:
        path = Path(models_dir) / name / "params.json" if models_dir else None
        if path and path.exists():
            record["model_params"][name] = {"sha256": sha256_of(path.read_bytes()),
                                            "params": json.loads(path.read_text(encoding="utf-8"))}
    return record


# ----- figures


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def family_colours(families: dict[str, str]) -> dict[str, str]:
    """One colour per family, in the order `families` first names them (then `other`), so that a family keeps
    its colour from run to run whichever models were evaluated."""
    names = list(dict.fromkeys([*families.values(), OTHER]))
    return {name: f"C{k % 10}" for k, name in enumerate(names)}


def plot_headline(headline: dict, colours: dict[str, str], path: Path) -> None:
    """Every model's AUROC and 95% CI on the headline split as a dot and a bar, best at the top, one colour per
    family, chance marked by a vertical line."""
    ranking = headline["ranking"]
    figure = new_figure(9, 1.6 + 0.42 * len(ranking))
    axes = figure.add_subplot()
    y = np.arange(len(ranking))[::-1]  # best at the top
    for family in dict.fromkeys(r["family"] for r in ranking):
        rows = [(k, r) for k, r in enumerate(ranking) if r["family"] == family]
        x = np.array([r["auroc"] for _, r in rows])
        ci = np.array([r["auroc_ci95"] or [r["auroc"]] * 2 for _, r in rows])  # (N, 2)
        axes.errorbar(x, y[[k for k, _ in rows]], xerr=np.abs(ci.T - x), fmt="o", markersize=8, capsize=3,
                      linewidth=2, color=colours[family], label=family)
    axes.axvline(0.5, color="k", linestyle="--", linewidth=1, label="chance (0.5)")
    low = min([0.45] + [r["auroc_ci95"][0] - 0.02 for r in ranking if r["auroc_ci95"]])
    axes.set(yticks=y, xlim=(low, 1.01), ylim=(-0.7, len(ranking) - 0.3), xlabel="AUROC (95% bootstrap CI)",
             title=f"AUROC on {headline['split']}, best first")
    axes.set_yticklabels([r["model"] for r in ranking], fontsize=11)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=10, title="family")
    figure.savefig(path)


LINESTYLES = ("-", "--", ":", "-.")


def family_panels(runs: list[ModelRun], split: str, order: list[str], families: dict[str, str], title: str,
                  draw) -> Figure:
    """Small multiples on one split, one panel per family (in the order `order` first names them), for the
    models with an AUROC there. `draw(axes, run, colour, linestyle)` draws one model: within a panel the k-th
    takes colour k mod 10 and line style k mod 4, so no two share both up to 20 models a family."""
    by_name = {run.name: run for run in runs}
    scored = [n for n in order if by_name[n].metrics.get(split, {}).get("auroc") is not None]
    groups = {}
    for name in scored:
        groups.setdefault(families[name], []).append(name)
    columns = min(3, len(groups))
    rows = -(-len(groups) // columns)  # ceil
    figure = new_figure(4.2 * columns, 4.2 * rows + 0.4)
    figure.suptitle(title)
    for index, (family, names) in enumerate(groups.items()):
        axes = figure.add_subplot(rows, columns, index + 1)
        for k, name in enumerate(names):
            draw(axes, by_name[name], f"C{k % 10}", LINESTYLES[k % len(LINESTYLES)])
        axes.set_title(family)
    return figure


def draw_roc_panels(runs: list[ModelRun], split: str, order: list[str], families: dict[str, str]) -> Figure:
    """ROC curves on one split as small multiples, one panel per family (`family_panels`)."""

    def draw(axes, run: ModelRun, colour: str, linestyle: str) -> None:
        labelled = run.predictions[split].labelled
        fpr, tpr = roc_points(labelled.labels, labelled.probs)
        axes.plot(fpr, tpr, color=colour, linestyle=linestyle, linewidth=1.6,
                  label=f"{run.name} ({run.metrics[split]['auroc']:.3f})")
        if not any(line.get_label() == "chance" for line in axes.get_lines()):
            axes.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8, label="chance")
        axes.set(xlabel="false positive rate", ylabel="true positive rate", aspect="equal", xlim=(0, 1),
                 ylim=(0, 1))
        axes.legend(fontsize=8, loc="lower right")

    return family_panels(runs, split, order, families, f"ROC by family, {split}", draw)


def draw_reliability_panels(runs: list[ModelRun], split: str, order: list[str], families: dict[str, str],
                            n_bins: int) -> Figure:
    """Reliability diagrams on one split, one panel per family (`family_panels`): per model, the fraction of
    hateful memes against the mean predicted P in each of `n_bins` equal-width bins, with its ECE."""

    def draw(axes, run: ModelRun, colour: str, linestyle: str) -> None:
        labelled = run.predictions[split].labelled
        bins = [b for b in calibration_bins(labelled.labels, labelled.probs, n_bins) if b["count"]]
        ece = run.metrics[split].get("ece")
        axes.plot([b["mean_proba"] for b in bins], [b["fraction_hateful"] for b in bins], marker="o",
                  markersize=4, color=colour, linestyle=linestyle, linewidth=1.4,
                  label=run.name if ece is None else f"{run.name} (ECE {ece:.3f})")
        if not any(line.get_label() == "calibrated" for line in axes.get_lines()):
            axes.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8, label="calibrated")
        axes.set(xlabel="mean predicted P(hateful)", ylabel="fraction hateful", aspect="equal", xlim=(0, 1),
                 ylim=(0, 1))
        axes.legend(fontsize=8, loc="upper left")

    return family_panels(runs, split, order, families, f"Reliability by family, {split}", draw)


def plot_roc(runs: list[ModelRun], split: str, order: list[str], families: dict[str, str], path: Path) -> None:
    """`draw_roc_panels`, saved to `path` (the test reads the figure's curves before saving)."""
    draw_roc_panels(runs, split, order, families).savefig(path)


SPLIT_MARKERS = ("o", "s", "^", "D")


def plot_auroc_by_split(runs: list[ModelRun], splits: list[str], order: list[str], path: Path) -> None:
    """`draw_auroc_by_split`, saved to `path`."""
    draw_auroc_by_split(runs, splits, order).savefig(path)


def draw_auroc_by_split(runs: list[ModelRun], splits: list[str], order: list[str]) -> Figure:
    """Every model's AUROC and 95% CI on each evaluation split: one row per model in the tables' order (grouped
    by family, best first), one marker, colour and small offset per split, chance marked."""
    by_name = {run.name: run for run in runs}
    names = [name for name in order if any(by_name[name].metrics.get(s, {}).get("auroc") is not None
                                           for s in splits)]
    figure = new_figure(9, 1.6 + 0.45 * len(names))
    axes = figure.add_subplot()
    y = np.arange(len(names))[::-1]
    offsets = np.linspace(-0.27, 0.27, len(splits)) if len(splits) > 1 else np.zeros(1)
    for k, split in enumerate(splits):
        rows = [(row, by_name[name].metrics.get(split, {})) for row, name in zip(y, names, strict=True)]
        rows = [(row, entry) for row, entry in rows if entry.get("auroc") is not None]
        x = np.array([entry["auroc"] for _, entry in rows])
        ci = np.array([entry.get("auroc_ci95") or [entry["auroc"]] * 2 for _, entry in rows]).reshape(-1, 2)
        axes.errorbar(x, np.array([row for row, _ in rows]) + offsets[k], xerr=np.abs(ci.T - x), capsize=2,
                      fmt=SPLIT_MARKERS[k % len(SPLIT_MARKERS)], markersize=6, color=f"C{k}", label=split)
    axes.axvline(0.5, color="k", linestyle="--", linewidth=1, label="chance (0.5)")
    axes.set(yticks=y, ylim=(-0.7, len(names) - 0.3), xlabel="AUROC (95% bootstrap CI)", title="AUROC by split")
    axes.set_yticklabels(names, fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=9, title="split")
    return figure


def plot_calibration(runs: list[ModelRun], split: str, order: list[str], families: dict[str, str], n_bins: int,
                     path: Path) -> None:
    """`draw_reliability_panels`, saved to `path`."""
    draw_reliability_panels(runs, split, order, families, n_bins).savefig(path)


# ----- error gallery


def error_cases(run: ModelRun, split: str, memes_dir: Path, size: int) -> list[dict]:
    """The `size` most confident false positives and false negatives at the model's dev-chosen threshold."""
    labelled = run.predictions[split].labelled
    threshold = run.metrics[split]["threshold"]
    memes = {m.id: m for m in read_split(memes_dir, split)}
    false_positive = np.flatnonzero((labelled.labels == 0) & (labelled.probs >= threshold))
    false_negative = np.flatnonzero((labelled.labels == 1) & (labelled.probs < threshold))
    chosen = [("false positive", i) for i in false_positive[np.argsort(-labelled.probs[false_positive])][:size]]
    chosen += [("false negative", i) for i in false_negative[np.argsort(labelled.probs[false_negative])][:size]]
    cases = []
    for kind, i in chosen:
        meme = memes.get(int(labelled.ids[i]))
        cases.append({"kind": kind, "id": int(labelled.ids[i]), "proba": float(labelled.probs[i]),
                      "label": int(labelled.labels[i]), "text": meme.text if meme else "",
                      "img": str(Path(memes_dir) / meme.img) if meme else None})
    return cases


def thumbnail(path: str | None, size: int):
    if path is None or not Path(path).exists():
        return None
    image = load_rgb(Path(path))
    image.thumbnail((size, size))
    return image


def plot_gallery(cases: list[dict], size: int, title: str, path: Path) -> None:
    columns = max(1, max(sum(c["kind"] == k for c in cases) for k in ("false positive", "false negative")))
    figure = new_figure(max(5.0, 2.4 * columns), 6.4)
    figure.suptitle(title)
    for row, kind in enumerate(("false positive", "false negative")):
        for col, case in enumerate(c for c in cases if c["kind"] == kind):
            axes = figure.add_subplot(2, columns, row * columns + col + 1)
            image = thumbnail(case["img"], size)
            if image is not None:
                axes.imshow(np.asarray(image))
            axes.set_title(f"{kind}\nid {case['id']}  P={case['proba']:.2f}", fontsize=8)
            axes.set_xlabel(textwrap.fill(textwrap.shorten(case["text"], 90), 28), fontsize=7)
            axes.set(xticks=[], yticks=[])
    figure.savefig(path)


# ----- the headline: the answer the report leads with


def headline_split(splits: dict) -> str | None:
    """The split the summary leads with: the first of HEADLINE_SPLITS that has labels."""
    return next((s for s in HEADLINE_SPLITS if splits.get(s, {}).get("best") is not None), None)


def rank_models(info: dict, families: dict[str, str]) -> list[dict]:
    """Every model with an AUROC on one split, best first, with its family and CI: the dot plot's rows."""
    ranking = [{"model": name, "family": families[name], "auroc": row["auroc"], "auroc_ci95": row.get("auroc_ci95")}
               for name, row in info["rows"].items() if row.get("auroc") is not None]
    return sorted(ranking, key=lambda r: (-r["auroc"], r["model"]))


def headline(splits: dict, families: dict[str, str], alpha: float) -> dict | None:
    """The best model on the headline split, its Holm-corrected DeLong tests against every other model scored
    there, and the unimodal models' AUROC gap to it; None when no evaluation split has labels.

    `families` maps every reported model to its family."""
    split = headline_split(splits)
    if split is None:
        return None
    info = splits[split]
    best = info["best"]
    ranking = rank_models(info, families)
    comparisons = []
    for entry in (r for r in ranking if r["model"] != best):
        delong = info["rows"][entry["model"]]["delong_vs_best"]
        p_holm = delong["p_holm"] if delong else None
        comparisons.append({"model": entry["model"], "auroc": entry["auroc"], "p_holm": p_holm,
                            "significant": p_holm is not None and p_holm <= alpha,
                            "per_seed": bool(delong and "p_seeds" in delong)})
    top = info["rows"][best]
    return {
        "split": split, "best": best, "auroc": top["auroc"], "auroc_ci95": top.get("auroc_ci95"), "alpha": alpha,
        "comparisons": comparisons, "ranking": ranking,
        "unimodal": [{"model": r["model"], "auroc": r["auroc"], "gap": top["auroc"] - r["auroc"]}
                     for r in ranking if r["family"] == UNIMODAL],
        "unscored": sorted(name for name in families if name not in {r["model"] for r in ranking}),
    }


def table_order(summary: dict) -> list[str]:
    """The models as the tables list them (`grouped_order` by the headline split's AUROC)."""
    auroc = {r["model"]: r["auroc"] for r in (summary["headline"] or {}).get("ranking", [])}
    return grouped_order(summary["models"], auroc, summary["families"])


def grouped_order(names: list[str], auroc: dict[str, float], families: dict[str, str]) -> list[str]:
    """Grouped by family, families ordered by their best model's AUROC, models within a family by theirs;
    models without an AUROC after those with one, ties by name. `families` may leave models out (`other`)."""
    def rank(name: str) -> tuple:
        return (name not in auroc, -auroc.get(name, 0.0), name)

    family_rank = {}
    for name in sorted(names, key=rank):
        family_rank.setdefault(families.get(name, OTHER), rank(name))
    return sorted(names, key=lambda n: (family_rank[families.get(n, OTHER)], rank(n)))


# ----- the summary


def summarise(runs: list[ModelRun], params: ReportParams, memes_dir: Path, record: dict, fine_grained: dict) -> dict:
    splits = {split: compare_split(runs, split) for split in SPLITS if any(split in r.predictions for r in runs)}
    families = {r.name: params.families.get(r.name, OTHER) for r in runs}
    galleries = {}
    for split in params.gallery_splits:
        best = splits.get(split, {}).get("best")
        if best is not None and (Path(memes_dir) / f"{split}.jsonl").exists():
            run = next(r for r in runs if r.name == best)
            galleries[split] = {"model": best, "cases": error_cases(run, split, memes_dir, params.gallery_size)}
    return {
        "title": TITLE, "models": [r.name for r in runs], "families": families, "splits": splits,
        "headline": headline(splits, families, params.alpha),
        "pairs": planned_comparisons(runs, params.pairs),
        "metrics_source": {r.name: r.metrics_source for r in runs},
        "published": published_beside_ours(runs, splits, record["params"]), "galleries": galleries,
        "extras": {r.name: [str(p) for p in r.extras] for r in runs if r.extras},
        "fine_grained": fine_grained, "provenance": record, "report_params": report_params_record(params),
    }


def planned_comparisons(runs: list[ModelRun], pairs: tuple[tuple[str, str], ...]) -> list[dict]:
    """DeLong of each pair's first model against its second, on every labelled evaluation split both scored;
    pairs naming a model this run lacks are left out."""
    by_name = {run.name: run for run in runs}
    result = []
    for first, second in pairs:
        if first not in by_name or second not in by_name:
            continue
        for split in (split for split in SPLITS if split != "train"):  # the models were fitted on train
            a, b = by_name[first].predictions.get(split), by_name[second].predictions.get(split)
            test = delong_against(b, a) if a is not None and b is not None else None
            if test is not None:
                result.append({"first": first, "second": second, "split": split,
                               "auroc_first": by_name[first].metrics.get(split, {}).get("auroc"),
                               "auroc_second": by_name[second].metrics.get(split, {}).get("auroc"), **test})
    return result


PAIRS_NOTE = ("Comparisons named in `report.pairs` before the run: a two-sided DeLong test of the first model "
              "against the second on the memes both scored, not adjusted for multiple comparisons.")


def pair_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    header = ["first", "second", "split", "AUROC first", "AUROC second", "difference", "DeLong p", "n"]
    return header, [[p["first"], p["second"], p["split"], fmt(p["auroc_first"]), fmt(p["auroc_second"]),
                     f"{p['difference']:+.3f}", fmt_p(p["p"]), str(p["n"])] for p in summary["pairs"]]


def report_params_record(params: ReportParams) -> dict:
    """`params` as plain data for summary.json (the loader makes `families` a read-only mapping, which
    `asdict` cannot copy)."""
    return {**asdict(replace(params, families={})), "families": dict(params.families)}


def category_matrix(summary: dict) -> tuple[list[str], np.ndarray] | None:
    """(models, their hate AUROC per protected category on CATEGORY_SPLIT, NaN where undefined), in the tables'
    order; None without fine-grained labels on that split."""
    models = summary["fine_grained"]["models"]
    names = [name for name in table_order(summary) if CATEGORY_SPLIT in models[name]["splits"]]
    if not names:
        return None
    values = [[models[name]["splits"][CATEGORY_SPLIT]["per_category"][c]["auroc"] for c in CATEGORIES]
              for name in names]
    return names, np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)


def plot_category_heatmap(names: list[str], values: np.ndarray, path: Path) -> None:
    """Models x protected categories, each cell its hate AUROC, coloured from 0.5 (chance, red) to 1 (green)."""
    figure = new_figure(1.6 + 1.2 * len(CATEGORIES), 1.2 + 0.4 * len(names))
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto")
    for (row, column), value in np.ndenumerate(values):
        axes.text(column, row, MISSING if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8)
    axes.set_xticks(range(len(CATEGORIES)), CATEGORIES)
    axes.set_yticks(range(len(names)), names, fontsize=9)
    axes.set_title(f"Hate AUROC per protected category, {CATEGORY_SPLIT}")
    figure.colorbar(image, ax=axes, label="AUROC (0.5: chance)")
    figure.savefig(path)


def write_headline_figure(summary: dict, params: ReportParams, plots: Path) -> tuple[str, Path] | None:
    """The dot plot the report leads with, and its caption; None when no evaluation split has labels."""
    if summary["headline"] is None:
        return None
    plots.mkdir(parents=True, exist_ok=True)
    path = plots / "headline.png"
    plot_headline(summary["headline"], family_colours(params.families), path)
    split = summary["headline"]["split"]
    caption = (f"AUROC with 95% bootstrap CI on {split}, best at the top, coloured by family. Look for where "
               "each family sits against the dashed chance line, and which intervals overlap the best model's "
               "(overlap alone is not a test: the DeLong tests above are).")
    return caption, path


def write_figures(runs: list[ModelRun], summary: dict, params: ReportParams, plots: Path) -> list[tuple[str, Path]]:
    """Every figure of the report into `plots`: (caption, path) in the report's order. matplotlib's drawing is
    pure Python, so the figures are drawn on every core (`run_forked`; 12 figures of the demo: ~10 s on one
    core of the 2-core machine, measured)."""
    plots.mkdir(parents=True, exist_ok=True)
    labelled = [s for s, info in summary["splits"].items() if info["best"] is not None]
    figures = []  # (caption, path, draw)
    evaluated = [split for split in labelled if split != "train"]  # fitted on train: its curves tell nothing
    order = table_order(summary)
    if evaluated:
        figures.append(("AUROC on each evaluation split with 95% bootstrap CIs, one row per model (grouped by "
                        "family), one marker per split: look for rows that sit on the dashed chance line on every "
                        "split, and for unseen markers that fall behind the seen ones", plots / "auroc.png",
                        functools.partial(plot_auroc_by_split, runs, evaluated, order, plots / "auroc.png")))
    for split in evaluated:
        path = plots / f"roc_{split}.png"
        figures.append((f"ROC curves, {split}, one panel per family: the nearer a curve comes to the top left "
                        "corner the better; a curve on the grey diagonal is at chance", path,
                        functools.partial(plot_roc, runs, split, order, summary["families"], path)))
    for split in evaluated:
        path = plots / f"calibration_{split}.png"
        figures.append((f"Reliability diagrams, {split}, one panel per family: points on the diagonal are "
                        "calibrated; points below it mean the model says hateful more often than memes are", path,
                        functools.partial(plot_calibration, runs, split, order, summary["families"],
                                          params.calibration_bins, path)))
    matrix = category_matrix(summary) if summary["fine_grained"]["annotations"] else None
    if matrix is not None:
        path = plots / "fine_grained_categories.png"
        figures.append((f"Hate AUROC per protected category on {CATEGORY_SPLIT} (WOAH 2021 labels), one row per "
                        "model: look for a column that is red across models (a group every model protects "
                        "badly) and for rows that are uneven", path,
                        functools.partial(plot_category_heatmap, *matrix, path)))
    for split, gallery in summary["galleries"].items():
        path = plots / f"errors_{split}.png"
        figures.append((f"Error gallery, {split} ({gallery['model']}): its most confident mistakes; look for what "
                        "they have in common", path,
                        functools.partial(plot_gallery, gallery["cases"], params.thumbnail_px,
                                          f"{gallery['model']} on {split}: confident errors", path)))
    run_forked([draw for _, _, draw in figures])
    return [(caption, path) for caption, path, _ in figures]


# ----- rendering


def fmt(value, digits: int = 3) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return MISSING
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def auroc_cell(entry: dict | None, seeds: bool = True) -> str:
    """AUROC [95% CI] of the model's run; with several seeds (and `seeds`), their mean ± sd after it."""
    if not entry or entry.get("auroc") is None:
        return MISSING if not entry else f"{MISSING} ({entry.get('note', 'not defined')})"
    ci = entry.get("auroc_ci95")
    cell = f"{entry['auroc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
    over = entry.get("seeds") if seeds else None
    return cell + (f"; {over['runs']} seeds {over['mean']:.3f} ± {over['sd']:.3f}" if over else "")


def headline_lines(summary: dict) -> list[str]:
    """The answer the report opens with, as markdown: two sentences, then a short list."""
    top = summary["headline"]
    if top is None:
        return ["No evaluation split has labels, so no model can be ranked."]
    split, best, comparisons = top["split"], top["best"], top["comparisons"]
    beaten = [c for c in comparisons if c["significant"]]
    lines = [f"On {split}, `{best}` has the highest AUROC: {auroc_cell(top)} (95% bootstrap CI)."]
    if comparisons:
        lines[0] += (f" By DeLong test with Holm's correction over its {len(comparisons)} comparisons, it is "
                     f"significantly better (adjusted p ≤ {top['alpha']}) than {len(beaten)} of the "
                     f"{len(comparisons)} other models scored there.")
        if any(c["per_seed"] for c in comparisons):
            lines[0] += " Where seeds were repeated, a model counts as below it only if it is at every seed."
    lines.append("")
    if beaten:
        lines.append("- significantly below it: " + comparison_list(beaten))
    if len(beaten) < len(comparisons):
        lines.append("- not significantly different: " + comparison_list([c for c in comparisons
                                                                          if not c["significant"]]))
    if top["unimodal"]:
        lines.append("- unimodal models: " + ", ".join(f"`{u['model']}` {u['auroc']:.3f} ({u['gap']:.3f} below)"
                                                        for u in top["unimodal"]))
    else:
        lines.append("- no unimodal model was evaluated on this split")
    if top["unscored"]:
        lines.append(f"- not scored on {split}: " + ", ".join(f"`{name}`" for name in top["unscored"]))
    return lines


def comparison_list(comparisons: list[dict]) -> str:
    """`model` AUROC (Holm p ...), comma-separated, for one line of the summary's list."""
    return ", ".join(f"`{c['model']}` {c['auroc']:.3f} (Holm p {fmt_p(c['p_holm'])})" for c in comparisons)


def table_splits(summary: dict) -> list[str]:
    """The splits as table columns and sections: the official order, with train last."""
    return sorted(summary["splits"], key=lambda split: split == "train")


def overview_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """AUROC [95% CI] of every model on every split, in `table_order`; the best of each split starred."""
    splits = table_splits(summary)
    rows = []
    for name in table_order(summary):
        cells = []
        for split in splits:
            info = summary["splits"][split]
            entry = info["rows"].get(name)
            cell = auroc_cell(entry) if entry or name not in info["unlabelled"] else "no labels"
            cells.append(f"★ {cell}" if info["best"] == name else cell)
        rows.append([name, summary["families"][name]] + cells)
    return ["model", "family"] + splits, rows


def split_rows(summary: dict, split: str) -> tuple[list[str], list[list[str]]]:
    info = summary["splits"][split]
    header = ["model", "AUROC [95% CI]", "seed-averaged AUROC [95% CI]", "accuracy", "F1", "threshold",
              "acc @0.5", "F1 @0.5", "ECE", "n", "DeLong p vs best", "Holm p"]
    rows = []
    for name in table_order(summary):
        entry = info["rows"].get(name)
        if entry is None:
            rows.append([name, MISSING, MISSING, MISSING, MISSING, MISSING, MISSING, MISSING, MISSING,
                         str(info["unlabelled"].get(name, {}).get("n", MISSING)), MISSING, MISSING])
            continue
        best = info["best"] == name
        delong = entry.get("delong_vs_best") or {}
        tests = ["best", "best"] if best else [fmt_p(delong.get("p")), fmt_p(delong.get("p_holm"))]
        averaged = (entry.get("seeds") or {}).get("averaged")
        averaged_cell = MISSING if averaged is None else auroc_cell({"auroc": averaged["auroc"],
                                                                      "auroc_ci95": averaged["ci"]})
        rows.append([f"★ {name}" if best else name, auroc_cell(entry), averaged_cell,
                     fmt(entry.get("accuracy")), fmt(entry.get("f1")), fmt(entry.get("threshold")),
                     fmt(entry.get("accuracy_at_0.5")), fmt(entry.get("f1_at_0.5")), fmt(entry.get("ece")),
                     str(entry.get("n", MISSING)), *tests])
    return header, rows


def published_beside_ours(runs: list[ModelRun], splits: dict, resolved_params: dict) -> list[dict]:
    """Each published row with the model of this run that reproduces it (REPRODUCES) and that model's AUROC
    on the row's split, ×100 as the papers print it; None where no model of the run reproduces the row."""
    sections = resolved_params.get("train", {})
    ours = {}
    for run in runs:
        row = REPRODUCES.get(run.name, lambda model, params: None)(sections.get(run.name, {}).get("model", {}),
                                                                   resolved_params)
        if row is not None:
            ours.setdefault(row, run.name)
    result = []
    for published in PUBLISHED:
        name = ours.get(published.model)
        entry = splits.get(published.split, {}).get("rows", {}).get(name) if name else None
        auroc = entry.get("auroc") if entry else None
        differs = DIFFERS.get(published.model, "") if name else ""
        if callable(differs):
            differs = differs(resolved_params, name)
        result.append({**asdict(published), "ours": name, "ours_auroc": None if auroc is None else 100 * auroc,
                       "differs": differs})
    return result


def published_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    header = ["model (published)", "split", "AUROC ×100", "accuracy %", "source", "ours (this run)",
              "ours: AUROC ×100", "how ours differs", "note"]
    return header, [[p["model"], p["split"], f"{p['auroc']:.2f}", fmt(p["accuracy"], 2), p["source"],
                     p["ours"] or "none", fmt(p["ours_auroc"], 2), p["differs"], p["note"]]
                    for p in summary["published"]]


def published_caveat(summary: dict) -> str:
    """What the published table may be read for, given the data this run used."""
    source = summary["provenance"]["params"].get("fetch", {}).get("source", "unknown")
    papers = ("The published numbers are the papers' own on the real Hateful Memes data (×100), copied from the "
              "cited papers; ViLBERT and ViLBERT CC (Kiela et al. 2020) have no implementation in transformers "
              "and are not reproduced here.")
    if source == "synthetic":
        return (f"{papers} This run is the demo: its numbers come from synthetic memes and tiny models, so the "
                f"'ours' column shows what each implementation scores on that world and says nothing about "
                f"how close it comes to the paper.")
    return (f"{papers} This run read the {source} data: the 'ours' column is our reproduction, one seed, and "
            f"'how ours differs' lists where our setup departs from the published one.")


# ----- the WOAH 2021 fine-grained labels (hatememes.shared_task)

FINE_GRAINED_TITLE = "Fine-grained labels (WOAH 2021)"
CATEGORY_SPLIT = "dev_unseen"  # per-group results: the test splits have no fine-grained labels
WEAKEST_SHOWN = 2  # each model's lowest categories named in the per-category table
WOAH_SOURCE = ("WOAH 2021 shared task, facebookresearch/fine_grained_hateful_memes README: its 'independent' "
               "baseline scored by its scripts/scorer.py")
WOAH_BASELINE = {"model": "published baseline (independent)", "split": "dev_seen", "source": WOAH_SOURCE,
                 "hate": {"roc_auc": 0.7032, "f1_micro": 0.6468}, "pc": {"roc_auc": 0.8512, "f1_micro": 0.6210},
                 "attack": {"roc_auc": 0.8709, "f1_micro": 0.6128}}
NO_FINE_GRAINED = ("This run's memes have no fine-grained labels: to add them, set params `fetch.fine_grained` to "
                   "the folder of the shared task's annotations (its data/annotations/) and rerun fetch.")
TEST_SPLITS_NOTE = ("The test splits have no fine-grained labels, so per-group results are on dev_unseen (early "
                    "stopping reads dev_seen).")
SHARED_TASK_NOTE = ("Scored as the shared task's scripts/scorer.py: per task, the micro-averaged AUROC and F1 (scores "
                    "> 0.5) over the classes that are some meme's first gold label. hate (scorer) is the micro AUROC "
                    "over the two columns not_hateful = 1 − P(hateful) and hateful = P(hateful), not the binary AUROC "
                    "of the tables above. pc and attack need a model with fine-grained heads "
                    "(predictions/fine_grained/<split>.jsonl); — for the others.")
BASELINE_NOTE = ("The last row is not a model of this run: it is the shared task's published baseline on dev_seen "
                 f"({WOAH_SOURCE}). Its hate score is the scorer's micro-AUROC over the two binarised columns "
                 "not_hateful and hateful, so compare it with our 'hate roc_auc (scorer)' column, not with our binary "
                 "AUROC. Its predictions file holds 504 rows for dev_seen's 500 memes (four memes twice), and the "
                 "scorer counts those twice.")


PER_LABEL_NOTE = ("The scorer's micro-AUROC pools every (meme, label) pair, so predicting each label's frequency "
                  "alone scores high on it (the empty labels are most memes'). The mean over the labels of each "
                  "label's own AUROC does not reward that: the class priors score 0.5 on it.")


def fine_grained_results(eval_dir: Path, memes_dir: Path, runs: list[ModelRun]) -> dict:
    """Every model's `evaluate_fine_grained` on eval/<name>/predictions/, with the task's published baseline."""
    models = {run.name: evaluate_fine_grained(memes_dir, Path(eval_dir) / run.name / "predictions") for run in runs}
    first = next(iter(models.values()))
    return {"annotations": first["annotations"], "note": first["note"], "models": models, "published": WOAH_BASELINE}


def category_rows(summary: dict) -> tuple[list[str], list[list[str]]] | None:
    """Each model's hate AUROC per protected category on CATEGORY_SPLIT and its weakest categories; None
    when that split has no fine-grained labels."""
    models = summary["fine_grained"]["models"]
    entries = {name: models[name]["splits"].get(CATEGORY_SPLIT) for name in table_order(summary)}
    if not any(entries.values()):
        return None
    counts = next(entry for entry in entries.values() if entry)["per_category"]
    header = ["model"] + [f"{c} (n={counts[c]['n_hateful']})" for c in CATEGORIES] + ["weakest (lowest first)"]
    rows = []
    for name, entry in entries.items():
        if entry is None:
            rows.append([name] + [MISSING] * (len(CATEGORIES) + 1))
            continue
        per_category = entry["per_category"]
        weakest = ", ".join(f"{c} {per_category[c]['auroc']:.3f}" for c in entry["weakest"][:WEAKEST_SHOWN])
        rows.append([name] + [fmt(per_category[c]["auroc"]) for c in CATEGORIES] + [weakest or MISSING])
    return header, rows


def category_caption(summary: dict) -> str:
    entry = next(m["splits"][CATEGORY_SPLIT] for m in summary["fine_grained"]["models"].values()
                 if CATEGORY_SPLIT in m["splits"])
    n_benign = next(iter(entry["per_category"].values()))["n_benign"]
    return (f"Hate AUROC of P(hateful) on {CATEGORY_SPLIT} per protected category: the category's hateful memes "
            f"(n in the header; a meme that attacks two categories counts in both) against all {n_benign} benign "
            f"memes; — where a category has no hateful meme. The last column names each model's "
            f"{WEAKEST_SHOWN} lowest categories.")


def shared_task_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The shared task's scores of every model on each annotated dev split, then its published baseline."""
    header = ["model", "split", "hate roc_auc (scorer)", "hate f1_micro", "pc roc_auc", "pc f1_micro",
              "attack roc_auc", "attack f1_micro"]
    models = summary["fine_grained"]["models"]
    rows = [[name, split] + task_cells(entry["shared_task"])
            for name in table_order(summary) for split, entry in models[name]["splits"].items()]
    published = summary["fine_grained"]["published"]
    return header, rows + [[published["model"], published["split"]] + task_cells(published)]


def per_label_rows(summary: dict) -> tuple[list[str], list[list[str]]] | None:
    """The mean per-label AUROC of pc and attack of every model with fine-grained heads, on each annotated dev
    split; None when no model has heads."""
    models = summary["fine_grained"]["models"]
    rows = [[name, split, fmt(entry["per_label"]["pc"]["macro"], 4), fmt(entry["per_label"]["attack"]["macro"], 4)]
            for name in table_order(summary) for split, entry in models[name]["splits"].items()
            if entry.get("per_label")]
    return (["model", "split", "pc mean per-label AUROC", "attack mean per-label AUROC"], rows) if rows else None


def task_cells(scores: dict) -> list[str]:
    """roc_auc and f1_micro of hate, pc and attack, 4 digits as the task's README prints them."""
    return [fmt((scores[task] or {}).get(key), 4)
            for task in ("hate", "pc", "attack") for key in ("roc_auc", "f1_micro")]


def shared_task_intro(summary: dict) -> str:
    """SHARED_TASK_NOTE, after the number of annotated memes per split (and the demo's caveat)."""
    sizes = {split: entry["shared_task"]["hate"]["n"]
             for model in summary["fine_grained"]["models"].values() for split, entry in model["splits"].items()}
    text = "Annotated memes: " + ", ".join(f"{split} {n}" for split, n in sizes.items()) + ". " + SHARED_TASK_NOTE
    if summary["provenance"]["params"].get("fetch", {}).get("source") == "synthetic":
        text += " This run is the demo: its labels are the synthetic world's, so the published row is no yardstick."
    return text


def fine_grained_blocks(summary: dict) -> list[tuple[str, str | tuple]]:
    """The section as ("text", sentence), ("heading", title) and ("table", (header, rows, id)) blocks, which
    the markdown and the HTML render each their own way."""
    if not summary["fine_grained"]["annotations"]:
        return [("text", NO_FINE_GRAINED)]
    blocks = [("text", TEST_SPLITS_NOTE)]
    categories = category_rows(summary)
    if categories is not None:
        blocks += [("heading", f"Hate AUROC per protected category, {CATEGORY_SPLIT}"),
                   ("text", category_caption(summary)), ("table", (*categories, "fine-grained-categories"))]
    blocks += [("heading", "The shared task's scores"), ("text", shared_task_intro(summary)),
               ("table", (*shared_task_rows(summary), "shared-task")), ("text", BASELINE_NOTE)]
    per_label = per_label_rows(summary)
    if per_label is not None:
        blocks += [("heading", "Each label on its own"), ("text", PER_LABEL_NOTE),
                   ("table", (*per_label, "fine-grained-per-label"))]
    return blocks


def fine_grained_markdown(summary: dict) -> list[str]:
    parts = []
    for kind, content in fine_grained_blocks(summary):
        if kind == "table":
            parts += [md_table(*content[:2]), ""]
        else:
            parts += [f"### {content}" if kind == "heading" else content, ""]
    return parts


def fine_grained_html(summary: dict) -> list[str]:
    render = {"heading": lambda text: f"<h3>{html.escape(text)}</h3>", "text": lambda text: f"<p>{html_text(text)}</p>",
              "table": lambda table: html_table(*table)}
    return [render[kind](content) for kind, content in fine_grained_blocks(summary)]


DELONG_NOTE = ("★ marks the best AUROC of each split. DeLong p: two-sided DeLong test (fast algorithm of Sun & "
               "Xu 2014) of each model's AUROC against the best model's, on the memes both scored; Holm p: "
               "the same p-values adjusted by Holm's step-down method over the split's comparisons. Rows are "
               "grouped by family and sorted by the headline split's AUROC. With several training seeds a "
               "cell adds their mean ± sd (sample sd) after the model's own AUROC and CI; the seed-averaged "
               "predictions' AUROC and CI are in each split's table. " + SEED_RULE + " "
               "Accuracy and F1 use the threshold chosen on the dev split (see `threshold`); the @0.5 columns "
               "use 0.5.")


def split_note(summary: dict, split: str) -> str:
    """One line under a split's heading: its size and class balance, or why it has no metrics."""
    info = summary["splits"][split]
    if not info["rows"]:
        return "No labels in this split: predictions only, no metrics."
    entry = next(iter(info["rows"].values()))
    return f"{entry['n']} labelled memes, {entry.get('n_hateful', MISSING)} hateful."


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows])


# ----- the results table: eval/summary.md, copied into the README by `python -m hatememes.readme_results`

RESULT_SPLITS = ("dev_seen", "dev_unseen", "test_seen", "test_unseen")
RESULT_INTERVALS = ("test_unseen",)  # the splits whose 95% interval the short table shows (the report: every one)
NO_RUN = ("_No committed run yet (no `eval/*/metrics.json`): run `dvc repro`, then "
          "`python -m hatememes.readme_results`._")


def results_table(metrics: dict[str, dict], families: dict[str, str] | None = None,
                  intervals: tuple[str, ...] = RESULT_INTERVALS) -> str:
    """AUROC of each model on each official split [95% bootstrap CI on `intervals`], as markdown: the model's
    own run (the report adds the mean ± sd of models trained from several seeds). Rows as the report's tables
    order them: grouped by family (`families`; default the report's), best first on the headline split. This
    is eval/summary.md, which the README copies (kept short: the other splits' intervals are in the report).

    `metrics` maps a model name to its metrics.json content (DESIGN §7); a split it lacks shows as —."""
    if not metrics:
        return NO_RUN + "\n"
    split = next((s for s in HEADLINE_SPLITS if any((m.get(s) or {}).get("auroc") is not None
                                                   for m in metrics.values())), None)
    auroc = {name: entry[split]["auroc"] for name, entry in metrics.items()
             if split is not None and (entry.get(split) or {}).get("auroc") is not None}
    order = grouped_order(list(metrics), auroc, FAMILIES if families is None else families)
    rows = [[f"`{name}`"] + [auroc_cell(point_or_interval(metrics[name].get(split), split in intervals), seeds=False)
                             for split in RESULT_SPLITS] for name in order]
    return md_table(["model", *RESULT_SPLITS], rows) + "\n"


def point_or_interval(entry: dict | None, interval: bool) -> dict | None:
    return entry if interval or not entry else {**entry, "auroc_ci95": None}


def results_markdown(eval_dir: Path, models: tuple[str, ...] = (), families: dict[str, str] | None = None,
                     intervals: tuple[str, ...] = RESULT_INTERVALS) -> str:
    """`results_table` from the eval/<name>/metrics.json files alone (no predictions needed), of `models`
    (params.yaml `report.models`; empty: every model with a metrics.json; one without it is left out)."""
    paths = {p.parent.name: p for p in Path(eval_dir).glob("*/metrics.json")}
    names = [n for n in models if n in paths] if models else sorted(paths)
    return results_table({n: json.loads(paths[n].read_text(encoding="utf-8")) for n in names}, families, intervals)


def render_markdown(summary: dict, lead: tuple[str, Path] | None, figures: list[tuple[str, Path]],
                    out_dir: Path) -> str:
    parts = [f"# {TITLE}", "", "## Summary", "", *headline_lines(summary), ""]
    if lead is not None:
        parts += [f"![AUROC of every model on {summary['headline']['split']}]"
                  f"({os.path.relpath(lead[1], out_dir)})", "", f"_{lead[0]}_", ""]
    parts += ["## AUROC of every model on every split", "", md_table(*overview_rows(summary)), "", DELONG_NOTE, ""]
    for split in table_splits(summary):
        parts += [f"### {split}", "", split_note(summary, split), "", md_table(*split_rows(summary, split)), ""]
    if summary["pairs"]:
        parts += ["## Planned comparisons", "", PAIRS_NOTE, "", md_table(*pair_rows(summary)), ""]
    parts += ["## Published numbers beside ours", "", published_caveat(summary), "",
              md_table(*published_rows(summary)), ""]
    parts += [f"## {FINE_GRAINED_TITLE}", "", *fine_grained_markdown(summary)]
    parts += ["## Figures", ""] + [f"![{c}]({os.path.relpath(p, out_dir)})\n" for c, p in figures]
    for split, gallery in summary["galleries"].items():
        rows = [[c["kind"], str(c["id"]), f"{c['proba']:.3f}", str(c["label"]), c["text"]] for c in gallery["cases"]]
        parts += [f"## Error gallery: {gallery['model']} on {split}", "",
                  md_table(["kind", "id", "P(hateful)", "label", "text"], rows), ""]
    for name, paths in summary["extras"].items():
        parts += [f"## Extra figures: {name}", ""] + [extra_markdown(Path(p), out_dir) for p in paths]
    parts += ["## Provenance", "", *provenance_lines(summary)]
    return "\n".join(parts) + "\n"


def extra_markdown(path: Path, out_dir: Path) -> str:
    caption = extra_caption(path)
    if path.suffix == ".png":
        return f"![{path.name}]({os.path.relpath(path, out_dir)})\n\n_{caption}_\n"
    table = extra_table(path)
    if table is not None:
        return f"{md_table(*table)}\n\n_{caption}_\n"
    return f"`{path.name}`\n\n```json\n{path.read_text(encoding='utf-8')[:4000]}\n```\n"


def provenance_lines(summary: dict) -> list[str]:
    record = summary["provenance"]
    lines = [f"- resolved params sha256: `{record['params_sha256']}`"]
    if record["manifest"]:
        manifest = record["manifest"]
        lines.append(f"- data manifest sha256: `{manifest['sha256']}` (source: {manifest['source']})")
        lines += [f"  - {s}: {i.get('count')} memes, {i.get('hateful')} hateful, sha256 `{i.get('sha256')}`"
                  for s, i in manifest["splits"].items()]
    lines += [f"- models/{n}/params.json sha256: `{m['sha256']}`" for n, m in record["model_params"].items()]
    lines += [f"- {n} metrics: {s}" for n, s in summary["metrics_source"].items()]
    return lines


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } tr.best td { font-weight: bold; background: #eef7ee; }
.caveat { background: #fff6e0; border-left: 4px solid #e0a000; padding: 0.5em 1em; }
figure { display: inline-block; margin: 0.5em; } figcaption, p.caption { font-size: 0.85em; color: #555; }
img.plot { max-width: 100%; } img.thumb { max-width: 160px; } pre { background: #f7f7f7; padding: 0.5em; }
"""


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def html_table(header: list[str], rows: list[list[str]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        ('<tr class="best">' if row[0].startswith("★") else "<tr>") + "".join(html_cell(c) for c in row) + "</tr>"
        for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def html_cell(text: str) -> str:
    return f"<td><strong>{html.escape(text)}</strong></td>" if text.startswith("★") else f"<td>{html.escape(text)}</td>"


def html_text(text: str) -> str:
    """Escaped text with markdown `code` spans as <code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def html_gallery(gallery: dict, size: int) -> str:
    rows = []
    for case in gallery["cases"]:
        image = thumbnail(case["img"], size)
        cell = MISSING
        if image is not None:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85)
            cell = f'<img class="thumb" alt="meme {case["id"]}" src="{data_uri(buffer.getvalue(), "image/jpeg")}">'
        rows.append(f"<tr><td>{cell}</td><td>{case['kind']}</td><td>{case['id']}</td><td>{case['proba']:.3f}</td>"
                    f"<td>{case['label']}</td><td>{html.escape(case['text'])}</td></tr>")
    head = "<tr><th>meme</th><th>kind</th><th>id</th><th>P(hateful)</th><th>label</th><th>text</th></tr>"
    return f"<table class=\"gallery\">{head}{''.join(rows)}</table>"


def html_figure(caption: str, path: Path) -> str:
    return (f'<figure><img class="plot" alt="{html.escape(caption)}" src="{data_uri(path.read_bytes())}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def html_summary(summary: dict, lead: tuple[str, Path] | None) -> list[str]:
    """The summary's sentences as a paragraph, its list as a list, then the lead figure."""
    lines = headline_lines(summary)
    items = [line.removeprefix("- ") for line in lines if line.startswith("- ")]
    body = ['<h2 id="summary">Summary</h2>', f"<p>{html_text(lines[0])}</p>"]
    if items:
        body.append("<ul>" + "".join(f"<li>{html_text(item)}</li>" for item in items) + "</ul>")
    return body + ([html_figure(*lead)] if lead else [])


def html_extra(path: Path) -> str:
    caption = extra_caption(path)
    if path.suffix == ".png":
        return html_figure(caption, path)
    table = extra_table(path)
    if table is not None:
        return f"{html_table(*table, path.stem)}<p class=\"caption\">{html.escape(caption)}</p>"
    return f"<h4>{html.escape(path.name)}</h4><pre>{html.escape(path.read_text(encoding='utf-8')[:4000])}</pre>"


def render_html(summary: dict, lead: tuple[str, Path] | None, figures: list[tuple[str, Path]],
                params: ReportParams) -> str:
    body = [f"<h1>{html.escape(TITLE)}</h1>", *html_summary(summary, lead),
            "<h2 id=\"overview\">AUROC of every model on every split</h2>",
            html_table(*overview_rows(summary), "overview"), f"<p>{html_text(DELONG_NOTE)}</p>"]
    for split in table_splits(summary):
        body += [f"<details><summary>{split}: every metric, DeLong tests</summary>",
                 f"<p>{html_text(split_note(summary, split))}</p>",
                 html_table(*split_rows(summary, split), f"split-{split}"), "</details>"]
    if summary["pairs"]:
        body += ["<h2 id=\"pairs\">Planned comparisons</h2>", f"<p>{html_text(PAIRS_NOTE)}</p>",
                 html_table(*pair_rows(summary), "pairs")]
    body += ["<h2 id=\"published\">Published numbers beside ours</h2>",
             f"<p class=\"caveat\">{html.escape(published_caveat(summary))}</p>",
             html_table(*published_rows(summary), "published")]
    body += [f"<h2 id=\"fine-grained\">{html.escape(FINE_GRAINED_TITLE)}</h2>", *fine_grained_html(summary)]
    body += ["<h2 id=\"figures\">Figures</h2>"] + [html_figure(c, p) for c, p in figures]
    for split, gallery in summary["galleries"].items():
        body += [f"<h2>Error gallery: {html.escape(gallery['model'])} on {split}</h2>",
                 html_gallery(gallery, params.thumbnail_px)]
    for name, paths in summary["extras"].items():
        body += [f"<h2>Extra figures: {html.escape(name)}</h2>"] + [html_extra(Path(p)) for p in paths]
    record = summary["provenance"]
    lines = [f"<li>{html_text(line.lstrip('- '))}</li>" for line in provenance_lines(summary)]
    body += ["<h2 id=\"provenance\">Provenance</h2><ul>", *lines, "</ul>"]
    resolved = html.escape(json.dumps(record["params"], indent=2, default=str))
    body.append(f"<details><summary>resolved params</summary><pre>{resolved}</pre></details>")
    for name, model in record["model_params"].items():
        body.append(f"<details><summary>models/{html.escape(name)}/params.json</summary>"
                    f"<pre>{html.escape(json.dumps(model['params'], indent=2))}</pre></details>")
    policy = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{policy}"><title>{html.escape(TITLE)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def build_report(eval_dir: Path, memes_dir: Path, out_dir: Path, params: ReportParams,
                 resolved_params: dict, models_dir: Path | None = None) -> dict:
    """Write report.md, report.html, summary.json, summary.md and plots/ into `out_dir`; return the summary."""
    out_dir = Path(out_dir)
    runs = [load_run(eval_dir, name, params) for name in discover_models(eval_dir, params.models)]
    if not runs:
        raise FileNotFoundError(f"{eval_dir}: no eval/<model>/predictions/ folders to report")
    record = provenance(memes_dir, models_dir, [r.name for r in runs], resolved_params)
    summary = summarise(runs, params, memes_dir, record, fine_grained_results(eval_dir, memes_dir, runs))
    lead = write_headline_figure(summary, params, out_dir / "plots")
    figures = write_figures(runs, summary, params, out_dir / "plots")
    (out_dir / "report.md").write_text(render_markdown(summary, lead, figures, out_dir), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(summary, lead, figures, params), encoding="utf-8")
    (out_dir / "summary.md").write_text(results_table({r.name: r.metrics for r in runs}, params.families),
                                        encoding="utf-8")
    summary["plots"] = [str(p.relative_to(out_dir)) for _, p in ([lead] if lead else []) + figures]
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return summary
