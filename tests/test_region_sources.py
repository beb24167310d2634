"""features.regions' sources: MMF's precomputed files (read safely, checked, all or nothing) and the detector's
top-K boxes. The MMF files are written here as MMF writes them: np.save of the features and of an info dict."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))

import features as features_stage  # noqa: E402
from hatememes.data.readers import load_items  # noqa: E402
from hatememes.data.sources import FetchParams, fetch  # noqa: E402
from hatememes.features import FeaturesParams, build_regions, mmf_regions  # noqa: E402
from hatememes.features.grid import CnnParams  # noqa: E402
from hatememes.features.mmf_regions import PrecomputedFeaturesError, PrecomputedRegions  # noqa: E402
from hatememes.features.regions import RegionsExtractor, RegionsParams  # noqa: E402
from hatememes.features.safe_npy import UnsafePickleError, load_pickled_npy  # noqa: E402
from hatememes.features.store import load_split  # noqa: E402

ROOT = Path(__file__).parents[1]
WIDTH, HEIGHT, K = 24, 20, 4  # the test images' size (conftest.save_png); boxes kept per image
BOXES = {  # meme id -> its boxes in pixels (x1, y1, x2, y2), by confidence as MMF sorts them
    1: [[0, 0, 24, 20], [6, 5, 18, 15], [0, 0, 12, 10], [12, 10, 24, 20], [3, 2, 9, 8], [1, 1, 2, 2]],  # 6: K kept
    2: [[0, 0, 24, 20], [6, 5, 18, 15], [0, 10, 24, 20], [12, 0, 24, 10]],  # exactly K
    3: [[2, 4, 22, 16], [0, 0, 24.01, 20]],  # 2: padded; the second edge strays past the image by float rounding
    4: [[0, 0, 24, 20], [6, 5, 18, 15], [0, 0, 12, 10], [12, 10, 24, 20], [3, 2, 9, 8]],
}


@pytest.fixture(scope="module")
def memes(tmp_path_factory) -> Path:
    """Four memes (ids 1-4: train 1, 2; dev_seen 3; test_unseen 4), images img/0000N.png of 24 x 20 px."""
    from conftest import write_official

    root = tmp_path_factory.mktemp("region_sources")
    write_official(root / "raw", {"train": 2, "dev_seen": 1, "test_unseen": 1})
    fetch(FetchParams(source="local", path=str(root / "raw")), root / "memes")
    return root / "memes"


def mmf_features(meme_id: int, rows: int, dim: int = 2048) -> np.ndarray:
    return np.random.default_rng(meme_id).standard_normal((rows, dim)).astype(np.float32)  # (n, D)


def write_mmf(folder: Path, meme_id: int, stem: str | None = None, features: np.ndarray | None = None,
              **info) -> None:
    """`<stem>.npy` and `<stem>_info.npy` as MMF's extract_features_vmb.py saves them; `info` overrides keys."""
    boxes = np.array(BOXES[meme_id], dtype=np.float32)
    stem = stem or f"{meme_id:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{stem}.npy", mmf_features(meme_id, len(boxes)) if features is None else features)
    info = {"bbox": boxes, "num_boxes": len(boxes), "objects": np.arange(len(boxes)),
            "cls_prob": np.full((len(boxes), 1600), 1 / 1600, dtype=np.float32),
            "image_width": WIDTH, "image_height": np.int64(HEIGHT), **info}  # a Python int and a numpy one
    np.save(folder / f"{stem}_info.npy", {key: value for key, value in info.items() if value is not None})


@pytest.fixture
def mmf_dir(tmp_path) -> Path:
    """MMF's files for the four memes: padded names (as MMF names them after the images), meme 4 unpadded."""
    for meme_id in BOXES:
        write_mmf(tmp_path / "mmf", meme_id, stem="4" if meme_id == 4 else None)
    return tmp_path / "mmf"


def precomputed(folder: Path) -> FeaturesParams:
    return FeaturesParams(regions=RegionsParams(num_boxes=K, precomputed_dir=str(folder)))


def test_precomputed_regions_are_the_first_k_boxes_normalised(memes, mmf_dir, tmp_path, monkeypatch):
    def refuse(*args):
        raise AssertionError("the precomputed source loaded a CNN or an image")

    monkeypatch.setattr("hatememes.features.regions.load_cnn", refuse)
    monkeypatch.setattr("hatememes.features.extract.load_rgb", refuse)
    out = tmp_path / "features" / "regions"
    features_stage.extract("regions", precomputed(mmf_dir), memes, out)

    train = load_split(out, "train", memes)  # the store's contract: ids in jsonl order, the data hash checked
    assert train["ids"].tolist() == [1, 2]
    assert train["regions"].dtype == train["boxes"].dtype == torch.float32
    assert train["regions"].shape == (2, K, 2048) and train["boxes"].shape == (2, K, 6)
    torch.testing.assert_close(train["regions"][0], torch.from_numpy(mmf_features(1, 6)[:K]), rtol=0, atol=0)
    assert train["boxes"][0].tolist() == [[0, 0, 1, 1, 1, 1], [.25, .25, .75, .75, .5, .5],
                                          [0, 0, .5, .5, .5, .5], [.5, .5, 1, 1, .5, .5]]
    dev = load_split(out, "dev_seen", memes)  # meme 3: 2 boxes, padded with zero rows; its 24.01 clipped to 1
    torch.testing.assert_close(dev["boxes"][0, :2], torch.tensor([[2 / 24, .2, 22 / 24, .8, 20 / 24, .6],
                                                                  [0, 0, 1, 1, 1, 1]]))
    assert not dev["regions"][0, 2:].any() and not dev["boxes"][0, 2:].any()
    torch.testing.assert_close(dev["regions"][0, :2], torch.from_numpy(mmf_features(3, 2)))
    test = load_split(out, "test_unseen", memes)  # meme 4 from the unpadded 4.npy
    torch.testing.assert_close(test["regions"][0], torch.from_numpy(mmf_features(4, 5)[:K]))

    meta = json.loads((out / "meta.json").read_text())
    assert meta["dim"] == 2048 and meta["num_boxes"] == K and meta["precomputed_dir"] == str(mmf_dir)
    assert meta["box_source"].startswith("precomputed") and meta["shapes"] == {"regions": [K, 2048], "boxes": [K, 6]}
    assert meta["padded"] == {"train": {"images": 0, "fewest_boxes": K}, "dev_seen": {"images": 1, "fewest_boxes": 2},
                              "test_unseen": {"images": 0, "fewest_boxes": K}}
    items = load_items(memes, {"regions": out}, "train", ("regions",))  # what VisualBERT and MMBT-Region read
    assert items[1]["regions"].shape == (K, 2048) and items[1]["boxes"].shape == (K, 6)


def test_the_image_named_file_wins_over_the_unpadded_one(memes, mmf_dir):
    write_mmf(mmf_dir, 2, stem="2", features=mmf_features(99, 4))  # another 2.npy beside 00002.npy
    _, tensors = PrecomputedRegions(precomputed(mmf_dir).regions).read_split(memes, "train")
    torch.testing.assert_close(tensors["regions"][1], torch.from_numpy(mmf_features(2, 4)))


def write_bad(folder: Path, case: str) -> None:
    """Meme 4's files (test_unseen, the last split written) spoilt as `case` says."""
    stem, rows = "00004", len(BOXES[4])
    (folder / "4.npy").unlink()
    (folder / "4_info.npy").unlink()
    bad = {
        "no features": lambda: None,
        "no info": lambda: np.save(folder / f"{stem}.npy", mmf_features(4, rows)),
        "1-D features": lambda: write_mmf(folder, 4, features=mmf_features(4, rows)[0]),
        "wrong dim": lambda: write_mmf(folder, 4, features=mmf_features(4, rows, dim=1024)),
        "NaN features": lambda: write_mmf(folder, 4, features=np.where(np.eye(rows, 2048) > 0, np.nan,
                                                                       mmf_features(4, rows))),
        "inf box": lambda: write_mmf(folder, 4, bbox=np.array(BOXES[4], np.float32) * [1, 1, np.inf, 1]),
        "num_boxes": lambda: write_mmf(folder, 4, num_boxes=rows + 1),
        "bbox rows": lambda: write_mmf(folder, 4, bbox=np.array(BOXES[4][:2], np.float32)),
        "outside": lambda: write_mmf(folder, 4, image_width=12),
        "x2 < x1": lambda: write_mmf(folder, 4, bbox=np.array(BOXES[4], np.float32)[:, [2, 1, 0, 3]]),
        "no size": lambda: write_mmf(folder, 4, image_height=None),
        "not a dict": lambda: (write_mmf(folder, 4), np.save(folder / f"{stem}_info.npy", np.zeros(3))),
    }
    bad[case]()


@pytest.mark.parametrize("case, reason", [
    ("no features", r"mmf: no 00004.npy or 4.npy"),
    ("no info", r"00004_info.npy: missing \(the info file beside 00004.npy\)"),
    ("1-D features", r"00004.npy: float32 features of shape \(2048,\), expected \(boxes, 2048\)"),
    ("wrong dim", r"00004.npy: float32 features of shape \(5, 1024\), expected \(boxes, 2048\)"),
    ("NaN features", r"00004.npy: NaN or inf in the features"),
    ("inf box", r"00004_info.npy: NaN or inf in bbox"),
    ("num_boxes", r"00004_info.npy: num_boxes = 6, but the arrays have 5 rows"),
    ("bbox rows", r"00004_info.npy: bbox of shape \(2, 4\) \(float32\), expected \(5, 4\)"),
    ("outside", r"00004_info.npy: a box outside the 12 x 20 image"),
    ("x2 < x1", r"00004_info.npy: a box with x2 < x1 or y2 < y1"),
    ("no size", r"00004_info.npy: no image_height"),
    ("not a dict", r"00004_info.npy: a float64 array of shape \(3,\), not one pickled object"),
])
def test_a_bad_file_fails_naming_the_meme_file_and_reason_and_writes_nothing(memes, mmf_dir, tmp_path, case,
                                                                             reason):
    write_bad(mmf_dir, case)
    out = tmp_path / "features" / "regions"
    with pytest.raises(PrecomputedFeaturesError, match=r"1 of 1 memes of split test_unseen .*\n  meme 4: .*" + reason):
        features_stage.extract("regions", precomputed(mmf_dir), memes, out)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no out, no .partial (train was built)


def test_every_bad_meme_of_a_split_is_in_one_error_and_old_features_stay(memes, mmf_dir, tmp_path, monkeypatch):
    out = tmp_path / "features" / "regions"
    features_stage.extract("regions", precomputed(mmf_dir), memes, out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    for meme_id in (1, 2):
        write_mmf(mmf_dir, meme_id, num_boxes=-1)
    monkeypatch.setattr(mmf_regions, "LISTED", 1)
    with pytest.raises(PrecomputedFeaturesError, match=r"2 of 2 memes of split train .*\n  meme 1: .*00001_info.npy: "
                                                       r"num_boxes = -1.*\n  \.\.\. and 1 more$"):
        features_stage.extract("regions", precomputed(mmf_dir), memes, out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert sorted(path.name for path in out.parent.iterdir()) == ["regions"]


def test_the_stage_reports_bad_files_in_one_line_per_meme(memes, mmf_dir, tmp_path, capsys):
    """`python pipelines/features.py regions` with precomputed_dir: exit 1 and the message, no traceback."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["features"]["regions"].update({"num_boxes": K, "precomputed_dir": str(mmf_dir)})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_bad(mmf_dir, "no features")
    out = tmp_path / "features" / "regions"
    assert features_stage.main(["regions", "--memes", str(memes), "--out", str(out),
                                "--params", str(tmp_path / "params.yaml")]) == 1
    assert "meme 4: " in capsys.readouterr().err and not out.exists()


class Payload:
    """A pickle that runs a shell command when loaded (what np.load(allow_pickle=True) would do)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_malicious_info_file_is_refused_and_not_run(memes, mmf_dir, tmp_path):
    marker = tmp_path / "pwned"
    info = mmf_dir / "00004_info.npy"
    (mmf_dir / "4.npy").rename(mmf_dir / "00004.npy")
    (mmf_dir / "4_info.npy").unlink()
    np.save(info, {"bbox": Payload(f"touch {marker}"), "num_boxes": 5, "image_width": WIDTH, "image_height": HEIGHT})
    with pytest.raises(UnsafePickleError, match=rf"{info}: refused to unpickle the forbidden global "
                                                rf"{os.system.__module__}\.system"):
        load_pickled_npy(info)
    out = tmp_path / "features" / "regions"
    with pytest.raises(PrecomputedFeaturesError, match=r"meme 4: .*00004_info.npy: refused .* forbidden global"):
        features_stage.extract("regions", precomputed(mmf_dir), memes, out)
    assert not marker.exists() and not out.exists()
    np.load(info, allow_pickle=True)  # the payload is live: numpy's own loader runs it
    assert marker.exists()


def test_other_globals_are_refused_too(tmp_path):
    path = tmp_path / "eval_info.npy"
    with open(path, "wb") as file:  # a 0-d object array whose pickle calls builtins.eval
        np.lib.format.write_array_header_1_0(file, {"descr": "|O", "fortran_order": False, "shape": ()})
        file.write(b"cbuiltins\neval\n(V1+1\ntR.")  # protocol 0: GLOBAL, MARK, the argument, TUPLE, REDUCE
    with pytest.raises(UnsafePickleError, match=r"forbidden global builtins\.eval"):
        load_pickled_npy(path)


def test_info_files_of_numpy_1_and_2_load_as_np_load_would(tmp_path):
    info = {"bbox": np.array([[0, 0, 4, 3]], np.float32), "num_boxes": 1, "image_width": np.int64(4),
            "image_height": 3.0, "objects": np.array([7]), "cls_prob": np.ones((1, 2), np.float16)}
    np.save(tmp_path / "numpy2_info.npy", info)  # this numpy (2.x) spells numpy._core.multiarray
    numpy1 = tmp_path / "numpy1_info.npy"  # numpy 1 pickled with protocol 3 and spelt numpy.core.multiarray
    with open(numpy1, "wb") as file:
        np.lib.format.write_array_header_1_0(file, {"descr": "|O", "fortran_order": False, "shape": ()})
        payload = pickle.dumps(np.array(info, dtype=object), protocol=3)
        assert b"numpy._core.multiarray\n" in payload
        file.write(payload.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    for path in (tmp_path / "numpy2_info.npy", numpy1):
        loaded = load_pickled_npy(path)
        expected = np.load(path, allow_pickle=True).item()
        assert loaded.keys() == expected.keys() == info.keys()
        for key, value in expected.items():
            assert type(loaded[key]) is type(value) and np.array_equal(loaded[key], value), key


def test_each_source_has_its_own_setting():
    assert RegionsParams().source == "grid"
    assert RegionsParams(detector="ssdlite320_mobilenet_v3_large", detector_weights="w.pth").source == "detector"
    assert RegionsParams(precomputed_dir="mmf").source == "precomputed"
    with pytest.raises(ValueError, match="detector and precomputed_dir are both set"):
        RegionsParams(detector="ssdlite320_mobilenet_v3_large", precomputed_dir="mmf")
    with pytest.raises(ValueError, match="detector_weights is set but detector is empty"):
        RegionsParams(detector_weights="w.pth")
    with pytest.raises(ValueError, match="read from MMF's files"):
        RegionsExtractor(RegionsParams(precomputed_dir="mmf"))
    with pytest.raises(FileNotFoundError, match="features.regions.precomputed_dir /nonexistent: no such folder"):
        build_regions(RegionsParams(precomputed_dir="/nonexistent"))


class RescoredDetections(torch.nn.Module):
    """A real detector's boxes with new, distinct scores in no order (a random detector's all tie near 0.011):
    score n - 1 - i marks the box that should come i-th. Records the device it ran on."""

    def __init__(self, detector: torch.nn.Module):
        super().__init__()
        self.detector, self.found, self.devices = detector, [], []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.devices.append(images[0].device)
        found = self.detector(images)
        self.found = [{"boxes": f["boxes"], "scores": torch.randperm(len(f["boxes"])).float()} for f in found]
        return self.found


@pytest.mark.slow  # builds a torchvision detector and a ResNet-18: ~13 s on 2 busy cores
def test_the_detector_source_takes_the_top_k_boxes_by_score_and_their_features(tmp_path):
    import torchvision
    from torchvision.ops import roi_align

    torch.manual_seed(0)
    weights = tmp_path / "ssdlite.pth"  # random weights, saved as a user's file
    torch.save(torchvision.models.get_model("ssdlite320_mobilenet_v3_large", weights=None,
                                            weights_backbone=None).state_dict(), weights)
    extractor = build_regions(RegionsParams(cnn=CnnParams("torchvision:resnet18", "", 64), num_boxes=3,
                                            detector="ssdlite320_mobilenet_v3_large", detector_weights=str(weights)))
    extractor.model.detector = RescoredDetections(extractor.model.detector)
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        rows = extractor.encode({"pixel_values": pixel_values})
        feature_map = extractor.model.trunk(pixel_values)  # (2, 512, 2, 2)
    assert extractor.model.detector.devices == [pixel_values.device]  # where the stage moved the model
    for image, found in enumerate(extractor.model.detector.found):
        count = len(found["scores"])
        assert count > 3
        top = torch.stack([found["boxes"][found["scores"] == count - 1 - i][0] for i in range(3)])  # (3, 4) pixels
        torch.testing.assert_close(rows["boxes"][image, :, :4], top / 64)
        pooled = roi_align(feature_map[image:image + 1], [top], output_size=2, spatial_scale=2 / 64,
                           sampling_ratio=2, aligned=True)  # (3, 512, 2, 2)
        torch.testing.assert_close(rows["regions"][image], pooled.mean(dim=(2, 3)))
