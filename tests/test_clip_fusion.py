"""clip_fusion is Hate-CLIPper's head: with the same weights, its output equals a test-only transcription of
the authors' forward pass (gokulkarthik/hateclipper, engine.py `CLIPClassifier`, commit 1898520, with
`use_pretrained_map` false and the encoders' pooled outputs given), in eval mode and, dropout masks drawn in
the same order, in train mode too."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hatememes.models import BuildContext
from hatememes.models.clip_fusion import ClipFusion, ClipFusionConfig


class AuthorsHead(nn.Module):
    """engine.py's CLIPClassifier from the encoders' pooler_output on, transcribed (fusions align and cross)."""

    def __init__(self, image_hidden, text_hidden, map_dim, num_mapping_layers, fusion, num_pre_output_layers,
                 drop_probs):
        super().__init__()
        self.fusion = fusion
        image_map_layers = [nn.Linear(image_hidden, map_dim), nn.Dropout(p=drop_probs[0])]
        text_map_layers = [nn.Linear(text_hidden, map_dim), nn.Dropout(p=drop_probs[0])]
        for _ in range(1, num_mapping_layers):
            image_map_layers.extend([nn.ReLU(), nn.Linear(map_dim, map_dim), nn.Dropout(p=drop_probs[0])])
            text_map_layers.extend([nn.ReLU(), nn.Linear(map_dim, map_dim), nn.Dropout(p=drop_probs[0])])
        self.image_map = nn.Sequential(*image_map_layers)
        self.text_map = nn.Sequential(*text_map_layers)
        if fusion == "align":
            pre_output_input_dim = map_dim
        elif fusion == "cross":
            pre_output_input_dim = map_dim ** 2
        pre_output_layers = [nn.Dropout(p=drop_probs[1])]
        output_input_dim = pre_output_input_dim
        if num_pre_output_layers >= 1:
            pre_output_layers.extend([nn.Linear(pre_output_input_dim, map_dim), nn.ReLU(), nn.Dropout(p=drop_probs[2])])
            output_input_dim = map_dim
        for _ in range(1, num_pre_output_layers):
            pre_output_layers.extend([nn.Linear(map_dim, map_dim), nn.ReLU(), nn.Dropout(p=drop_probs[2])])
        self.pre_output = nn.Sequential(*pre_output_layers)
        self.output = nn.Linear(output_input_dim, 1)

    def forward(self, image_pooler_output, text_pooler_output):
        image_features = self.image_map(image_pooler_output)
        text_features = self.text_map(text_pooler_output)
        image_features = F.normalize(image_features, p=2, dim=1)
        text_features = F.normalize(text_features, p=2, dim=1)
        if self.fusion == "align":
            features = torch.mul(image_features, text_features)
        elif self.fusion == "cross":
            features = torch.bmm(image_features.unsqueeze(2), text_features.unsqueeze(1))
            features = features.reshape(features.shape[0], -1)
        features = self.pre_output(features)
        return self.output(features).squeeze(dim=1)


def linears(module: nn.Module) -> list[nn.Linear]:
    return [layer for layer in module.modules() if isinstance(layer, nn.Linear)]


def pooled_meta(image_dim: int, text_dim: int) -> BuildContext:
    return BuildContext({"clip": {"dim": 8, "image_pooled_dim": image_dim, "text_pooled_dim": text_dim}}, ())


@pytest.mark.parametrize(("fusion", "mapping_layers", "pre_output_layers"),
                         [("align", 1, 1), ("cross", 1, 1), ("align", 2, 0), ("cross", 2, 2), ("align", 1, 3)])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_head_equals_the_authors_forward(fusion, mapping_layers, pre_output_layers, mode):
    torch.manual_seed(0)
    drop_probs = (0.2, 0.4, 0.1)  # their run.sh's
    ours = ClipFusion.build(ClipFusionConfig(projection_dim=6, num_mapping_layers=mapping_layers, fusion=fusion,
                                             num_pre_output_layers=pre_output_layers, pre_output_dim=6,
                                             drop_probs=drop_probs, embeddings="pooled"), pooled_meta(12, 10))
    theirs = AuthorsHead(12, 10, 6, mapping_layers, fusion, pre_output_layers, drop_probs)
    pairs = [(ours.image_projection, theirs.image_map), (ours.text_projection, theirs.text_map),
             (nn.Sequential(ours.pre_output, ours.classifier), nn.Sequential(theirs.pre_output, theirs.output))]
    for mine, reference in pairs:
        assert len(linears(mine)) == len(linears(reference))
        for a, b in zip(linears(mine), linears(reference), strict=True):
            b.load_state_dict(a.state_dict())
    ours.train(mode == "train")
    theirs.train(mode == "train")
    image, text = torch.randn(5, 12), torch.randn(5, 10)
    torch.manual_seed(1)  # the same dropout masks, drawn in the same order
    expected = theirs(image, text)
    torch.manual_seed(1)
    got = ours({"image_features": image, "text_features": text})
    assert got.shape == (5,)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_the_align_product_can_be_negative():
    """No ReLU before the L2-norm (the map is Linear + Dropout): the element-wise product takes either sign."""
    torch.manual_seed(0)
    model = ClipFusion.build(ClipFusionConfig(projection_dim=16, pre_output_dim=16), pooled_meta(8, 8)).eval()
    image = F.normalize(model.image_projection(torch.randn(64, 8)), dim=-1)
    text = F.normalize(model.text_projection(torch.randn(64, 8)), dim=-1)
    assert ((image * text) < 0).any() and ((image * text) > 0).any()


def test_pooled_embeddings_need_pooled_features():
    with pytest.raises(ValueError, match="features.clip.pooled: true"):
        ClipFusion.build(ClipFusionConfig(embeddings="pooled"), BuildContext({"clip": {"dim": 8}}, ()))


def test_the_pooled_head_reads_the_pooled_tensors_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = ClipFusion.build(ClipFusionConfig(projection_dim=4, pre_output_dim=4, embeddings="pooled"),
                             pooled_meta(12, 10)).eval()
    items = [{"clip_image": torch.randn(8), "clip_text": torch.randn(8), "clip_image_pooled": torch.randn(12),
              "clip_text_pooled": torch.randn(10), "label": k % 2, "id": k} for k in range(3)]
    batch = model.collate(items)
    assert batch["image_features"].shape == (3, 12) and batch["text_features"].shape == (3, 10)
    model.save_pretrained(tmp_path)
    again = ClipFusion.from_pretrained(tmp_path)
    assert again.config == model.config
    torch.testing.assert_close(again(batch), model(batch))
