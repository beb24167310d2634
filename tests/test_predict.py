"""`pipelines/predict.py` on a model trained by the real stages: one meme, a JSON-lines file and an
official-layout folder score exactly as the train stage scored them, labelled at the dev threshold."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "reliability"))
from stage_runs import (  # noqa: E402
    PARAMS,
    RANDOM_CLIP,
    evaluate_args,
    evaluate_main,
    fetched,
    predictions_of,
    train_args,
    train_main,
)

import features as features_stage  # noqa: E402  (pipelines/ is on the path through stage_runs)
import predict as predict_stage  # noqa: E402
from conftest import write_lines  # noqa: E402
from hatememes.data.memes import BadRecordsError  # noqa: E402
from hatememes.shared_task import read_submission  # noqa: E402

pytestmark = pytest.mark.slow


# Hate-CLIPper as its authors read CLIP: a ViT's pooled outputs before the projections, squash-resized
POOLED = ["--set", "features.clip.model=tiny-vit", "--set", "features.clip.pooled=true", "--set",
          "features.clip.resize_mode=squash", "--set", "train.clip_fusion.model.embeddings=pooled"]


def train_and_evaluate(root: Path, *extra: str) -> dict:
    """fetch -> features clip (random tiny CLIP) -> train clip_fusion -> evaluate, in process."""
    memes, features = fetched(root), root / "features"
    model, evaluation = root / "models" / "clip_fusion", root / "eval" / "clip_fusion"
    assert features_stage.main(["clip", "--params", str(PARAMS), "--memes", str(memes), "--out",
                                str(features / "clip"), *RANDOM_CLIP, *extra]) == 0
    assert train_main(train_args(memes, features, model, *RANDOM_CLIP, *extra)) == 0
    assert evaluate_main(evaluate_args(memes, model, evaluation)) == 0
    return {"root": root, "memes": memes, "model": model, "eval": evaluation}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    return train_and_evaluate(tmp_path_factory.mktemp("predict"))


def scored_by_evaluate(trained: dict, split: str) -> dict[int, float]:
    """The scores the train stage wrote for the evaluate stage."""
    with (predictions_of(trained["model"]) / f"{split}.csv").open() as file:
        return {int(row["id"]): float(row["proba"]) for row in csv.DictReader(file)}


def dev_threshold(trained: dict) -> float:
    return json.loads((trained["eval"] / "metrics.json").read_text())["dev_seen"]["threshold"]


def predict(trained: dict, *args: str, capsys) -> list[str]:
    capsys.readouterr()
    code = predict_stage.main(["--model", str(trained["model"]), "--metrics", str(trained["eval"] / "metrics.json"),
                               *args])
    assert code == 0
    return capsys.readouterr().out.splitlines()


def test_a_folder_gives_one_json_line_per_meme_as_evaluate_scored_it(trained, capsys):
    lines = [json.loads(line) for line in predict(trained, "--input", str(trained["memes"]), capsys=capsys)]
    threshold = dev_threshold(trained)
    manifest = json.loads((trained["memes"] / "manifest.json").read_text())
    assert len(lines) == sum(split["count"] for split in manifest["splits"].values())
    submissions = {split: read_submission(predictions_of(trained["model"]) / "fine_grained" / f"{split}.jsonl")
                   for split in manifest["splits"]}  # the demo's clip_fusion has fine-grained heads
    for line in lines:
        assert set(line) == {"id", "proba", "label", "model", "split", "pred_pc", "pred_attack"}
        assert line["model"] == "clip_fusion"
        assert line["proba"] == pytest.approx(scored_by_evaluate(trained, line["split"])[line["id"]], abs=1e-6)
        assert line["label"] == int(line["proba"] >= threshold)
        expected = submissions[line["split"]][line["id"]]
        for task in ("pred_pc", "pred_attack"):
            assert line[task] == pytest.approx(expected[task], abs=1e-6)


def test_a_model_on_pooled_clip_outputs_predicts_as_evaluate_scored(tmp_path, capsys):
    """predict extracts the pooled outputs the model was trained on (the features params it recorded)."""
    trained = train_and_evaluate(tmp_path, *POOLED)
    assert json.loads((trained["model"] / "config.json").read_text())["embeddings"] == "pooled"
    lines = [json.loads(line) for line in predict(trained, "--input", str(trained["memes"]), capsys=capsys)]
    for line in lines:
        assert line["proba"] == pytest.approx(scored_by_evaluate(trained, line["split"])[line["id"]], abs=1e-6)


def test_a_jsonl_file_without_ids_and_the_single_meme_form_agree(trained, capsys, tmp_path):
    memes = [json.loads(line) for line in (trained["memes"] / "test_unseen.jsonl").read_text().splitlines()]
    new = tmp_path / "new.jsonl"
    write_lines(new, [json.dumps({"img": str(trained["memes"] / m["img"]), "text": m["text"]}) for m in memes[:3]])
    out = tmp_path / "scores.jsonl"
    assert predict(trained, "--input", str(new), "--out", str(out), "--threshold", "0.5", capsys=capsys) == []
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == [1, 2, 3]  # line numbers stand in for missing ids
    expected = scored_by_evaluate(trained, "test_unseen")
    for line, meme in zip(lines, memes, strict=False):
        assert "split" not in line and line["label"] == int(line["proba"] >= 0.5)
        assert line["proba"] == pytest.approx(expected[meme["id"]], abs=1e-6)
        one = predict(trained, "--image", str(trained["memes"] / meme["img"]), "--text", meme["text"], capsys=capsys)
        assert float(one[-1]) == pytest.approx(line["proba"], abs=1e-6)


def test_bad_records_are_all_named_and_nothing_is_scored(trained, capsys, tmp_path):
    good = json.loads((trained["memes"] / "train.jsonl").read_text().splitlines()[0])
    good["img"] = str(trained["memes"] / good["img"])
    bad = tmp_path / "bad.jsonl"
    write_lines(bad, [json.dumps(good), '{"id": 7, "img": "nowhere.png", "text": "x"}', "{not json",
                      json.dumps({"id": 9, "img": good["img"], "text": ""})])
    with pytest.raises(BadRecordsError) as error:
        predict(trained, "--input", str(bad), capsys=capsys)
    message = str(error.value)
    assert "3 bad record(s)" in message
    for line, reason in ((2, "image nowhere.png not found"), (3, "malformed JSON"), (4, "empty text")):
        assert f"{bad}:{line}" in message and reason in message
    assert capsys.readouterr().out == ""


def test_no_dev_threshold_is_a_clear_error(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="run the evaluate stage, or pass --metrics FILE or --threshold T"):
        predict_stage.main(["--model", str(trained["model"]), "--metrics", str(tmp_path / "none.json"),
                            "--input", str(trained["memes"] / "dev_seen.jsonl")])
