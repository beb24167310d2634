"""Concat BERT (Kiela et al. 2020, Table 2): BERT's pooled text output concatenated with the pooled image
features, then MMF's MLP: the simplest fusion, which sees the pair but mixes it only in the classifier.

MMF's `concat_bert` (`mmf/models/fusions.py`, `projects/others/concat_bert/hateful_memes/defaults.yaml`):

    text   BERT pooled [CLS]                          (B, 768)
    image  ResNet-152 grid pooled to 1 x 1            (B, 2048)   (`image_vector`; or the mean region)
      -> concatenated (B, 2816) -> MLP (2 layers of 768, BatchNorm, ReLU, Dropout 0.5) -> one logit

MMF fine-tunes the ResNet with the rest; here the image features are the cached, frozen ones (the report
lists it as the row's deviation). BERT is fine-tuned.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from hatememes.models import BuildContext
from hatememes.models.mmf_blocks import (
    ImageFeatures,
    TextEncoder,
    image_dim,
    image_vector,
    labels_and_ids,
    load_with_text,
    mlp_classifier,
    save_with_text,
)


@dataclass(frozen=True)
class ConcatBertConfig:
    text_model: str = "bert-base-uncased"  # any BERT checkpoint: hub name, local folder or packaged name
    image_features: ImageFeatures = "grid"  # MMF's: the ResNet-152 grid pooled to one vector
    max_text_length: int = 128
    num_hidden_layers: int | None = None  # keep the checkpoint's first k layers; None: all (as published)
    pooling: Literal["cls", "mean"] = "cls"  # cls: BERT's pooler on [CLS], as MMF; mean: the mean final state
    freeze_word_embeddings: bool = False
    hidden_dim: int = 768  # MMF's MLP: hidden_dim 768, num_layers 2, dropout 0.5, batch norm
    num_layers: int = 2
    dropout: float = 0.5
    image_dim: int = 0  # filled from the features' meta.json at build time


class ConcatBert(nn.Module):
    Config = ConcatBertConfig
    inputs: tuple[str, ...] = ("grid",)  # the default; an instance reads config.image_features

    def __init__(self, config: ConcatBertConfig, text: TextEncoder):
        super().__init__()
        self.config, self.text = config, text
        self.inputs = (config.image_features,)
        self.classifier = mlp_classifier(text.hidden_size + config.image_dim, config.hidden_dim, config.num_layers,
                                         config.dropout)

    @classmethod
    def build(cls, config: ConcatBertConfig, context: BuildContext) -> ConcatBert:
        name = context.name or "concat_bert"
        key = f"train.{name}.model.image_features"
        config = replace(config, image_dim=image_dim(context, config.image_features, key))
        return cls(config, TextEncoder.load(config, name))

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return {**self.text.tokenize(items), "image": image_vector(items, self.config.image_features),  # (B, D)
                **labels_and_ids(items)}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        fused = torch.cat([self.text(batch), batch["image"].to(self.classifier[0].weight.dtype)], dim=-1)  # (B, H+D)
        return self.classifier(fused).squeeze(-1)  # (B,)

    def save_pretrained(self, directory: Path) -> None:
        save_with_text(self, directory)

    @classmethod
    def from_pretrained(cls, directory: Path) -> ConcatBert:
        config, text, state = load_with_text(directory, ConcatBertConfig)
        model = cls(config, text)
        model.load_state_dict(state)
        return model.eval()
