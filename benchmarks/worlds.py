"""The demo in several worlds: dev AUROC per model and world, so that a demo setting is chosen on dev splits
of more than one world (issue: a five-minute demo that nobody tuned on test).

    python benchmarks/worlds.py --seeds 0 7 532                 # three worlds, one after the other
    python benchmarks/worlds.py --seeds 11 --keep /tmp/world11  # keep the run's clone

Each world is a fresh clone of the committed HEAD with every seed of `hatememes.params.WORLD_SEEDS` (the
synthetic memes, the corpus and both pretrainings) set to the world's seed, then a complete `dvc repro`.
Prints one markdown table per dev split (models × worlds, with the minimum over worlds) and the test_unseen
AUROCs last, labelled as read only to report: they are what the e2e bars check, and no setting may be chosen
on them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from demo import fresh_clone, timed_repro  # noqa: E402
from hatememes.params import WORLD_SEEDS, compose  # noqa: E402

DEV_SPLITS = ("dev_seen", "dev_unseen")
REPORT_ONLY = ("test_unseen",)


def world_aurocs(clone: Path) -> dict[str, dict[str, float]]:
    """{model: {split: AUROC}} from every eval/<model>/metrics.json of a finished run."""
    return {path.parent.name: {split: row["auroc"] for split, row in json.loads(path.read_text()).items()
                               if isinstance(row, dict) and "auroc" in row}
            for path in sorted((clone / "eval").glob("*/metrics.json"))}


def table(results: dict[int, dict[str, dict[str, float]]], split: str) -> str:
    seeds = list(results)
    models = sorted({model for world in results.values() for model in world})
    lines = [f"| {split} | " + " | ".join(f"world {seed}" for seed in seeds) + " | min |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for model in models:
        values = [results[seed].get(model, {}).get(split, float("nan")) for seed in seeds]
        lines.append(f"| `{model}` | " + " | ".join(f"{value:.3f}" for value in values) + f" | {min(values):.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="one world per seed")
    parser.add_argument("--keep", type=Path, help="keep the last world's clone here (default: deleted)")
    parser.add_argument("--json", type=Path, help="also write {seed: {model: {split: AUROC}}} here")
    args = parser.parse_args(argv)
    results: dict[int, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="hatememes-worlds-") as scratch:
        for seed in args.seeds:
            clone = fresh_clone(Path(scratch) / f"world{seed}")
            compose([f"{key}={seed}" for key in WORLD_SEEDS], clone / "conf", clone / "params.yaml")
            _, total = timed_repro(clone)
            results[seed] = world_aurocs(clone)
            print(f"world {seed}: {total:.0f} s", flush=True)
            if args.keep and seed == args.seeds[-1]:
                shutil.copytree(clone, args.keep, symlinks=True)
            shutil.rmtree(clone)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    for split in DEV_SPLITS:
        print(f"\n{table(results, split)}")
    print("\nRead only to report (the e2e bars' split; choose nothing on it):")
    for split in REPORT_ONLY:
        print(f"\n{table(results, split)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
