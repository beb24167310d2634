"""The real stage scripts as subprocesses, SIGKILLed mid-way: the rerun completes with outputs identical to
an uninterrupted run, and no half-written output is ever in the place of a complete one.

Each stage is killed twice in a row at two points (see kill_at.py), then rerun: first while writing a file
under its temporary name, then with everything written but not yet renamed into place. The reference run
fetches an encrypted zip with HATEMEMES_ZIP_PASSWORD and HF_TOKEN set, and its every output is searched
for both secrets.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
from stage_runs import (
    PARAMS,
    QUICK_EVAL,
    RANDOM_CLIP,
    SIZES,
    evaluate_args,
    evaluate_main,
    predictions_of,
    run_script,
    script_env,
    train_args,
    train_main,
    tree_bytes,
    write_annotations,
    write_official,
)

from test_fetch import encrypted_zip

pytestmark = pytest.mark.slow
PASSWORD, TOKEN = "zip-Pa55word-7f3c", "hf_reliabilityTokenValue91"
ENV = script_env(HATEMEMES_ZIP_PASSWORD=PASSWORD, HF_TOKEN=TOKEN)
KILLED = -signal.SIGKILL


def fetch_args(archive: Path, out: Path) -> list[str]:
    """The zip, and the fine-grained annotations beside it (the demo's params train fine-grained heads)."""
    return ["--params", str(PARAMS), "--out", str(out), "--source", "zip", "--path", str(archive),
            "--set", f"fetch.fine_grained={archive.parent / 'annotations'}"]


def features_args(memes: Path, out: Path) -> list[str]:
    return ["clip", "--params", str(PARAMS), "--memes", str(memes), "--out", str(out), *RANDOM_CLIP]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """One uninterrupted run of fetch (zip) -> features clip -> train clip_fusion (and score) -> evaluate."""
    root = tmp_path_factory.mktemp("reference")
    write_annotations(root / "annotations", write_official(root / "raw", SIZES))
    encrypted_zip(root / "hateful_memes.zip", root / "raw", PASSWORD.encode())
    archive, memes, features = root / "hateful_memes.zip", root / "memes", root / "features"
    model, evaluation = root / "models" / "clip_fusion", root / "eval" / "clip_fusion"
    runs = [run_script("fetch.py", fetch_args(archive, memes), ENV),
            run_script("features.py", features_args(memes, features / "clip"), ENV),
            run_script("train.py", train_args(memes, features, model), ENV),
            run_script("evaluate.py", evaluate_args(memes, model, evaluation), ENV)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    return {"root": root, "archive": archive, "memes": memes, "features": features, "model": model,
            "eval": evaluation, "runs": runs}


def killed(result) -> None:
    assert result.returncode == KILLED, f"not killed (rc {result.returncode}):\n{result.stderr[-2000:]}"


def test_fetch_killed_twice_then_rerun_gives_the_same_memes(reference, tmp_path):
    out = tmp_path / "memes"
    killed(run_script("fetch.py", fetch_args(reference["archive"], out), ENV,
                      kill_at=("rename", "*/.memes.partial/memes/manifest.json", 1)))
    assert not out.exists()
    killed(run_script("fetch.py", fetch_args(reference["archive"], out), ENV, kill_at=("rename", str(out), 1)))
    assert not out.exists() and (tmp_path / ".memes.partial" / "memes" / "manifest.json").is_file()
    assert run_script("fetch.py", fetch_args(reference["archive"], out), ENV).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memes"]  # no staging copy left behind
    mine, theirs = tree_bytes(out), tree_bytes(reference["memes"])
    staging = {"memes": tmp_path / ".memes.partial", "theirs": reference["root"] / ".memes.partial"}
    manifest = mine.pop("manifest.json").decode().replace(str(staging["memes"]), "STAGING")  # unzip folder named
    assert manifest == theirs.pop("manifest.json").decode().replace(str(staging["theirs"]), "STAGING")
    assert mine == theirs


def test_features_killed_twice_then_rerun_gives_identical_files(reference, tmp_path):
    out, memes = tmp_path / "features" / "clip", reference["memes"]
    partial = out.with_name(".clip.partial")
    killed(run_script("features.py", features_args(memes, out), ENV,
                      kill_at=("rename", f"{partial}/dev_unseen.safetensors", 1)))
    assert not out.exists()
    assert sorted(p.name for p in partial.iterdir()) == [".dev_unseen.safetensors.tmp", "dev_seen.safetensors",
                                                          "train.safetensors"]
    with pytest.raises(FileNotFoundError, match=r"clip/meta.json: not found; clip_fusion needs the 'clip' features"):
        train_main(train_args(memes, out.parent, tmp_path / "model"))
    killed(run_script("features.py", features_args(memes, out), ENV, kill_at=("rename", str(out), 1)))
    assert not out.exists() and (partial / "meta.json").is_file()
    assert run_script("features.py", features_args(memes, out), ENV).returncode == 0
    assert not partial.exists()
    assert tree_bytes(out) == tree_bytes(reference["features"] / "clip")


def test_training_killed_mid_epoch_and_mid_save_then_rerun_gives_identical_weights(reference, tmp_path):
    out = tmp_path / "models" / "clip_fusion"
    args = train_args(reference["memes"], reference["features"], out)
    # 3 batches an epoch, a checkpoint every 2 steps: the 4th is step 6, so step-4 (epoch 1, batch 1) is the last
    killed(run_script("train.py", args, ENV, kill_at=("rename", f"{out}/checkpoints/step-*", 4)))
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-00000004-batch-000001-epoch-0001", "step-00000006-batch-000003-epoch-0001.partial"]
    assert not (out / "model.json").exists()
    second = run_script("train.py", args, ENV, kill_at=("write", f"{out}/model.safetensors", 1))
    killed(second)
    assert "resuming from step-00000004-batch-000001-epoch-0001" in second.stdout
    assert (out / "model.safetensors").is_file() and not (out / "model.json").exists()
    with pytest.raises(FileNotFoundError, match="no predictions for train, dev_seen"):
        evaluate_main(evaluate_args(reference["memes"], out, tmp_path / "eval"))
    third = run_script("train.py", args, ENV)
    assert third.returncode == 0, third.stderr[-2000:]
    skip = ("checkpoints", "dvclive")
    mine, theirs = tree_bytes(out, skip), tree_bytes(reference["model"], skip)
    assert sorted(mine) == ["config.json", "model.json", "model.safetensors", "params.json"]
    assert mine == theirs
    assert tree_bytes(predictions_of(out)) == tree_bytes(predictions_of(reference["model"]))


def test_scoring_killed_leaves_no_predictions_then_rerun_gives_identical_ones(reference, tmp_path):
    out = tmp_path / "models" / "clip_fusion"
    args = train_args(reference["memes"], reference["features"], out)
    partial = predictions_of(out).with_name(f".{predictions_of(out).name}.partial")
    killed(run_script("train.py", args, ENV, kill_at=("open", f"{partial}/test_seen.csv", 1)))
    assert (out / "model.json").is_file() and not predictions_of(out).exists()  # no split without the others
    assert run_script("train.py", args, ENV).returncode == 0
    assert tree_bytes(predictions_of(out)) == tree_bytes(predictions_of(reference["model"]))


def test_evaluation_killed_twice_then_rerun_gives_identical_files(reference, tmp_path):
    out = tmp_path / "eval" / "clip_fusion"
    args = evaluate_args(reference["memes"], reference["model"], out)
    killed(run_script("evaluate.py", args, ENV, kill_at=("open", "*/roc/test_seen.csv", 1)))
    assert not out.exists()
    killed(run_script("evaluate.py", args, ENV, kill_at=("rename", f"{out}/roc", 1)))
    assert not (out / "metrics.json").exists()  # moved last: not complete
    assert run_script("evaluate.py", args, ENV).returncode == 0
    assert tree_bytes(out) == tree_bytes(reference["eval"])
    killed(run_script("evaluate.py", args, ENV, kill_at=("open", "*/roc/test_seen.csv", 1)))
    assert tree_bytes(out) == tree_bytes(reference["eval"])  # a killed rerun leaves the complete one untouched


def test_one_evaluation_of_several_models_writes_what_one_model_at_a_time_writes(reference, tmp_path):
    """The evaluate stage scores every model in one process (`--eval EVAL NAME...`): each model's folder gets
    the files a run for it alone writes, and a model without predictions fails the call, named."""
    evaluation = tmp_path / "eval"
    for name in ("first", "second"):
        shutil.copytree(predictions_of(reference["model"]), evaluation / name / "predictions")
    common = ["--params", str(PARAMS), "--memes", str(reference["memes"]), "--eval", str(evaluation), *QUICK_EVAL]
    assert evaluate_main(["first", "second", *common]) == 0
    for name in ("first", "second"):
        assert tree_bytes(evaluation / name, skip=("predictions",)) == tree_bytes(reference["eval"])
    with pytest.raises(FileNotFoundError) as error:
        evaluate_main(["first", "missing", *common])
    assert "while evaluating missing" in " ".join(error.value.__notes__)
    with pytest.raises(SystemExit):  # --out names one model's folder
        evaluate_main(["first", "second", *common, "--out", str(tmp_path / "one")])


def test_no_secret_in_any_output_log_or_saved_params(reference):
    files = {p: p.read_bytes() for p in reference["root"].rglob("*") if p.is_file() and "raw" not in p.parts}
    assert any(p.name == "params.json" for p in files) and any(p.name == "manifest.json" for p in files)
    logs = "".join(run.stdout + run.stderr for run in reference["runs"])
    for secret in (PASSWORD, TOKEN):
        assert secret not in logs
        assert not [p for p, data in files.items() if secret.encode() in data]


def test_the_stages_write_tensors_only_as_safetensors(reference):
    """Features and model weights as the real stages wrote them: safetensors, never a pickle format."""
    assert {p.suffix for p in (reference["features"] / "clip").iterdir()} == {".safetensors", ".json"}
    model_files = {p.name for p in reference["model"].iterdir() if p.is_file()}
    assert model_files == {"config.json", "model.json", "model.safetensors", "params.json"}
