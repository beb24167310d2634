"""Shared builders for the reliability suite: a tiny fetched dataset, a feature cache written through the
real store, the stage scripts' `main`s, and a subprocess runner for the real `pipelines/*.py`.

(Not a conftest.py: tests/conftest.py is imported as `conftest` by the other test files, and a second
conftest.py without a package would replace it in sys.modules.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).parents[2]
PARAMS = ROOT / "params.yaml"
sys.path.insert(0, str(ROOT / "pipelines"))
sys.path.insert(0, str(ROOT / "tests"))

import evaluate as evaluate_stage  # noqa: E402
import fetch as fetch_stage  # noqa: E402
import train as train_stage  # noqa: E402
from conftest import write_annotations, write_official  # noqa: E402
from hatememes.data.memes import read_split  # noqa: E402
from hatememes.features.store import save_split  # noqa: E402
from hatememes.files import read_json  # noqa: E402

SIZES = {"train": 24, "dev_seen": 8, "dev_unseen": 6, "test_seen": 6, "test_unseen": 6}
TINY_FUSION = [arg for item in ("model.projection_dim=16", "model.pre_output_dim=16", "loop.epochs=3",
                                 "loop.batch_size=8", "loop.warmup_steps=2", "loop.checkpoint_every=2",
                                 "loop.seeds=[]")  # one seed: tests/test_seeds.py covers more
               for arg in ("--set", f"train.clip_fusion.{item}")]  # 3 batches an epoch, a checkpoint every 2 steps
QUICK_EVAL = ["--set", "evaluate.n_boot=50"]
RANDOM_CLIP = ["--set", "features.clip.pretrained=''", "--set", "features.num_workers=0",
               "--set", "features.batch_size=4"]


def fetched(root: Path, sizes: dict[str, int] = SIZES) -> Path:
    """`root/raw` in the official layout with the WOAH 2021 annotations in `root/annotations` (the demo's
    params train fine-grained heads), fetched by the real stage into `root/memes`."""
    write_annotations(root / "annotations", write_official(root / "raw", sizes))
    code = fetch_stage.main(["--params", str(PARAMS), "--out", str(root / "memes"), "--source", "local",
                             "--path", str(root / "raw"), "--set", f"fetch.fine_grained={root / 'annotations'}"])
    assert code == 0
    return root / "memes"


def write_clip_features(memes: Path, out: Path, dim: int = 8, seed: int = 0) -> Path:
    """A `clip` feature cache for `memes` written through the real store (random rows, correct hashes)."""
    generator = torch.Generator().manual_seed(seed)
    manifest = read_json(memes / "manifest.json")
    for split in manifest["splits"]:
        ids = [meme.id for meme in read_split(memes, split)]
        rows = {name: torch.randn(len(ids), dim, generator=generator) for name in ("image", "text")}
        save_split(out, split, ids, rows)
    meta = {"extractor": "clip", "model": "tiny-vit", "pretrained": "", "dim": dim,
            "shapes": {"image": [dim], "text": [dim]},
            "data_sha256": {split: info["sha256"] for split, info in manifest["splits"].items()}}
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def predictions_of(model: Path) -> Path:
    """Where `train_args` has the train stage write the model's predictions: beside its folder."""
    return model.with_name(f"{model.name}-predictions")


def train_args(memes: Path, features: Path, out: Path, *extra: str, model: str = "clip_fusion") -> list[str]:
    return [model, "--params", str(PARAMS), "--memes", str(memes), "--features", str(features),
            "--out", str(out), "--predictions", str(predictions_of(out)), *TINY_FUSION, *extra]


def evaluate_args(memes: Path, model: Path, out: Path, *extra: str) -> list[str]:
    """The evaluate stage on the predictions that training `model` wrote."""
    return ["clip_fusion", "--params", str(PARAMS), "--memes", str(memes), "--predictions",
            str(predictions_of(model)), "--out", str(out), *QUICK_EVAL, *extra]


def tree_bytes(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes), leaving out the named top-level entries."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] not in skip}


def script_env(**extra: str) -> dict[str, str]:
    """The environment of a stage subprocess: one torch thread (2 shared cores), no tqdm bars."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1", **extra}


def run_script(script: str, args: list[str], env: dict[str, str], kill_at: tuple[str, str, int] | None = None,
               timeout: int = 300) -> subprocess.CompletedProcess:
    """`python pipelines/<script> ARGS` in the repository root; with `kill_at`, through kill_at.py."""
    command = [sys.executable, str(ROOT / "pipelines" / script), *args]
    if kill_at is not None:
        when, pattern, count = kill_at
        command = [sys.executable, str(Path(__file__).with_name("kill_at.py")), when, pattern, str(count), *command[1:]]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def evaluate_main(args: list[str]) -> int:
    return evaluate_stage.main(args)


def train_main(args: list[str]) -> int:
    return train_stage.main(args)
