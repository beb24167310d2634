"""Training throughput of the shared Accelerate loop: samples/s of one epoch of a model on cached features.

    python benchmarks/training.py                                  # clip_fusion on data/features/clip
    python benchmarks/training.py --model mmbt --epochs 1

Runs the real `hatememes.training.train` (optimizer, schedule, clipping, dev evaluation, checkpoints off)
on the demo's train split, with the params of `train.<model>` from params.yaml; prints one table row.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from hatememes import params as P
from hatememes.data.memes import read_split
from hatememes.data.readers import load_items
from hatememes.files import read_json
from hatememes.models import BuildContext, get_model_class
from hatememes.training import LoopParams, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="clip_fusion")
    parser.add_argument("--memes", type=Path, default=Path("data/memes"))
    parser.add_argument("--features", type=Path, default=Path("data/features"))
    parser.add_argument("--epochs", type=int, default=3)
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    params = P.from_arguments(args)
    model_class = get_model_class(args.model)
    config = P.section(params, f"train.{args.model}.model", model_class.Config)
    loop = P.section(params, f"train.{args.model}.loop", LoopParams)
    loop = dataclasses.replace(loop, epochs=args.epochs, patience=args.epochs, checkpoint_every=10**9)
    meta = {p.parent.name: read_json(p) for p in args.features.glob("*/meta.json")}
    model = model_class.build(config, BuildContext(meta, tuple(m.text for m in read_split(args.memes, "train"))))
    features = {name: args.features / name for name in model.inputs if name != "image"}
    train_items = load_items(args.memes, features, "train", model.inputs)
    dev_items = load_items(args.memes, features, "dev_seen", model.inputs)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        train(model, train_items, dev_items, loop, Path(out))
        seconds = time.perf_counter() - start
    samples = args.epochs * len(train_items)
    print(f"{'model':14s} {'threads':>7s} {'batch':>5s} {'epochs':>6s} {'seconds':>8s} {'samples/s':>10s}")
    print(f"{args.model:14s} {torch.get_num_threads():7d} {loop.batch_size:5d} {args.epochs:6d} {seconds:8.2f} "
          f"{samples / seconds:10.1f}   (dev evaluation after each epoch included)")


if __name__ == "__main__":
    main()
