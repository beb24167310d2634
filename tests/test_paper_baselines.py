"""The benchmark paper's baselines: image_grid / image_region, text_bert, concat_bert (MMF's parts, checked
against a transcription of MMF's forward) and late_fusion (the ensemble stage with its own params section)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoTokenizer, BertModel

from hatememes.models import BuildContext, get_model_class
from hatememes.models.concat_bert import ConcatBert, ConcatBertConfig
from hatememes.models.image_only import ImageOnly, ImageOnlyConfig
from hatememes.models.mmf_blocks import image_vector, mlp_classifier
from hatememes.models.text_bert import TextBert, TextBertConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ROOT = Path(__file__).parents[1]
DIM = 12
TEXTS = ["a red star", "look how many people love you on this fine day", "a blue circle"]
META = {"grid": {"dim": DIM}, "regions": {"dim": DIM, "num_boxes": 4}}


class MMFMLPClassifer(nn.Module):
    """A transcription of MMF's `MLPClassifer` (mmf/modules/layers.py) with its defaults: hidden_act relu,
    batch_norm true, dropout 0.5."""

    def __init__(self, in_dim, out_dim, hidden_dim=None, num_layers=0, dropout=0.5):
        super().__init__()
        self.layers = nn.ModuleList()
        hidden_dim = in_dim if hidden_dim is None else hidden_dim
        for _ in range(num_layers):
            self.layers.append(nn.Linear(in_dim, hidden_dim))
            self.layers.append(nn.BatchNorm1d(hidden_dim))
            self.layers.append(nn.ReLU())
            self.layers.append(nn.Dropout(dropout))
            in_dim = hidden_dim
        self.layers.append(nn.Linear(in_dim, out_dim))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def make_items(count: int = 6, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [{"id": i, "text": TEXTS[i % len(TEXTS)], "label": i % 2,
             "grid": torch.randn(DIM, 3, 3, generator=generator), "regions": torch.randn(4, DIM, generator=generator),
             "boxes": torch.rand(4, 6, generator=generator)} for i in range(count)]


def test_the_mlp_head_is_mmfs_classifier():
    torch.manual_seed(0)
    ours = mlp_classifier(DIM, 16, num_layers=2, dropout=0.5)
    reference = MMFMLPClassifer(DIM, 1, hidden_dim=16, num_layers=2)
    assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in reference.layers]
    for i, layer in enumerate(ours):  # the same weights (and BatchNorm statistics)
        reference.layers[i].load_state_dict(layer.state_dict())
    x = torch.randn(5, DIM)
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(reference, mode)()
        torch.manual_seed(1)
        expected = reference(x)
        torch.manual_seed(1)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-6)
    assert [type(m).__name__ for m in mlp_classifier(DIM, 16, num_layers=0, dropout=0.5)] == ["Linear"]


def test_image_vector_pools_the_grid_to_one_cell_and_averages_the_regions():
    items = make_items(3)
    grid = torch.stack([item["grid"] for item in items])
    expected = nn.AdaptiveAvgPool2d((1, 1))(grid).flatten(1)  # MMF's ResNet152ImageEncoder, num_output_features 1
    torch.testing.assert_close(image_vector(items, "grid"), expected)
    regions = torch.stack([item["regions"] for item in items])
    torch.testing.assert_close(image_vector(items, "regions"), regions.mean(dim=1))  # UnimodalModal.forward


@pytest.mark.parametrize("features", ["grid", "regions"])
def test_image_only_reads_its_features_and_round_trips(tmp_path, features):
    torch.manual_seed(0)
    config = ImageOnlyConfig(image_features=features, hidden_dim=16)
    model = ImageOnly.build(config, BuildContext(META, (), "image_x"))
    assert model.inputs == (features,) and model.config.image_dim == DIM
    model.eval()
    batch = model.collate(make_items())
    logits = model(batch)
    assert logits.shape == (6,)
    torch.testing.assert_close(logits, model.classifier(image_vector(make_items(), features)).squeeze(-1))
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(ImageOnly.from_pretrained(tmp_path)(batch), logits)


def test_image_only_names_the_param_when_its_features_are_missing():
    name = "image_region"
    with pytest.raises(ValueError, match=r"train\.image_region\.model\.image_features = regions.*features\.kinds"):
        ImageOnly.build(ImageOnlyConfig(image_features="regions"), BuildContext({"grid": {"dim": 4}}, (), name))


def test_text_bert_equals_bert_pooler_then_the_head_and_round_trips(tiny_bert_dir, tmp_path):
    torch.manual_seed(0)
    model = TextBert.build(TextBertConfig(text_model=str(tiny_bert_dir), hidden_dim=16), BuildContext(name="text_bert"))
    model.eval()
    items = make_items()
    batch = model.collate(items)
    reference = BertModel.from_pretrained(tiny_bert_dir).eval()
    tokens = AutoTokenizer.from_pretrained(tiny_bert_dir)([i["text"] for i in items], padding=True, return_tensors="pt")
    pooled = reference(**tokens).pooler_output
    torch.testing.assert_close(model(batch), model.classifier(pooled).squeeze(-1), rtol=0, atol=1e-5)
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(TextBert.from_pretrained(tmp_path)(batch), model(batch))
    assert model.inputs == ()


def test_concat_bert_concatenates_text_then_image(tiny_bert_dir, tmp_path):
    torch.manual_seed(0)
    config = ConcatBertConfig(text_model=str(tiny_bert_dir), image_features="grid", pooling="mean", hidden_dim=16)
    model = ConcatBert.build(config, BuildContext(META, (), "concat_bert")).eval()
    assert model.inputs == ("grid",) and model.classifier[0].in_features == 32 + DIM
    items = make_items()
    batch = model.collate(items)
    reference = BertModel.from_pretrained(tiny_bert_dir, add_pooling_layer=False).eval()
    tokens = AutoTokenizer.from_pretrained(tiny_bert_dir)([i["text"] for i in items], padding=True, return_tensors="pt")
    states, mask = reference(**tokens).last_hidden_state, tokens["attention_mask"].unsqueeze(-1).float()
    text = (states * mask).sum(1) / mask.sum(1)  # the mean of the final states over the real tokens
    fused = torch.cat([text, image_vector(items, "grid")], dim=-1)
    torch.testing.assert_close(model(batch), model.classifier(fused).squeeze(-1), rtol=0, atol=1e-5)
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(ConcatBert.from_pretrained(tmp_path)(batch), model(batch))


def test_the_registry_maps_the_paper_rows():
    assert get_model_class("image_grid") is get_model_class("image_region") is ImageOnly
    assert get_model_class("text_bert") is TextBert and get_model_class("concat_bert") is ConcatBert


def write_predictions(folder: Path, split: str, ids, probs, labels) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{split}.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "proba", "label"])
        writer.writerows(zip(ids, probs, labels, strict=True))


def test_late_fusion_is_the_mean_of_its_members_probabilities(tmp_path, monkeypatch):
    """pipelines/ensemble.py late_fusion reads params `late_fusion` and writes the mean of the members' P(hateful)."""
    import importlib.util

    import yaml

    rng = np.random.default_rng(0)
    ids, labels = np.arange(40), np.arange(40) % 2
    members = {"text_bert": rng.random(40), "image_grid": rng.random(40)}
    for member, probs in members.items():
        for split in ("dev_seen", "test_unseen"):
            write_predictions(tmp_path / "eval" / member / "predictions", split, ids, probs, labels)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("ensemble_stage", ROOT / "pipelines" / "ensemble.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    arguments = ["late_fusion", "--eval", "eval", "--out", "eval/late_fusion", "--model-out", "models/late_fusion"]
    assert stage.main(arguments) == 0
    with (tmp_path / "eval" / "late_fusion" / "predictions" / "test_unseen.csv").open() as file:
        rows = sorted(csv.DictReader(file), key=lambda row: int(row["id"]))
    mean = (members["text_bert"] + members["image_grid"]) / 2
    np.testing.assert_allclose([float(row["proba"]) for row in rows], mean, atol=1e-6)
    saved = json.loads((tmp_path / "models" / "late_fusion" / "model.json").read_text())
    assert saved == {"name": "late_fusion", "members": ["text_bert", "image_grid"]}
