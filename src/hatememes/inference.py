"""Load a trained model folder and score memes with it, whatever the model's kind.

    model, name = load_model("models/clip_fusion")       # the class is named in models/<name>/model.json
    batch_size = eval_batch_size("models/clip_fusion")   # train.<name>.loop.eval_batch_size in its params.json
    ids, probs, fine = score(model, items, batch_size)   # torch models via Accelerate, fitted ones directly
    predictions, fine = score_splits(model, "data/memes", "data/features", batch_size)   # {split: Predictions}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from hatememes.data.readers import MemeItems, feature_inputs, load_items
from hatememes.files import read_json
from hatememes.metrics import Predictions
from hatememes.models import get_model_class


def load_model(directory: Path):
    """(model, name) from a folder written by the train stage."""
    directory = Path(directory)
    if not (directory / "model.json").is_file():
        raise FileNotFoundError(f"{directory}: no complete trained model (model.json, written last, is missing; "
                                "run the train stage)")
    name = read_json(directory / "model.json")["name"]
    model = get_model_class(name).from_pretrained(directory)
    if isinstance(model, nn.Module):
        model.eval()
    return model, name


def eval_batch_size(directory: Path, default: int = 64) -> int:
    """A torch model's scoring batch, `train.<name>.loop.eval_batch_size` in the params.json its folder
    records (what trained it, and what the train stage scored every split with); `default` for
    a fitted model, which scores its own way."""
    from hatememes.params import section
    from hatememes.training import LoopParams

    directory = Path(directory)
    name = read_json(directory / "model.json")["name"]
    params = read_json(directory / "params.json")
    if "loop" not in params["train"][name]:
        return default
    return section({**params, "_sources": [str(directory / "params.json")]}, f"train.{name}.loop",
                   LoopParams).eval_batch_size


def score(model, items: MemeItems, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(ids, P(hateful), the fine-grained heads' probabilities (N, C) or None) in the order of `items`; a torch
    model's `batch_size` (global, split between the processes) halves while it runs out of memory."""
    if isinstance(model, nn.Module):
        from hatememes.training import predict_all

        return predict_all(model, items, batch_size=batch_size)
    probs = np.asarray(model.predict_proba([items[i] for i in range(len(items))]), dtype=np.float64)
    if probs.shape != (len(items),):
        raise RuntimeError(f"{type(model).__name__}.predict_proba returned shape {probs.shape} for {len(items)} memes")
    return np.asarray(items.ids), probs, None


def score_splits(model, memes: Path, features_dir: Path, batch_size: int = 64
                 ) -> tuple[dict[str, Predictions], dict[str, np.ndarray]]:
    """Every split of the memes' manifest, scored in the manifest's order; each split's ids must come back
    in the split file's order. Also {split: fine-grained probabilities (N, C)}, empty for a model without
    fine-grained heads."""
    memes, features_dir = Path(memes), Path(features_dir)
    features = {key: features_dir / key for key in feature_inputs(model.inputs)}
    predictions, fine_grained = {}, {}
    for split in read_json(memes / "manifest.json")["splits"]:
        items = load_items(memes, features, split, model.inputs)
        ids, probs, fine = score(model, items, batch_size=batch_size)
        if ids.tolist() != items.ids:
            raise RuntimeError(f"{type(model).__name__} on {split}: scored ids differ from {memes / split}.jsonl")
        predictions[split] = Predictions(ids, probs, np.asarray(items.labels))
        if fine is not None:
            fine_grained[split] = fine
    return predictions, fine_grained
