"""Stage `evaluate@MODEL`: score every split with a trained model and write eval/MODEL (DESIGN §7).

    python pipelines/evaluate.py clip_fusion --memes data/memes --features data/features \
        --model models/clip_fusion --out eval/clip_fusion
    accelerate launch --config_file configs/accelerate/cpu_2.yaml pipelines/evaluate.py clip_fusion  # 2 workers

Writes predictions/<split>.csv (id,proba,label), metrics.json (AUROC + bootstrap CI, accuracy and F1 at
the dev-chosen threshold and at 0.5, n) and roc/<split>.csv. Every id is checked to be scored exactly once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from accelerate import PartialState

from hatememes import params as P
from hatememes.data.readers import load_items
from hatememes.evaluation import EvaluateParams, write_evaluation
from hatememes.files import read_json, report_write_error
from hatememes.inference import eval_batch_size, load_model, score
from hatememes.launch import relaunch
from hatememes.metrics import Predictions
from hatememes.training import train_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the model's name (a stage of dvc.yaml: evaluate@NAME)")
    parser.add_argument("--memes", type=Path, default=Path("data/memes"))
    parser.add_argument("--features", type=Path, default=Path("data/features"))
    parser.add_argument("--model", type=Path, help="the trained model folder (default: models/NAME)")
    parser.add_argument("--out", type=Path, help="default: eval/NAME")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    out = args.out or Path("eval") / args.name
    try:
        params = P.from_arguments(args)
        relaunch(params, __file__, sys.argv[1:] if argv is None else argv)
        evaluate(args.name, params, args.memes, args.features, args.model, out)
    except Exception as error:
        return report_write_error("evaluate", out, error)
    return 0


def evaluate(name: str, params: dict, memes: Path, features_dir: Path, model_dir: Path | None, out: Path) -> None:
    config = P.section(params, "evaluate", EvaluateParams)
    model_dir = model_dir or Path("models") / name
    model, _ = load_model(model_dir)
    batch_size = eval_batch_size(model_dir)  # train.<name>.loop.eval_batch_size, as the model was trained
    features = {key: features_dir / key for key in model.inputs if key != "image"}
    predictions = {}
    for split in read_json(memes / "manifest.json")["splits"]:
        items = load_items(memes, features, split, model.inputs)
        ids, probs = score(model, items, batch_size=batch_size)
        if ids.tolist() != items.ids:
            raise RuntimeError(f"{name} on {split}: scored ids differ from {memes / split}.jsonl")
        predictions[split] = Predictions(ids, probs, np.asarray(items.labels))
    state = PartialState()
    if state.num_processes > 1:
        state.print(f"evaluate: {state.num_processes} processes ({state.distributed_type.value})")
    if state.is_main_process:
        write_evaluation(out, predictions, train_params(params, check=(name,)).dev_split, config)


if __name__ == "__main__":
    sys.exit(main())
