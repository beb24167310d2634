"""Image-Grid and Image-Region (Kiela et al. 2020, Table 2): the image alone, one vector -> MMF's MLP.

    image_grid     the CNN grid pooled to one vector (MMF's `unimodal_image`: ResNet-152, num_output_features 1)
    image_region   the mean of the region features (MMF's `unimodal_image` with `direct_features_input`)

The two differ by `image_features`. MMF fine-tunes its ResNet-152 (Image-Grid) and a detector fc7 layer
(Image-Region) with the classifier; here both read the cached, frozen features: the row's deviation, which
the report lists. A meme's hate lives in the pair of image and text, so on the benchmark (and on the demo's
world by construction) these stay near chance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from hatememes.models import BuildContext
from hatememes.models.clip_fusion import save_model
from hatememes.models.mmf_blocks import ImageFeatures, image_dim, image_vector, labels_and_ids, mlp_classifier


@dataclass(frozen=True)
class ImageOnlyConfig:
    image_features: ImageFeatures = "grid"
    hidden_dim: int = 768  # MMF's MLP: hidden_dim 768, num_layers 2, dropout 0.5, batch norm
    num_layers: int = 2
    dropout: float = 0.5
    image_dim: int = 0  # filled from the features' meta.json at build time


class ImageOnly(nn.Module):
    Config = ImageOnlyConfig
    inputs: tuple[str, ...] = ("grid",)  # the default; an instance reads config.image_features

    def __init__(self, config: ImageOnlyConfig):
        super().__init__()
        self.config = config
        self.inputs = (config.image_features,)
        self.classifier = mlp_classifier(config.image_dim, config.hidden_dim, config.num_layers, config.dropout)

    @classmethod
    def build(cls, config: ImageOnlyConfig, context: BuildContext) -> ImageOnly:
        key = f"train.{context.name or 'image_grid'}.model.image_features"
        return cls(replace(config, image_dim=image_dim(context, config.image_features, key)))

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return {"image": image_vector(items, self.config.image_features), **labels_and_ids(items)}  # (B, D)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(batch["image"]).squeeze(-1)  # (B,)

    def save_pretrained(self, directory: Path) -> None:
        save_model(directory, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: Path) -> ImageOnly:
        directory = Path(directory)
        model = cls(ImageOnlyConfig(**json.loads((directory / "config.json").read_text())))
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        return model.eval()

