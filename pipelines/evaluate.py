"""Stage `evaluate`: every model's metrics from its predictions, written into eval/MODEL (DESIGN §7).

    python pipelines/evaluate.py clip_fusion mmbt --memes data/memes --eval eval
    python pipelines/evaluate.py clip_fusion --predictions eval/clip_fusion/predictions --out eval/clip_fusion

For each MODEL, reads eval/MODEL/predictions/<split>.csv (id,proba,label), which the train@MODEL stage scored,
checks that each split's memes are there exactly once, and writes into eval/MODEL metrics.json (AUROC +
bootstrap CI, accuracy and F1 at the dev-chosen threshold and at 0.5, n) and roc/<split>.csv; and
fine_grained.json: where data/memes has the WOAH 2021 fine-grained labels, the shared task's scores (its
scorer's hate micro-AUROC for every model, and protected category / attack type for a model with fine-grained
heads) and hate AUROC per protected category (hatememes.shared_task). No model, no torch.

One DVC stage evaluates every model: a model takes about 0.35 s here, and a stage of its own cost 1.8 s more
(DVC rewrites dvc.lock after each stage, and each is a new Python process; docs/measurements.md, session 20).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hatememes import params as P
from hatememes.data.memes import read_split
from hatememes.evaluation import EvaluateParams, read_predictions_folder, read_seed_folders, write_evaluation
from hatememes.files import read_json, report_write_error, write_json
from hatememes.shared_task import evaluate_fine_grained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", metavar="NAME",
                        help="the models to evaluate (each scored by its train@NAME stage)")
    parser.add_argument("--memes", type=Path, default=Path("data/memes"))
    parser.add_argument("--eval", type=Path, default=Path("eval"),
                        help="reads EVAL/NAME/predictions, writes EVAL/NAME (default: eval)")
    parser.add_argument("--predictions", type=Path,
                        help="one NAME only: its predictions (default: EVAL/NAME/predictions)")
    parser.add_argument("--out", type=Path, help="one NAME only: where its metrics go (default: EVAL/NAME)")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    if len(args.names) > 1 and (args.predictions or args.out):
        parser.error("--predictions and --out name one model's folders; for several models use --eval")
    params = P.from_arguments(args)
    expected = expected_ids(args.memes)
    for name in args.names:
        out = args.out or args.eval / name
        try:
            evaluate(params, args.memes, args.predictions or out / "predictions", out, expected)
        except Exception as error:
            error.add_note(f"evaluate: while evaluating {name} (into {out})")
            return report_write_error("evaluate", out, error)
    return 0


def expected_ids(memes: Path) -> dict[str, list[str]]:
    """Every split of the manifest and its memes' ids, in file order: what each model must have scored."""
    return {split: [meme.id for meme in read_split(memes, split)]
            for split in read_json(memes / "manifest.json")["splits"]}


def evaluate(params: dict, memes: Path, predictions_dir: Path, out: Path,
             expected: dict[str, list[str]] | None = None) -> dict:
    """One model's metrics from its predictions; `expected` (`expected_ids`) read from `memes` if not given."""
    config = P.section(params, "evaluate", EvaluateParams)
    dev_split = P.dev_split(params)
    expected = expected if expected is not None else expected_ids(memes)
    splits = list(expected)
    predictions = read_predictions_folder(predictions_dir, splits, expected)
    seeds = read_seed_folders(predictions_dir, splits, expected)
    metrics = write_evaluation(out, predictions, dev_split, config, seeds)
    write_json(out / "fine_grained.json", evaluate_fine_grained(memes, predictions_dir))
    return metrics


if __name__ == "__main__":
    sys.exit(main())
