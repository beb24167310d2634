"""Stages `ensemble` and `late_fusion`: combine trained models' predictions (mean, or logistic stacking fitted
on dev only).

    python pipelines/ensemble.py --eval eval --out eval/ensemble --model-out models/ensemble
    python pipelines/ensemble.py late_fusion --eval eval --out eval/late_fusion --model-out models/late_fusion
                                                 # what pipelines/late_fusion.py (stage late_fusion) runs

Members and method come from the params.yaml section of the name (`ensemble` by default; `late_fusion`: the
benchmark paper's Late Fusion, the mean of text_bert's and image_grid's probabilities). Stacking learns from
the members' predictions on `fit_split` alone and scores that split's memes out of fold (see
hatememes.models.ensemble).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hatememes import params as P
from hatememes.evaluation import EvaluateParams, write_evaluation, write_predictions_folder
from hatememes.files import write_json
from hatememes.models.ensemble import Ensemble, EnsembleConfig, load_member_predictions
from hatememes.process import exit_after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", default="ensemble", help="its params.yaml section (default ensemble)")
    parser.add_argument("--eval", type=Path, default=Path("eval"), help="the members' eval folders")
    parser.add_argument("--out", type=Path, default=Path("eval/ensemble"))
    parser.add_argument("--model-out", type=Path, default=Path("models/ensemble"))
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    params = P.from_arguments(args)
    config = P.section(params, args.name, EnsembleConfig)
    ensemble = Ensemble.build(config)
    if config.method == "stacking":
        ensemble.fit_members(load_member_predictions(args.eval, config.members, config.fit_split))
    splits = sorted(p.stem for p in (args.eval / config.members[0] / "predictions").glob("*.csv"))
    predictions = {split: ensemble.predict_members(load_member_predictions(args.eval, config.members, split))
                   for split in splits}
    ensemble.save_pretrained(args.model_out)
    write_json(args.model_out / "model.json", {"name": args.name, "members": list(config.members)})
    write_json(args.model_out / "params.json", P.resolved(params))
    write_predictions_folder(args.out / "predictions", predictions)
    write_evaluation(args.out, predictions, P.dev_split(params), P.section(params, "evaluate", EvaluateParams))
    return 0


if __name__ == "__main__":
    exit_after(main())  # without the interpreter's teardown (hatememes.process)
