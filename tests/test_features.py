"""The features stage: stored rows equal a direct encode, ids follow the jsonl, stale caches are refused."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))

import features as features_stage  # noqa: E402
from hatememes.data.memes import load_rgb, read_split  # noqa: E402
from hatememes.data.sources import FetchParams, fetch  # noqa: E402
from hatememes.features.clip import ClipExtractor, ClipParams  # noqa: E402
from hatememes.features.grid import CnnParams  # noqa: E402
from hatememes.features.regions import RegionsExtractor, RegionsParams, box_geometry, grid_boxes  # noqa: E402
from hatememes.features.store import StaleFeaturesError, load_split  # noqa: E402

RANDOM = ["--set", "features.clip.pretrained=''", "--set", "features.grid.cnn.pretrained=''",
          "--set", "features.regions.cnn.pretrained=''", "--set", "features.num_workers=0",
          "--set", "features.batch_size=4"]


@pytest.fixture(scope="module")
def memes(tmp_path_factory) -> Path:
    from conftest import write_official

    root = tmp_path_factory.mktemp("features")
    write_official(root / "raw")
    fetch(FetchParams(source="local", path=str(root / "raw")), root / "memes")
    return root / "memes"


@pytest.fixture(scope="module")
def extracted(memes) -> Path:
    out = memes.parent / "features"
    for name in ("clip", "grid", "regions"):
        assert features_stage.main([name, "--memes", str(memes), "--out", str(out / name), *RANDOM]) == 0
    return out


def test_shapes_ids_and_meta(memes, extracted):
    for name, tensors in {"clip": ("image", "text"), "grid": ("grid",), "regions": ("regions", "boxes")}.items():
        meta = json.loads((extracted / name / "meta.json").read_text())
        assert {"extractor", "dim", "preprocessing", "shapes", "data_sha256", "pretrained"} <= set(meta)
        for split in ("train", "dev_seen", "test_unseen"):
            stored = load_file(str(extracted / name / f"{split}.safetensors"))
            ids = [m.id for m in read_split(memes, split)]
            assert stored["ids"].tolist() == ids
            for tensor in tensors:
                assert list(stored[tensor].shape) == [len(ids), *meta["shapes"][tensor]]
    grid_meta = json.loads((extracted / "grid" / "meta.json").read_text())
    assert grid_meta["shapes"]["grid"][1:] == [grid_meta["pool"], grid_meta["pool"]]
    assert "grid" in json.loads((extracted / "regions" / "meta.json").read_text())["box_source"]


def test_stored_clip_rows_equal_a_direct_encode(memes, extracted):
    torch.manual_seed(0)  # the stage seeds before building, so random weights agree
    model = json.loads((extracted / "clip" / "meta.json").read_text())["model"]  # params.yaml's clip model
    extractor = ClipExtractor(ClipParams(model=model, pretrained=""))
    meme = read_split(memes, "dev_unseen")[1]
    stored = load_split(extracted / "clip", "dev_unseen", memes)
    inputs = extractor.preprocess(load_rgb(memes / meme.img), meme.text)
    with torch.inference_mode():
        image = extractor.model.encode_image(inputs["pixel_values"][None])[0]
        text = extractor.model.encode_text(inputs["input_ids"][None])[0]
    torch.testing.assert_close(stored["image"][1], image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stored["text"][1], text, atol=1e-5, rtol=1e-5)


def test_missing_stale_and_corrupt_feature_files_are_named(memes, extracted, tmp_path):
    import shutil

    copy = tmp_path / "clip"
    shutil.copytree(extracted / "clip", copy)
    (copy / "test_seen.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_seen.safetensors: no features for split 'test_seen'"):
        load_split(copy, "test_seen", memes)
    meta = json.loads((copy / "meta.json").read_text())
    meta["data_sha256"]["dev_seen"] = "0" * 64
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StaleFeaturesError, match=r"dev_seen.safetensors: computed from another version"):
        load_split(copy, "dev_seen", memes)
    (copy / "train.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(StaleFeaturesError, match=r"train.safetensors: unreadable features file"):
        load_split(copy, "train", memes)


def test_grid_boxes_cover_scales_and_geometry():
    boxes = grid_boxes(10)
    assert boxes[0].tolist() == [0, 0, 1, 1]
    assert boxes[1:5].tolist() == [[0, 0, .5, .5], [.5, 0, 1, .5], [0, .5, .5, 1], [.5, .5, 1, 1]]
    assert box_geometry(boxes)[0].tolist() == [0, 0, 1, 1, 1, 1]


def test_the_detector_finds_boxes_and_moves_with_the_extractor(tmp_path):
    """The stage moves `extractor.model` to its device: the detector must go with the CNN (it stayed on CPU
    while the images went to the GPU). Checked here by moving the model to the meta device."""
    import torchvision

    weights = tmp_path / "ssdlite.pth"  # a small torchvision detector, random weights saved as a user's file
    torch.save(torchvision.models.get_model("ssdlite320_mobilenet_v3_large", weights=None,
                                            weights_backbone=None).state_dict(), weights)
    params = RegionsParams(cnn=CnnParams("torchvision:resnet18", "", 64), num_boxes=5,
                           detector="ssdlite320_mobilenet_v3_large", detector_weights=str(weights))
    extractor = RegionsExtractor(params)
    assert extractor.meta["box_source"].startswith("detector ssdlite320_mobilenet_v3_large")
    with torch.inference_mode():
        rows = extractor.encode({"pixel_values": torch.randn(2, 3, 64, 64)})
    assert rows["regions"].shape == (2, 5, 512) and rows["boxes"].shape == (2, 5, 6)
    assert ((rows["boxes"][..., :4] >= 0) & (rows["boxes"][..., :4] <= 1)).all()
    extractor.model.to(torch.device("meta"))  # what the stage does with its device
    devices = {parameter.device for parameter in extractor.model.detector.parameters()}
    assert devices == {parameter.device for parameter in extractor.model.trunk.parameters()} == {torch.device("meta")}


def test_benchmark_times_the_stage_against_the_bare_forward(memes):
    path = Path(__file__).parents[1] / "benchmarks" / "features.py"
    spec = importlib.util.spec_from_file_location("features_benchmark", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    rows = benchmark.main(["--memes", str(memes), "--split", "train", "--images", "4", "--extractors", "clip",
                           "--clip-model", "ViT-B-32", "--repeats", "2", *RANDOM])
    assert [row["extractor"] for row in rows] == ["clip"]
    assert rows[0]["stage"] > 0 and rows[0]["bare"] > 0
    assert rows[0]["ratio"] == pytest.approx(rows[0]["stage"] / rows[0]["bare"])
    assert len(rows[0]["rounds"]) == 2  # stage and bare timed in turn, twice


def test_the_model_keeps_the_thread_count_that_ran_faster():
    from hatememes.features.extract import ModelThreads
    from hatememes.threads import cpu_threads

    cpu = torch.device("cpu")
    with cpu_threads(2):
        assert ModelThreads(cpu, num_workers=0, cores=2).count == 2  # no workers: nothing to leave them
        for seconds_on, winner in (({1: 0.5, 2: 0.25}, 2), ({1: 0.3, 2: 0.5}, 1), ({1: 0.3, 2: 0.29}, 1)):
            threads = ModelThreads(cpu, num_workers=1, cores=2)
            assert threads.count == 1
            with cpu_threads(threads.count):
                for _ in range(10):  # a batch of 64 images takes seconds_on[the thread count it ran with]
                    threads.observe(seconds_on[torch.get_num_threads()], 64)
                    assert torch.get_num_threads() == threads.count
                assert threads.count == winner, seconds_on
            assert torch.get_num_threads() == 2


class TimedInputs(torch.utils.data.Dataset):
    """Items that take `decode_seconds` each to make, for a model that takes `forward_seconds` per batch."""

    def __init__(self, size: int, decode_seconds: float):
        self.size, self.decode_seconds = size, decode_seconds

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        time.sleep(self.decode_seconds)
        return {"x": torch.tensor([float(index)])}


@pytest.mark.parametrize("decode_seconds, forward_seconds, workers", [
    (0.0005, 0.2, 0),  # a model that costs 100 x its decode: decode between batches, the model keeps the cores
    (0.03, 0.0, 2),    # a model cheaper than its decode: workers decode beside it
])
def test_the_stage_decodes_where_it_is_faster(decode_seconds, forward_seconds, workers):
    from hatememes.features.extract import where_to_decode
    from hatememes.threads import cpu_threads

    seen = []

    def encode(batch):
        time.sleep(forward_seconds)
        seen.extend(batch["x"].flatten().tolist())
        return len(batch["x"])

    with cpu_threads(2):  # the model's threads, which workers would take a core from
        assert where_to_decode(TimedInputs(12, decode_seconds), 4, 2, encode, cores=2) == (8, workers)
        assert seen == list(range(8))  # the first two batches, encoded in order: nothing decoded twice or lost
        assert where_to_decode(TimedInputs(8, decode_seconds), 4, 2, encode, cores=2) == (0, 0)  # two batches


def test_every_decode_plan_gives_the_rows_in_order(memes):
    from accelerate import Accelerator

    from hatememes.features.extract import MemeInputs, run_shard

    extractor = ClipExtractor(ClipParams(model="tiny-rn", pretrained=""))
    split = read_split(memes, "train")
    dataset = MemeInputs(memes, split, extractor.preprocess)
    rows = {workers: run_shard(extractor, dataset, 2, workers, Accelerator(cpu=True), "train")
            for workers in (0, 1)}
    assert len(split) > 4  # so that the run with a worker chose a plan after two batches
    for name in rows[0]:
        assert len(rows[0][name]) == len(split)
        torch.testing.assert_close(rows[1][name], rows[0][name], rtol=0, atol=1e-6)


def test_pooled_outputs_are_the_towers_outputs_before_their_projections(memes, tmp_path):
    """features.clip.pooled (Hate-CLIPper reads CLIP's pooler_output): the stored pooled rows, projected by the
    model's own matrices, are the embeddings; the image row is the trunk's pooled, ln_post-ed tokens;
    the model's projections are back in place after each batch; the stage stores and the reader gives them."""
    from hatememes.data.readers import load_items

    torch.manual_seed(0)
    extractor = ClipExtractor(ClipParams(model="tiny-vit", pretrained="", pooled=True))
    width = extractor.model.visual.proj.shape[0]
    assert (extractor.meta["image_pooled_dim"], extractor.meta["text_pooled_dim"]) == (
        width, extractor.model.text_projection.shape[0])
    meme = read_split(memes, "dev_unseen")[0]
    inputs = extractor.preprocess(load_rgb(memes / meme.img), meme.text)
    batch = {"pixel_values": inputs["pixel_values"][None], "input_ids": inputs["input_ids"][None]}
    with torch.inference_mode():
        rows = extractor.encode(batch)
        visual = extractor.model.visual  # ln_post, then the class token (HF's pooler_output) or the patches' mean
        tokens = visual.ln_post(visual.transformer(visual._embeds(batch["pixel_values"])))
        pooled = tokens[:, 1:].mean(dim=1) if visual.pool_type == "avg" else tokens[:, 0]  # tiny-vit: avg
        assert isinstance(extractor.model.visual.proj, torch.nn.Parameter)  # restored
        image = extractor.model.encode_image(batch["pixel_values"])
        text = extractor.model.encode_text(batch["input_ids"])
    torch.testing.assert_close(rows["image_pooled"], pooled, atol=1e-5, rtol=1e-5)
    assert rows["text_pooled"].shape == (1, extractor.meta["text_pooled_dim"])
    torch.testing.assert_close(rows["image"], image, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(rows["text"], text, atol=1e-6, rtol=1e-6)
    out = tmp_path / "clip"
    assert features_stage.main(["clip", "--memes", str(memes), "--out", str(out), *RANDOM, "--set",
                                "features.clip.model=tiny-vit", "--set", "features.clip.pooled=true"]) == 0
    items = load_items(memes, {"clip": out}, "dev_unseen", ("clip",))
    assert items[0]["clip_image_pooled"].shape == (width,) and items[0]["clip_image"].shape == (
        extractor.meta["dim"],)


def test_pooled_outputs_of_a_tower_without_a_separate_projection_are_refused():
    with pytest.raises(ValueError, match="features.clip.pooled: open_clip model 'tiny-rn' .ModifiedResNet"):
        ClipExtractor(ClipParams(model="tiny-rn", pretrained="", pooled=True))


def test_squash_resize_keeps_both_sides_of_a_wide_meme():
    """resize_mode squash (Hate-CLIPper's loader) resizes the whole image to the square; the model's own
    "shortest" centre-crops it and cuts off the sides."""
    from PIL import Image

    image = Image.new("RGB", (300, 100), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 30, 100))  # a red strip on the left tenth
    red = {}
    for mode in ("", "squash"):
        extractor = ClipExtractor(ClipParams(model="tiny-vit", pretrained="", resize_mode=mode))
        pixels = extractor.preprocess(image, "a meme")["pixel_values"]  # (3, S, S), normalised
        red[mode] = bool(pixels[0, :, 0].mean() > pixels[2, :, 0].mean())  # the left column: red over blue?
        assert pixels.shape[1] == pixels.shape[2]
    assert red == {"": False, "squash": True}
