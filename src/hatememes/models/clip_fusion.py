"""Hate-CLIPper (Kumar & Nandakumar 2022, "Hate-CLIPper: Multimodal Hateful Meme Classification based on
Cross-modal Interaction of CLIP Features"), on cached CLIP outputs, as the authors' `CLIPClassifier`
(gokulkarthik/hateclipper, engine.py, with `use_pretrained_map` false):

    image, text  (B, D_image), (B, D_text)   frozen CLIP outputs: the towers' pooled outputs before the
                                             projections, as the authors read them (`embeddings: pooled`;
                                             ViT-L/14: 1024 and 768), or the projected embeddings
      -> per-modality map: Linear to P, Dropout(p_map); each further mapping layer ReLU, Linear, Dropout
      -> L2-normalised
      -> fusion: "align" = element-wise product (B, P); "cross" = outer product, flattened (B, P*P)
      -> Dropout(p_fusion), then num_pre_output_layers x (Linear, ReLU, Dropout(p_pre_output))
      -> Linear -> logit (B,)

`drop_probs` are the authors' three (map, fusion, pre-output). Their run.sh trains it with AdamW at a
constant lr 1e-4, weight decay 1e-4 and gradient clipping 0.1 (main.py's defaults), keeping the epoch with
the best dev_seen AUROC; the full profile's params name the file each number comes from. With
`fine_grained.enabled`, a linear head on the same pre-output features gives the WOAH 2021 labels
(hatememes.models.fine_grained_head).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from hatememes.models import BuildContext
from hatememes.models.fine_grained_head import (
    NUM_FINE,
    FineGrainedConfig,
    fine_grained_config,
    fine_outputs,
    fine_targets,
    model_inputs,
)

EMBEDDINGS = {"projected": ("clip_image", "clip_text"), "pooled": ("clip_image_pooled", "clip_text_pooled")}


@dataclass(frozen=True)
class ClipFusionConfig:
    projection_dim: int = 1024  # the authors' map_dim
    num_mapping_layers: int = 1
    fusion: Literal["align", "cross"] = "align"
    num_pre_output_layers: int = 1
    pre_output_dim: int = 1024  # the authors use map_dim
    drop_probs: tuple[float, float, float] = (0.2, 0.4, 0.1)  # map, fusion, pre-output (the authors' order)
    embeddings: Literal["projected", "pooled"] = "projected"  # which CLIP outputs of the clip features
    image_dim: int = 0  # filled from the clip features' meta.json at build time
    text_dim: int = 0
    fine_grained: FineGrainedConfig = field(default_factory=FineGrainedConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fine_grained", fine_grained_config(self.fine_grained))  # from config.json


def clip_input_dims(embeddings: str, context: BuildContext, key: str) -> dict[str, int]:
    """{"image_dim", "text_dim"} of the clip features' `embeddings` (projected or pooled); `key` names the
    param in the error of features without pooled outputs."""
    meta = context.feature_meta["clip"]
    if embeddings == "pooled":
        if "image_pooled_dim" not in meta:
            raise ValueError(f"{key} = pooled, but the clip features hold no pooled outputs: set "
                             "features.clip.pooled: true (a ViT image tower)")
        return {"image_dim": meta["image_pooled_dim"], "text_dim": meta["text_pooled_dim"]}
    return {"image_dim": meta["dim"], "text_dim": meta["dim"]}


def save_model(directory: Path, config, state: dict[str, torch.Tensor]) -> None:
    """config.json and model.safetensors: what `load_model_files` reads back."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(asdict(config), indent=2))
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))


def load_model_files(directory: Path, config_class: type) -> tuple:
    """(the config, the state dict) that `save_model` wrote (drop_probs back to a tuple)."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    return (config_class(**{**config, "drop_probs": tuple(config["drop_probs"])}),
            load_file(str(directory / "model.safetensors")))


def clip_batch(items: list[dict], embeddings: str) -> dict[str, torch.Tensor]:
    """The clip features' `embeddings` of `items` as a batch, with labels and ids."""
    image, text = EMBEDDINGS[embeddings]
    return {
        "image_features": torch.stack([item[image] for item in items]).float(),  # (B, D_image)
        "text_features": torch.stack([item[text] for item in items]).float(),  # (B, D_text)
        "labels": torch.tensor([item["label"] for item in items], dtype=torch.float32),
        "ids": torch.tensor([item["id"] for item in items], dtype=torch.long),
    }


def fuse(image: torch.Tensor, text: torch.Tensor, fusion: str) -> torch.Tensor:
    """Hate-CLIPper's fusion of the L2-normalised maps (B, P): "align" (B, P) or "cross" (B, P*P)."""
    if fusion == "align":
        return image * text
    return torch.bmm(image.unsqueeze(2), text.unsqueeze(1)).flatten(1)


def hidden_layers(width: int, layers: int, dim: int, p_fusion: float, p_layer: float) -> tuple[nn.Sequential, int]:
    """Dropout(p_fusion), then `layers` x (Linear to `dim`, ReLU, Dropout(p_layer)); and the output width."""
    modules: list[nn.Module] = [nn.Dropout(p_fusion)]
    for _ in range(layers):
        modules += [nn.Linear(width, dim), nn.ReLU(), nn.Dropout(p_layer)]
        width = dim
    return nn.Sequential(*modules), width


def mapping(in_dim: int, out_dim: int, layers: int, dropout: float) -> nn.Sequential:
    """Linear, Dropout; then (ReLU, Linear, Dropout) for each further layer: no ReLU before the L2-norm."""
    modules = [nn.Linear(in_dim, out_dim), nn.Dropout(dropout)]
    for _ in range(layers - 1):
        modules += [nn.ReLU(), nn.Linear(out_dim, out_dim), nn.Dropout(dropout)]
    return nn.Sequential(*modules)


class ClipFusion(nn.Module):
    Config = ClipFusionConfig
    inputs = ("clip",)

    def __init__(self, config: ClipFusionConfig):
        super().__init__()
        if config.num_mapping_layers < 1 or config.num_pre_output_layers < 0:
            raise ValueError(f"clip_fusion: num_mapping_layers = {config.num_mapping_layers} (1 or more) and "
                             f"num_pre_output_layers = {config.num_pre_output_layers} (0 or more)")
        self.config = config
        p_map, p_fusion, p_pre_output = config.drop_probs
        self.image_projection = mapping(config.image_dim, config.projection_dim, config.num_mapping_layers, p_map)
        self.text_projection = mapping(config.text_dim, config.projection_dim, config.num_mapping_layers, p_map)
        width = config.projection_dim * (config.projection_dim if config.fusion == "cross" else 1)
        self.pre_output, width = hidden_layers(width, config.num_pre_output_layers, config.pre_output_dim, p_fusion,
                                               p_pre_output)
        self.classifier = nn.Linear(width, 1)
        self.fine_head = nn.Linear(width, NUM_FINE) if config.fine_grained.enabled else None
        self.inputs = model_inputs(self.inputs, config.fine_grained)

    @classmethod
    def build(cls, config: ClipFusionConfig, context: BuildContext) -> ClipFusion:
        dims = clip_input_dims(config.embeddings, context, "train.clip_fusion.model.embeddings")
        return cls(ClipFusionConfig(**{**asdict(config), **dims}))

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = clip_batch(items, self.config.embeddings)
        if self.fine_head is not None:
            batch["fine_grained"] = fine_targets(items)  # (B, NUM_FINE)
        return batch

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        """Logits (B,); with the fine-grained head, the loop's dict with its logits (B, NUM_FINE) too."""
        image = F.normalize(self.image_projection(batch["image_features"]), dim=-1)  # (B, P)
        text = F.normalize(self.text_projection(batch["text_features"]), dim=-1)  # (B, P)
        features = self.pre_output(fuse(image, text, self.config.fusion))  # (B, W)
        logits = self.classifier(features).squeeze(-1)  # (B,)
        if self.fine_head is None:
            return logits
        return fine_outputs(logits, self.fine_head(features), batch, self.config.fine_grained, self.training)

    def save_pretrained(self, directory: Path) -> None:
        save_model(directory, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: Path) -> ClipFusion:
        config, state = load_model_files(directory, ClipFusionConfig)
        model = cls(config)
        model.load_state_dict(state)
        return model.eval()
