"""What DVC records is what runs, and each stage reruns on exactly what it reads (DESIGN §3).

A copy of the repository gets a stand-in file in every stage's outputs and `dvc commit`s them, so that
`dvc status` is clean without running anything; then one input or one param changes, and `dvc status` must
list the stages that read it and no others. Both profiles: params.yaml composed from conf/ as `dvc exp run -S`
composes it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # about a minute: DVC's start-up for every `dvc status`
sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from repo_copy import commit, copy_repository, run  # noqa: E402

from hatememes.params import compose  # noqa: E402

MODELS = ["clip_fusion", "rgcl", "rgcl_bce_only", "rgcl_knn", "clip_linear_image", "clip_linear_text", "clip_zeroshot",
          "mmbt", "visualbert", "course_mlp", "course_cnn", "course_lstm", "course_transformer", "llava_zeroshot",
          "llava_lora", "lmm_zeroshot", "lmm_lora", "lmm_rgcl", "lmm_rgcl_knn", "image_grid", "image_region",
          "text_bert", "concat_bert"]
# The evaluate stage reads train@'s predictions and the memes, never features, a base model or `launch`: a new
# input reruns train@, and evaluate follows only when predictions change.
CLIP_READERS = {"clip_fusion", "clip_linear_image", "clip_linear_text", "clip_zeroshot", "course_mlp", "rgcl",
                "rgcl_bce_only", "rgcl_knn"}


def stage_outputs(repository: Path) -> dict[str, list[str]]:
    from dvc.repo import Repo

    with Repo(str(repository)) as repo:
        return {stage.addressing: [str(Path(out.def_path)) for out in stage.outs] for stage in repo.index.stages}


def stage_dependencies(repository: Path) -> set[str]:
    from dvc.repo import Repo

    with Repo(str(repository)) as repo:
        return {str(Path(dep.def_path)) for stage in repo.index.stages for dep in stage.deps}


def fake_outputs(repository: Path) -> None:
    """A stand-in file in every output (a folder when the path has no suffix), and in each file that a stage
    reads inside another's output folder (data/memes/manifest.json); then `dvc commit` them all."""
    outputs = [output for outputs in stage_outputs(repository).values() for output in outputs]
    for output in outputs:
        path = repository / output
        if path.suffix:  # metrics.json, report.html
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "stand-in.txt").write_text(output)
    for dependency in stage_dependencies(repository):
        inside = any(Path(dependency).is_relative_to(output) and dependency != output for output in outputs)
        if inside and not (repository / dependency).exists():
            (repository / dependency).write_text("{}")
    run(["dvc", "commit", "--force", "--quiet"], repository)


def stale(repository: Path) -> set[str]:
    """The stages `dvc status` lists (changed deps, params or outputs)."""
    status = json.loads(run(["dvc", "status", "--json"], repository).stdout)
    return set(status)


@pytest.fixture(scope="module", params=["demo", "full"])
def repository(request, tmp_path_factory) -> Path:
    repository = copy_repository(tmp_path_factory.mktemp(f"deps-{request.param}") / "hatememes")
    compose([f"profile={request.param}"], repository / "conf", repository / "params.yaml")
    (repository / "dvc.lock").unlink(missing_ok=True)
    fake_outputs(repository)
    commit(repository, "every output stood in and committed")
    assert stale(repository) == set(), "the stand-ins were committed: nothing should be out of date"
    return repository


def touched(repository: Path, path: str) -> set[str]:
    """Stages out of date after a file is added to `path`; the change is undone afterwards."""
    extra = repository / path / "new-file.txt"
    extra.write_text("changed")
    try:
        return stale(repository)
    finally:
        extra.unlink()  # the committed state again (the fixture checked that it is clean)


def test_clip_features_rerun_only_their_readers(repository):
    assert touched(repository, "data/features/clip") == {
        "features@clip", *(f"train@{m}" for m in CLIP_READERS)}


def test_region_features_do_not_rerun_clip_fusion_or_llava(repository):
    readers = {"visualbert", "image_region"} | ({"mmbt"} if image_features(repository) == "regions" else set())
    assert touched(repository, "data/features/regions") == {
        "features@regions", *(f"train@{m}" for m in readers)}


def test_a_new_llava_base_reruns_only_the_lmm_models(repository):
    assert touched(repository, "data/llava-tiny") == {
        "pretrain", "train@llava_zeroshot", "train@llava_lora", "train@lmm_zeroshot", "train@lmm_lora"}


def test_the_memes_rerun_every_stage_that_reads_them(repository):
    """Stages read data/memes through its manifest, which pins every split's annotations and images: a
    changed manifest reruns each reader (and fetch, whose output changed); nothing else."""
    manifest = repository / "data/memes/manifest.json"
    original = manifest.read_text()
    manifest.write_text('{"changed": true}')
    try:
        readers = {f"features@{kind}" for kind in feature_kinds(repository)} | {"explain", "report", "lmm_features"}
        readers |= {"evaluate", *(f"train@{m}" for m in MODELS)}
        assert stale(repository) == {"fetch"} | readers
    finally:
        manifest.write_text(original)


def test_new_predictions_rerun_only_their_readers(repository):
    """train@mmbt is listed because its output changed; what reads the predictions follows, nothing else."""
    assert touched(repository, "eval/mmbt/predictions") == {"train@mmbt", "evaluate", "ensemble", "report"}
    assert touched(repository, "eval/text_bert/predictions") == {"train@text_bert", "evaluate", "late_fusion",
                                                                  "report"}


def test_a_retrained_stage_one_reruns_the_lmm_features_and_only_what_reads_them(repository):
    """LMM-RGCL's second stage reads stage 1's hidden states (data/features/lmm, from the model that
    `lmm_features.model` names: llava_lora in the demo, lmm_lora in the full profile); the other LMM is no dep."""
    from hatememes.params import load_params

    stage_one = load_params(repository / "params.yaml")["lmm_features"]["model"]
    other = {"llava_lora": "lmm_lora", "lmm_lora": "llava_lora"}[stage_one]
    assert touched(repository, f"models/{stage_one}") == {f"train@{stage_one}", "lmm_features"}
    assert touched(repository, f"models/{other}") == {f"train@{other}"}
    assert touched(repository, "data/features/lmm") == {"lmm_features", "train@lmm_rgcl", "train@lmm_rgcl_knn"}


def test_a_retrained_rgcl_reruns_its_knn_index(repository):
    """rgcl_knn reads the rgcl encoder (models/rgcl): a new one rebuilds its index, nothing else follows."""
    assert touched(repository, "models/rgcl") == {"train@rgcl", "train@rgcl_knn"}


def feature_kinds(repository: Path) -> list[str]:
    from hatememes.params import load_params

    return load_params(repository / "params.yaml")["features"]["kinds"]


def test_each_profile_extracts_what_its_models_read(repository):
    """features@ runs the profile's kinds: the grid for image_grid and concat_bert (and MMBT-Grid in the full
    profile), the regions for visualbert and image_region; whatever mmbt reads is extracted."""
    from dvc.repo import Repo

    with Repo(str(repository)) as repo:
        stages = {stage.name for stage in repo.index.stages}
    kinds = feature_kinds(repository)
    assert {stage for stage in stages if stage.startswith("features@")} == {f"features@{kind}" for kind in kinds}
    assert image_features(repository) in kinds
    assert {"grid", "regions"} <= set(kinds)


def image_features(repository: Path) -> str:
    from hatememes.params import load_params

    return load_params(repository / "params.yaml")["train"]["mmbt"]["model"]["image_features"]


def test_one_param_reruns_only_the_stage_that_reads_it(repository):
    from dvc.utils.hydra import apply_overrides

    params = repository / "params.yaml"
    original = params.read_text()
    try:
        apply_overrides(str(params), ["train.mmbt.loop.lr=3.0e-5"])  # what `dvc exp run -S` writes
        assert stale(repository) == {"train@mmbt"}
        params.write_text(original)
        apply_overrides(str(params), ["features.regions.num_boxes=7"])
        assert "features@regions" in stale(repository) and "features@clip" not in stale(repository)
        params.write_text(original)
        apply_overrides(str(params), ["launch.accelerate_config=configs/accelerate/cpu.yaml"])
        assert stale(repository) == {f"train@{m}" for m in MODELS}
        params.write_text(original)
        apply_overrides(str(params), ["evaluate.n_boot=321"])
        assert stale(repository) == {"evaluate", "ensemble", "late_fusion"}
    finally:
        params.write_text(original)
    assert stale(repository) == set()


def test_the_full_profile_fetches_a_zip_when_told_to(tmp_path):
    """`dvc exp run -S profile=full -S fetch.source=zip -S fetch.path=...`: the overrides reach the fetch stage
    (the first design's overlay shadowed them, and the zip route failed with "no Hateful Memes layout found")."""
    import zipfile

    from conftest import SIZES, write_official

    source = tmp_path / "release"
    write_official(source)
    archive = tmp_path / "hateful_memes.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in sorted(source.rglob("*")):
            zipped.write(file, "hateful_memes/" + file.relative_to(source).as_posix())
    repository = copy_repository(tmp_path / "hatememes")
    compose(["profile=full", "fetch.source=zip", f"fetch.path={archive}"], repository / "conf",
            repository / "params.yaml")
    run(["dvc", "repro", "--single-item", "fetch"], repository)
    manifest = json.loads((repository / "data" / "memes" / "manifest.json").read_text())
    assert {split: value["count"] for split, value in manifest["splits"].items()} == SIZES
    assert manifest["splits"]["train"]["file"] == f"{archive}:hateful_memes/train.jsonl"
