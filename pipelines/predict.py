"""Score new memes with any trained model.

    python pipelines/predict.py --model models/clip_fusion --image meme.png --text "look at this"  # P(hateful)
    python pipelines/predict.py --model models/clip_fusion --input new_memes.jsonl --out scores.jsonl
    python pipelines/predict.py --model models/mmbt --input data/raw      # a folder in the official layout

A batch (`--input`: a JSON-lines file of {"id", "img", "text"}, `img` relative to the file or absolute,
`id` optional; or a folder whose every `*.jsonl` is read that way) gives one line of JSON per meme: `id`,
`proba` = P(hateful), `label` at the model's dev threshold (from `eval/<model>/metrics.json`, as the
evaluate stage chose it on the dev split; `--threshold` sets one) and `model`; a folder adds `split`; a
model with fine-grained heads adds `pred_pc` and `pred_attack` ({label: probability}, as the WOAH 2021 shared
task's submissions).
Every record is checked as the fetch stage checks it: bad ones are listed with their file, line and id,
and nothing is scored.

Models on cached features get them computed here with the extractor the model was trained with (its
params.json), so a meme scores exactly as it would inside the pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_batch(path: Path) -> list[tuple[str, Path, list]]:
    """(split or "", image root, memes) for a JSON-lines file or an official-layout folder; every bad
    record of every file is collected before anything fails."""
    from hatememes.data.memes import BadRecordsError, Rejected, check_image, check_record, read_jsonl_rows

    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path}: no *.jsonl files in this folder (expected the official layout)")
    batches, rejected = [], []
    for file in files:
        memes = []
        for number, record in read_jsonl_rows(file):
            if isinstance(record, dict) and "id" not in record:
                record = {**record, "id": number}  # new memes need no id: the line number stands in
            meme, reason = check_record(record)
            if meme is not None:  # the user's own files: any path, relative to the file or absolute
                image = file.parent / meme.img
                reason, _ = check_image(image.parent, image.name)
            if reason:
                rejected.append(Rejected(str(file), number, record.get("id") if isinstance(record, dict) else None,
                                         reason))
            else:
                memes.append(meme)
        batches.append((file.stem if path.is_dir() else "", file.parent, memes))
    if rejected:
        raise BadRecordsError(rejected)
    return batches


def build_extractors(model_dir: Path, inputs) -> dict:
    """The extractors the model's cached features came from (its params.json), built once per run."""
    import torch

    from hatememes.data.readers import feature_inputs
    from hatememes.features import FeaturesParams, build_extractor
    from hatememes.files import read_json
    from hatememes.params import from_dict

    params = from_dict(FeaturesParams, read_json(model_dir / "params.json")["features"], str(model_dir))
    extractors = {}
    for name in feature_inputs(inputs):
        torch.manual_seed(0)
        extractors[name] = build_extractor(name, params)
        if not hasattr(extractors[name], "preprocess"):  # features read from files per meme id (precomputed)
            raise SystemExit(f"{model_dir}: its {name} features were read from files made for the dataset's memes "
                             f"({extractors[name].meta.get('box_source', 'precomputed')}); new memes have none: "
                             "extract theirs the same way, add them to the dataset and rerun the pipeline")
    return extractors


def compute_features(extractors: dict, root: Path, memes: list, batch_size: int = 64) -> dict:
    """The cached-feature rows these memes would have, in the pipeline's batches."""
    import torch

    from hatememes.data.memes import load_rgb
    from hatememes.data.readers import feature_items
    from hatememes.progress import progress

    features = {}
    for name, extractor in extractors.items():
        chunks = []
        starts = range(0, len(memes), batch_size)
        for start in progress(starts, desc=f"{name} features", disable=len(starts) == 1):
            chunk = memes[start:start + batch_size]
            rows = [extractor.preprocess(load_rgb(root / meme.img), meme.text) for meme in chunk]
            stacked = {key: torch.stack([row[key] for row in rows]) for key in rows[0]}
            with torch.inference_mode():
                chunks.append(extractor.encode(stacked))
        stored = {tensor: torch.cat([encoded[tensor] for encoded in chunks]).float() for tensor in chunks[0]}
        features.update(feature_items(name, stored))
    return features


def dev_threshold(model_dir: Path, metrics_path: Path | None) -> float:
    """The threshold the evaluate stage chose on the model's dev split (`eval/<model>/metrics.json`)."""
    from hatememes.files import read_json

    metrics_path = metrics_path or Path("eval") / model_dir.name / "metrics.json"
    dev_split = read_json(model_dir / "model.json").get("dev_split", "dev_seen")
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path}: not found, so there is no dev threshold for the labels "
                                f"(run the evaluate stage, or pass --metrics FILE or --threshold T)")
    metrics = read_json(metrics_path)
    if dev_split not in metrics or metrics[dev_split].get("threshold") is None:
        raise ValueError(f"{metrics_path}: no threshold for the dev split {dev_split!r}; pass --threshold T")
    return float(metrics[dev_split]["threshold"])


def score_memes(model, extractors: dict, root: Path, memes: list, batch_size: int = 64) -> list[tuple[float, dict]]:
    """(P(hateful), the fine-grained heads' pred_pc and pred_attack, or {}) of each meme."""
    from hatememes.data.readers import MemeItems
    from hatememes.inference import score
    from hatememes.shared_task import fine_scores

    features = compute_features(extractors, root, memes)
    _, probs, fine = score(model, MemeItems(root, memes, features, with_images="image" in model.inputs), batch_size)
    return [(float(prob), {} if fine is None else fine_scores(fine[row])) for row, prob in enumerate(probs)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained model folder (models/NAME)")
    parser.add_argument("--image", type=Path, help="one meme's image (with --text)")
    parser.add_argument("--text", help="the text written on it")
    parser.add_argument("--input", type=Path, help="a JSON-lines file of memes, or an official-layout folder")
    parser.add_argument("--out", type=Path, help="write the JSON lines here (default: standard output)")
    parser.add_argument("--metrics", type=Path, help="where the dev threshold is (default: eval/NAME/metrics.json)")
    parser.add_argument("--threshold", type=float, help="label hateful at P >= this instead of the dev threshold")
    args = parser.parse_args(argv)
    if bool(args.input) == bool(args.image or args.text is not None):
        parser.error("give --image and --text for one meme, or --input for a batch")
    if args.image and args.text is None or args.text is not None and not args.image:
        parser.error("--image and --text go together")

    from hatememes.data.memes import Meme
    from hatememes.inference import eval_batch_size, load_model

    model, name = load_model(args.model)
    batch_size = eval_batch_size(args.model)  # train.<name>.loop.eval_batch_size, as the pipeline scores
    threshold, batches = None, []  # checked before any extractor loads: bad input fails at once
    if args.input:
        threshold = args.threshold if args.threshold is not None else dev_threshold(args.model, args.metrics)
        batches = read_batch(args.input)
    extractors = build_extractors(args.model, model.inputs)
    if args.image:
        meme = Meme(0, args.image.name, args.text)
        print(f"{score_memes(model, extractors, args.image.parent, [meme], batch_size)[0][0]:.6f}")
        return 0
    lines = []
    for split, root, memes in batches:
        scored = score_memes(model, extractors, root, memes, batch_size) if memes else []
        for meme, (proba, fine) in zip(memes, scored, strict=True):
            line = {"id": meme.id, "proba": proba, "label": int(proba >= threshold), "model": name, **fine}
            lines.append(json.dumps(line | ({"split": split} if split else {})))
    text = "".join(line + "\n" for line in lines)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"{len(lines)} memes scored by {name} (threshold {threshold:.4f}) -> {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
