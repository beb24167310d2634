"""The tiny CLIP's pretraining across worlds: held-out accuracy per world seed for one or more recipes, so that
the `pretrain` recipe is chosen on the corpus's held-out pairs of several worlds (never on a meme split).

    python benchmarks/pretrain.py --seeds 0 7 121 532                      # the params' recipe
    python benchmarks/pretrain.py --seeds 0 121 --set epochs=16 --set lr=2e-3  # another recipe

A world seed sets the corpus (`fetch.synthetic.seed`) and the initialisation (`pretrain.seed`), as
`hatememes.params.WORLD_SEEDS` does for the e2e test's second world; `--init-seed` keeps the initialisation
fixed to tell the two apart. Each corpus is generated once into --cache and reused. Prints one markdown row
per world (zero-shot object and colour accuracy, linear-probe object accuracy, seconds, the epochs' mean
losses) and the minimum.
Measure with nothing else running: the stage uses both cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from hatememes import params as P
from hatememes.data.synthetic import SyntheticConfig, generate_pretrain_corpus
from hatememes.pretrain import PretrainParams, pretrain

METRICS = ("zero_shot_object_accuracy", "zero_shot_color_accuracy", "probe_object_accuracy")


def recipe(overrides: list[str]) -> PretrainParams:
    """params.yaml's `pretrain` section with `key=value` overrides, checked as the stage checks its params."""
    return P.section(P.load_params("params.yaml", [f"pretrain.{item}" for item in overrides]), "pretrain",
                     PretrainParams)


def corpus_for(seed: int, cache: Path) -> Path:
    folder = cache / f"corpus-{seed}"
    if not (folder / "pairs.jsonl").exists():
        synthetic = dataclasses.replace(P.section(P.load_params(), "fetch.synthetic", SyntheticConfig), seed=seed)
        generate_pretrain_corpus(folder, synthetic)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="world seeds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a pretrain param")
    parser.add_argument("--init-seed", type=int, help="keep pretrain.seed at this value in every world")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "hatememes-pretrain-bench")
    args = parser.parse_args(argv)
    config = recipe(args.set)
    print(f"recipe: {json.dumps(dataclasses.asdict(config))}")
    print("| world | zero-shot object | zero-shot colour | probe object | s | epoch losses |")
    print("|---|---|---|---|---|---|")
    rows = []
    for seed in args.seeds:
        corpus = corpus_for(seed, args.cache)
        world = dataclasses.replace(config, seed=seed if args.init_seed is None else args.init_seed)
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            metrics = pretrain(corpus, Path(out), world)[world.models[0]]
            seconds = time.perf_counter() - started
        rows.append(metrics)
        losses = " ".join(f"{x:.2f}" for x in metrics["epoch_losses"])
        print(f"| {seed} | " + " | ".join(f"{metrics[m]:.3f}" for m in METRICS) + f" | {seconds:.1f} | {losses} |",
              flush=True)
    print("| min | " + " | ".join(f"{min(r[m] for r in rows):.3f}" for m in METRICS) + " | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
