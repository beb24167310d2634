"""A copy of this repository's tracked (and untracked, not ignored) files, made a git repository of its own:
what a fresh clone is, for tests that run `dvc` commands without touching the working tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
GIT = ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci"]


def run(command: list[str], cwd: Path, timeout: int = 3600, check: bool = True) -> subprocess.CompletedProcess:
    """Run `command` in `cwd` with this interpreter's bin folder first on PATH (dvc, accelerate, python)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def copy_repository(destination: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    run(["git", "init", "-q"], destination)
    commit(destination, "copy")
    return destination


def commit(repository: Path, message: str) -> None:
    run([*GIT, "add", "-A"], repository)
    run([*GIT, "commit", "-qm", message], repository)


def keep_one_model(repository: Path, model: str) -> None:
    """dvc.yaml with the train stage of `model` only, the evaluate stage for it alone, and without the stages
    that read every model (explain, ensemble, report) or other models' outputs (lmm_features, late_fusion): the
    cheap pipelines of the DVC workflow tests."""
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(repository / "dvc.yaml") as pipeline:
        for stage in ("lmm_features", "explain", "late_fusion", "ensemble", "report"):
            del pipeline["stages"][stage]
        train = pipeline["stages"]["train"]["foreach"]
        for name in [name for name in train if name != model]:
            del train[name]
        evaluate = pipeline["stages"]["evaluate"]  # every model's metrics: `model`'s only
        evaluate["cmd"] = f"{evaluate['cmd'].split(' --eval eval ')[0]} --eval eval {model}"
        for key in ("deps", "outs", "metrics"):
            evaluate[key] = [entry for entry in evaluate[key]
                             if not path_of(entry).startswith("eval/") or path_of(entry).startswith(f"eval/{model}/")]


def path_of(entry) -> str:
    """The path of a dvc.yaml deps/outs/metrics entry: `path` or `{path: {options}}`."""
    return str(next(iter(entry))) if isinstance(entry, dict) else str(entry)


def cheap_copy(destination: Path, model: str, overrides: list[str], message: str) -> Path:
    """A committed copy whose params.yaml is the demo's with `overrides` (Hydra `key=value`), with `model` as
    its only model and no dvc.lock or eval/ from the demo run: a cheap pipeline for `dvc repro` tests."""
    from hatememes.params import compose

    repository = copy_repository(destination)
    compose(overrides, repository / "conf", repository / "params.yaml")
    keep_one_model(repository, model)
    (repository / "dvc.lock").unlink()
    shutil.rmtree(repository / "eval", ignore_errors=True)
    commit(repository, message)
    return repository
