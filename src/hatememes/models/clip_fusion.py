"""Hate-CLIPper (Kumar & Nandakumar 2022, "Hate-CLIPper: Multimodal Hateful Meme Classification based on
Cross-modal Interaction of CLIP Features"), on cached CLIP embeddings.

    image_features, text_features  (B, D)       frozen CLIP embeddings from the features stage
      -> per-modality projection (Linear, ReLU, Dropout) to P, then L2-normalised
      -> fusion: "align" = element-wise product (B, P); "cross" = outer product, flattened (B, P*P)
      -> pre-output MLP (num_pre_output_layers x Linear, ReLU, Dropout) -> Linear -> logit (B,)

The paper's recipe: P = 1024, 1 pre-output layer, AdamW 1e-4, batch 64, weight decay 1e-4, grad clip
0.1, best of <= 20 epochs on dev_seen.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from hatememes.models import BuildContext


@dataclass(frozen=True)
class ClipFusionConfig:
    projection_dim: int = 1024
    fusion: Literal["align", "cross"] = "align"
    num_pre_output_layers: int = 1
    pre_output_dim: int = 1024
    dropout: float = 0.1
    image_dim: int = 0  # filled from the clip features' meta.json at build time
    text_dim: int = 0


def projection(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Dropout(dropout))


class ClipFusion(nn.Module):
    Config = ClipFusionConfig
    inputs = ("clip",)

    def __init__(self, config: ClipFusionConfig):
        super().__init__()
        self.config = config
        self.image_projection = projection(config.image_dim, config.projection_dim, config.dropout)
        self.text_projection = projection(config.text_dim, config.projection_dim, config.dropout)
        fused_dim = config.projection_dim * (config.projection_dim if config.fusion == "cross" else 1)
        layers, width = [], fused_dim
        for _ in range(config.num_pre_output_layers):
            layers.append(projection(width, config.pre_output_dim, config.dropout))
            width = config.pre_output_dim
        self.pre_output = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, 1)

    @classmethod
    def build(cls, config: ClipFusionConfig, context: BuildContext) -> ClipFusion:
        dim = context.feature_meta["clip"]["dim"]
        return cls(ClipFusionConfig(**{**asdict(config), "image_dim": dim, "text_dim": dim}))

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return {
            "image_features": torch.stack([item["clip_image"] for item in items]).float(),  # (B, D)
            "text_features": torch.stack([item["clip_text"] for item in items]).float(),  # (B, D)
            "labels": torch.tensor([item["label"] for item in items], dtype=torch.float32),
            "ids": torch.tensor([item["id"] for item in items], dtype=torch.long),
        }

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        image = F.normalize(self.image_projection(batch["image_features"]), dim=-1)  # (B, P)
        text = F.normalize(self.text_projection(batch["text_features"]), dim=-1)  # (B, P)
        if self.config.fusion == "align":
            fused = image * text  # (B, P)
        else:
            fused = torch.bmm(image.unsqueeze(2), text.unsqueeze(1)).flatten(1)  # (B, P*P)
        return self.classifier(self.pre_output(fused)).squeeze(-1)  # (B,)

    def save_pretrained(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, directory: Path) -> ClipFusion:
        directory = Path(directory)
        model = cls(ClipFusionConfig(**json.loads((directory / "config.json").read_text())))
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        return model.eval()
