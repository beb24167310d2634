"""The e2e test's positive controls (tests/helpers/positive_controls.py) on the dev splits of several worlds,
so that a control's label is chosen on dev splits of more than one world, as every demo setting is.

    python benchmarks/controls.py --seeds 0 356 651                  # build each world, then score
    python benchmarks/controls.py --seeds 0 --models clip_zeroshot   # some controls only
    python benchmarks/controls.py --roots /tmp/w356 --keep ...       # worlds already built (a demo clone)

A world is a fresh clone of the committed HEAD with every seed of `hatememes.params.WORLD_SEEDS` set to the
world's seed, reproduced only up to what the controls read (`dvc repro` of the clip features and the tiny
LLaVA). Prints one markdown table of control AUROCs (models × worlds × dev splits, with the minimum over
worlds); the e2e bar reads test_unseen, which this never scores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "helpers"))
from positive_controls import CONTROLS, control_auroc  # noqa: E402

from demo import fresh_clone  # noqa: E402
from hatememes.params import WORLD_SEEDS, compose  # noqa: E402

DEV_SPLITS = ("dev_seen", "dev_unseen")
TARGETS = ("features@clip", "pretrain")  # everything a control reads: the memes come with them


def build_world(seed: int, destination: Path) -> Path:
    """A fresh clone of HEAD with the world's seeds, reproduced up to the controls' inputs."""
    clone = fresh_clone(destination)
    compose([f"{key}={seed}" for key in WORLD_SEEDS], clone / "conf", clone / "params.yaml")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(clone / "src")}
    run = subprocess.run(["dvc", "repro", *TARGETS], cwd=clone, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"dvc repro failed in {clone} (exit {run.returncode}):\n{run.stdout[-4000:]}{run.stderr}")
    return clone


def world_controls(root: Path, models: list[str], scratch: Path) -> dict[str, dict[str, float]]:
    """{model: {dev split: control AUROC}} in one reproduced world."""
    cwd = Path.cwd()
    os.chdir(root)  # the params name their inputs relative to the repository
    try:
        return {model: {split: control_auroc(root, model, scratch / model / split, split) for split in DEV_SPLITS}
                for model in models}
    finally:
        os.chdir(cwd)


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    worlds = list(results)
    header = [f"{world} {split}" for world in worlds for split in DEV_SPLITS]
    lines = ["| control | " + " | ".join(header) + " | min |", "|---|" + "---|" * (len(header) + 1)]
    for model in next(iter(results.values())):
        values = [results[world][model][split] for world in worlds for split in DEV_SPLITS]
        lines.append(f"| `{model}` | " + " | ".join(f"{value:.3f}" for value in values) + f" | {min(values):.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    worlds = parser.add_mutually_exclusive_group(required=True)
    worlds.add_argument("--seeds", type=int, nargs="+", help="build one world per seed")
    worlds.add_argument("--roots", type=Path, nargs="+", help="score worlds already reproduced there")
    parser.add_argument("--models", nargs="+", choices=sorted(CONTROLS), default=sorted(CONTROLS))
    parser.add_argument("--keep", type=Path, help="keep the built worlds' clones in this folder")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="hatememes-controls-") as scratch:
        for world in args.seeds or args.roots:
            if args.roots:
                root, name = world.resolve(), world.name
            else:
                root, name = build_world(world, Path(scratch) / f"world{world}"), f"world {world}"
            results[name] = world_controls(root, args.models, Path(scratch) / "fits" / name)  # one each: the
            # loop resumes from checkpoints it finds, and another world's would pass for this one's
            print(f"{name}: " + ", ".join(f"{model} {v['dev_seen']:.3f} / {v['dev_unseen']:.3f}"
                                          for model, v in results[name].items()), flush=True)
            if args.seeds:
                if args.keep:
                    shutil.copytree(root, args.keep / f"world{world}", symlinks=True)
                shutil.rmtree(root)
    print(f"\n{table(results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
