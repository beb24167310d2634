"""Score new memes with any trained model: prints P(hateful).

    python pipelines/predict.py --model models/clip_fusion --image meme.png --text "look at this"
    python pipelines/predict.py --model models/mmbt --jsonl new_memes.jsonl     # {"img", "text"} a line

Models on cached features get them computed here with the extractor the model was trained with (its
params.json), so a meme scores exactly as it would inside the pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from hatememes.data.memes import Meme, load_rgb
from hatememes.data.readers import FEATURE_TENSORS, MemeItems
from hatememes.features import FeaturesParams, build_extractor
from hatememes.files import read_json
from hatememes.inference import load_model, score
from hatememes.params import from_dict


def read_memes(args) -> tuple[Path, list[Meme]]:
    if args.jsonl:
        lines = args.jsonl.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        memes = [Meme(id=r.get("id", i), img=r["img"], text=r["text"]) for i, r in enumerate(records)]
        return args.jsonl.parent, memes
    return args.image.parent, [Meme(id=0, img=args.image.name, text=args.text)]


def compute_features(model_dir: Path, inputs, root: Path, memes: list[Meme]) -> dict[str, torch.Tensor]:
    """The cached-feature rows these memes would have, from the extractors named in the model's params."""
    params = from_dict(FeaturesParams, read_json(model_dir / "params.json")["features"], str(model_dir))
    features = {}
    for name in inputs:
        if name == "image":
            continue
        torch.manual_seed(0)
        extractor = build_extractor(name, params)
        batch = [extractor.preprocess(load_rgb(root / meme.img), meme.text) for meme in memes]
        stacked = {key: torch.stack([inputs[key] for inputs in batch]) for key in batch[0]}
        with torch.inference_mode():
            rows = extractor.encode(stacked)
        features.update({key: rows[stored].float() for key, stored in FEATURE_TENSORS[name].items()})
    return features


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained model folder (models/NAME)")
    parser.add_argument("--image", type=Path, help="the meme's image")
    parser.add_argument("--text", help="the text written on it")
    parser.add_argument("--jsonl", type=Path, help="several memes: {'img': path relative to the file, 'text'}")
    args = parser.parse_args(argv)
    if not args.jsonl and not (args.image and args.text is not None):
        parser.error("give --image and --text, or --jsonl")
    model, name = load_model(args.model)
    root, memes = read_memes(args)
    features = compute_features(args.model, model.inputs, root, memes)
    items = MemeItems(root, memes, features, with_images="image" in model.inputs)
    _, probs = score(model, items)
    for meme, prob in zip(memes, probs, strict=True):
        print(f"{prob:.6f}" if not args.jsonl else f"{meme.id}\t{prob:.6f}\t{meme.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
