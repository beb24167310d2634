"""More than one process from `dvc repro`: params.yaml `launch.accelerate_config` (hatememes.launch).

A fresh copy with a cheap setup (the demo world at its smallest, clip_fusion only, dropout off) is reproduced
once with the default launcher (one plain process) and once with configs/accelerate/cpu_2.yaml (two workers,
DDP over gloo). `loop.batch_size` is the global batch on any number of processes, so both runs take the same
optimizer steps on the same memes and must end with the same weights and predictions (to float rounding: a
gradient summed over two halves adds in another order).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from repo_copy import cheap_copy, run  # noqa: E402

pytestmark = pytest.mark.slow
MODEL = "clip_fusion"
CHEAP = ["fetch.synthetic.scale=0.02", "fetch.synthetic.pretrain_pairs=400", "pretrain.epochs=1",
         "pretrain.probe_pairs=100", "pretrain_llava.enabled=false", "evaluate.n_boot=100",
         f"train.{MODEL}.loop.epochs=2", f"train.{MODEL}.model.projection_dim=32",
         f"train.{MODEL}.model.pre_output_dim=32", f"train.{MODEL}.model.drop_probs=[0.0,0.0,0.0]"]
TWO_WORKERS = "configs/accelerate/cpu_2.yaml"


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    repository = cheap_copy(tmp_path_factory.mktemp("launch") / "hatememes", MODEL, CHEAP, "the cheap setup")
    return repository


def weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    (path,) = [p for p in folder.glob("*.safetensors")]
    return load_file(str(path))


def predictions(folder: Path, split: str) -> list[tuple[int, float]]:
    with (folder / "predictions" / f"{split}.csv").open() as file:
        return [(int(row["id"]), float(row["proba"])) for row in csv.DictReader(file)]


def reproduce(repository: Path, config: str) -> tuple[str, Path]:
    """`dvc repro` with `launch.accelerate_config: config`; the log and a copy of the model and eval folders."""
    from dvc.utils.hydra import apply_overrides

    apply_overrides(str(repository / "params.yaml"), [f"launch.accelerate_config='{config}'"])
    log = run(["dvc", "repro"], repository, timeout=1800).stdout
    kept = repository.parent / f"run-{Path(config).stem or 'default'}"
    for part in ("models", "eval"):
        shutil.copytree(repository / part / MODEL, kept / part, dirs_exist_ok=True)
    return log, kept


def test_two_workers_from_dvc_repro_match_one_process(repository):
    one_log, one = reproduce(repository, "")
    assert "launch: " not in one_log  # the default starts no `accelerate launch`: no second start-up
    assert json.loads((one / "models" / "model.json").read_text())["num_processes"] == 1

    two_log, two = reproduce(repository, TWO_WORKERS)
    assert f"--config_file {TWO_WORKERS}" in two_log
    assert "Running stage 'train@clip_fusion'" in two_log and "Running stage 'fetch'" not in two_log
    assert json.loads((two / "models" / "model.json").read_text())["num_processes"] == 2

    one_weights, two_weights = weights(one / "models"), weights(two / "models")
    assert one_weights.keys() == two_weights.keys()
    for key in one_weights:
        np.testing.assert_allclose(two_weights[key], one_weights[key], rtol=0, atol=1e-4, err_msg=key)
    for split in ("dev_seen", "test_unseen"):
        first, second = predictions(one / "eval", split), predictions(two / "eval", split)
        assert [row[0] for row in first] == [row[0] for row in second]
        np.testing.assert_allclose([row[1] for row in second], [row[1] for row in first], rtol=0, atol=1e-4)


def test_a_missing_config_fails_naming_the_param(repository):
    from dvc.utils.hydra import apply_overrides

    apply_overrides(str(repository / "params.yaml"), ["launch.accelerate_config=configs/accelerate/nope.yaml"])
    result = run(["dvc", "repro", f"train@{MODEL}"], repository, check=False)
    assert result.returncode != 0
    assert "launch.accelerate_config: configs/accelerate/nope.yaml: no such file" in result.stdout + result.stderr
