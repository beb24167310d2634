"""The demo end to end: `dvc repro` in a fresh copy of the repository, then the numbers it must reach.

Runs the whole pipeline (minutes on 2 cores), so it is marked `e2e`: `pytest -m e2e` runs it, CI runs it after
the default suite. It runs in another world than the committed one: the synthetic memes, the corpus and both
pretrainings drawn with a seed that CI draws from the commit (`HATEMEMES_SECOND_WORLD` sets it), so that no
demo setting can be tuned against one world. Every bar and positive control must hold there; world 0's bars
are checked on its committed metrics (tests/test_e2e_bars.py), which a fresh clone's `dvc repro` wrote.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from e2e_bars import check_bars, check_fine_grained_bars  # noqa: E402
from positive_controls import CONTROL_BAR, CONTROLS, control_auroc  # noqa: E402
from repo_copy import ROOT, copy_repository, run  # noqa: E402

from hatememes.params import WORLD_SEEDS, compose  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def world_seed() -> int:
    """HATEMEMES_SECOND_WORLD when set; else 1-1000 drawn from the commit, so each commit meets a new world."""
    import os
    import subprocess

    if os.environ.get("HATEMEMES_SECOND_WORLD"):
        return int(os.environ["HATEMEMES_SECOND_WORLD"])
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return int(commit[:8] or "0", 16) % 1000 + 1


def persist_seeds(copy: Path, seed: int) -> None:
    """The world's seeds written into the copy's conf/config.yaml as well as its params.yaml, so that `dvc exp
    run -S ...`, which composes params.yaml afresh from conf/, stays in this world."""
    from omegaconf import OmegaConf

    overrides = [f"{key}={seed}" for key in WORLD_SEEDS]
    expected = compose(overrides, copy / "conf", copy / "params.yaml")
    config = OmegaConf.load(copy / "conf" / "config.yaml")
    for key in WORLD_SEEDS:
        OmegaConf.update(config, key, seed)
    OmegaConf.save(config, copy / "conf" / "config.yaml")
    assert compose([], copy / "conf", copy.parent / "check.yaml").read_text() == expected.read_text()


@pytest.fixture(scope="module")
def repro(tmp_path_factory) -> Path:
    """A copy of the tracked files, made a git repository of its own, in a world that is not the committed
    one (`world_seed`, the rest of its params as committed), after a complete `dvc repro`. World 0, whose
    numbers the README shows, is checked on its committed metrics (tests/test_e2e_bars.py)."""
    seed = world_seed()
    print(f"\nworld: seed {seed} ({', '.join(WORLD_SEEDS)}); HATEMEMES_SECOND_WORLD={seed} reruns it")
    copy = copy_repository(tmp_path_factory.mktemp(f"world{seed}") / "hatememes")
    persist_seeds(copy, seed)
    run(["dvc", "repro"], copy)
    return copy


def read_predictions(path: Path) -> list[tuple[int, float, int]]:
    with path.open() as file:
        return [(int(row["id"]), float(row["proba"]), int(row["label"])) for row in csv.DictReader(file)]


def test_second_repro_is_up_to_date(repro):
    output = run(["dvc", "repro"], repro).stdout
    assert "Running stage" not in output and "up to date" in output


def test_every_model_meets_its_bar(repro):
    """The demo bars (tests/helpers/e2e_bars.py): models that should learn the pair rule reach their lower
    bound on test_unseen (read only to report; no setting was chosen on it), the ensemble keeps up with its
    best member, llava_lora beats its zero-shot base on every labelled split, models that should stay at
    chance stay at or below 0.65; AUROC computed from each model's predictions file, metrics.json agreeing.
    The fine-grained heads rank the world's protected categories and attack types on dev_unseen."""
    assert check_bars(repro) + check_fine_grained_bars(repro) == []


# llava_zeroshot's control was a known failure until session 13; it now passes with a margin: dev_seen /
# dev_unseen 0.94 / 0.96 in world 0, 0.95 / 0.98 in world 2, 0.94 / 0.98 in world 5; test_unseen 0.94-0.96
@pytest.mark.parametrize("model", sorted(CONTROLS))
def test_a_model_at_chance_learns_what_its_modality_carries(repro, model, tmp_path, monkeypatch):
    """The positive controls (tests/helpers/positive_controls.py): a model that the bars hold at chance is
    fitted again on a label its own modality carries and must learn it, so that a dead model fails."""
    monkeypatch.chdir(repro)  # the params name their inputs relative to the repository
    value = control_auroc(repro, model, tmp_path / "control")
    assert value >= CONTROL_BAR, f"{model}: positive-control AUROC {value:.3f} on test_unseen (bar {CONTROL_BAR})"


def test_synthetic_oracles_and_pretraining_in_bounds(repro):
    manifest = json.loads((repro / "data" / "memes" / "manifest.json").read_text())
    for split, oracle in manifest["oracles"].items():
        if split != "train":
            assert oracle["text_only"] <= 0.60 and oracle["image_only"] <= 0.60
    pretrain = json.loads((repro / "data" / "pretrain" / "metrics.json").read_text())
    # the tiny CLIP's held-out object probe: 0.895-0.998 over 13 worlds (benchmarks/pretrain.py; world 23 the
    # lowest, and every model bar held there in CI), against 0.125 for an untrained one (8 objects)
    assert pretrain["tiny-rn"]["probe_object_accuracy"] >= 0.85
    assert pretrain["tiny-rn"]["zero_shot_object_accuracy"] >= 0.80


def test_report_and_dvc_metrics_and_plots(repro):
    html = (repro / "eval" / "report.html").read_text()
    assert "clip_fusion" in html and "data:image/png;base64," in html
    assert "clip_fusion" in run(["dvc", "metrics", "show"], repro).stdout
    run(["dvc", "plots", "show", "--out", str(repro / "plots_html")], repro)
    assert (repro / "plots_html" / "index.html").is_file()


def test_predict_matches_the_predictions_file(repro):
    meme = json.loads((repro / "data" / "memes" / "test_unseen.jsonl").read_text().splitlines()[3])
    out = run([sys.executable, "pipelines/predict.py", "--model", "models/clip_fusion", "--image",
               f"data/memes/{meme['img']}", "--text", meme["text"]], repro).stdout.strip().splitlines()[-1]
    with (repro / "eval" / "clip_fusion" / "predictions" / "test_unseen.csv").open() as file:
        row = next(line for line in file if line.startswith(f"{meme['id']},"))
    assert float(out) == pytest.approx(float(row.split(",")[1]), abs=1e-5)


def test_course_networks_on_the_demo(repro):
    """course_mlp within 0.03 AUROC of its torch twin (same recipe, float64) on the demo's CLIP features
    (the course models' bars are in test_every_model_meets_its_bar)."""
    from hatememes.data.readers import load_items
    from hatememes.models.course.numpy_mlp import CourseMLPConfig, torch_twin
    from hatememes.params import load_params, section

    config = section(load_params(repro / "params.yaml"), "train.course_mlp.model", CourseMLPConfig)
    memes, clip = repro / "data" / "memes", {"clip": repro / "data" / "features" / "clip"}
    train, dev = (load_items(memes, clip, split, ("clip",)) for split in ("train", "dev_seen"))
    history = torch_twin(config, [train[i] for i in range(len(train))], [dev[i] for i in range(len(dev))])
    assert max(history["numpy_dev_auroc"]) == pytest.approx(max(history["torch_dev_auroc"]), abs=0.03)
    summary = json.loads((repro / "eval" / "summary.json").read_text())
    assert {"course_mlp", "course_cnn", "course_lstm", "course_transformer"} <= set(summary["models"])


def test_every_model_is_in_the_report(repro):
    summary = json.loads((repro / "eval" / "summary.json").read_text())
    html = (repro / "eval" / "report.html").read_text()
    for model in ("mmbt", "visualbert", "llava_zeroshot", "llava_lora", "ensemble"):
        assert model in summary["models"] and model in html


def test_every_readme_command_runs(repro):
    """The README's commands, literally and in order, in the reproduced demo (tests/test_readme.py lists
    them). Runs last: its experiment and retraining change the copy's outputs."""
    import shutil

    from test_readme import RUN_IN_THE_DEMO

    memes = [json.loads(line) for line in (repro / "data" / "memes" / "test_unseen.jsonl").read_text().splitlines()]
    shutil.copy(repro / "data" / "memes" / memes[0]["img"], repro / "meme.png")  # what a user brings
    (repro / "new_memes.jsonl").write_text("".join(
        json.dumps({"img": f"data/memes/{m['img']}", "text": m["text"]}) + "\n" for m in memes[:5]))
    for command in RUN_IN_THE_DEMO:
        output = run(["bash", "-c", command], repro).stdout
        if command.startswith("dvc exp show"):
            assert "epochs" in output or "clip_fusion" in output
        if command.startswith("python pipelines/compare.py"):  # the experiment beside the workspace and commit
            assert "train.clip_fusion.model.fusion" in (repro / "eval" / "compare.md").read_text()
    scores = [json.loads(line) for line in (repro / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 5 and all(set(s) == {"id", "proba", "label", "model", "pred_pc", "pred_attack"}
                                    for s in scores)  # the demo's clip_fusion has fine-grained heads
