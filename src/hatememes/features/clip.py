"""CLIP features with open_clip (Radford et al. 2021; Cherti et al. 2023): projected image and text
embeddings (unnormalised; normalise at use), optionally the image's patch tokens, and optionally the towers'
pooled outputs before their projections (`pooled`: what Hate-CLIPper reads, HF CLIP's `pooler_output`;
ViT-L/14: 1024-d image, 768-d text). `resize_mode` is open_clip's: "shortest" (resize, centre crop: the
model's own), "longest" or "squash" (resize to the square without cropping, as Hate-CLIPper's loader does,
so a wide meme keeps both sides).

Any open_clip name/tag works (`ViT-L-14` / `openai` in the full profile), and so does a local checkpoint
through the same `pretrained=` route: the demo's tiny `tiny-vit`, whose config ships in this package.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from hatememes.pretrained import loading, open_clip_download


@dataclass(frozen=True)
class ClipParams:
    model: str = "ViT-L-14"
    pretrained: str = "openai"  # an open_clip tag or a checkpoint path; "" for random weights
    patch_tokens: bool = False
    pooled: bool = False  # also the pooled outputs before the projections (a ViT image tower)
    resize_mode: Literal["", "shortest", "longest", "squash"] = ""  # "": the model's own (shortest)


class ClipPreprocess:
    """Image transform + open_clip tokenizer: what the DataLoader workers run."""

    def __init__(self, transform, tokenizer):
        self.transform, self.tokenizer = transform, tokenizer

    def __call__(self, image, text: str) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.transform(image), "input_ids": self.tokenizer([text])[0]}


class ClipExtractor:
    def __init__(self, params: ClipParams):
        import open_clip  # 5 s to import: only where an extractor is built

        from hatememes.pretrain import register_tiny_configs

        register_tiny_configs()
        download = open_clip_download(params.model, params.pretrained)
        with loading("features.clip.pretrained", params.pretrained, download):
            self.model, _, transform = open_clip.create_model_and_transforms(
                params.model, pretrained=params.pretrained or None, image_resize_mode=params.resize_mode or None
            )
        self.model.eval()
        if params.patch_tokens:
            self.model.visual.output_tokens = True
        self.preprocess = ClipPreprocess(transform, open_clip.get_tokenizer(params.model))
        self.params = params
        self.meta = {
            "extractor": "clip",
            "model": params.model,
            "pretrained": params.pretrained,
            "dim": int(self.model.visual.output_dim),
            "preprocessing": repr(transform),
            "tensors": ["image", "text"] + (["patch_tokens"] if params.patch_tokens else []),
            "normalised": False,
        }
        if params.pooled:
            image_projection, text_owner = projections(self.model, params.model)
            self.meta["image_pooled_dim"] = int(image_projection.shape[0])
            projection = text_owner.text_projection
            self.meta["text_pooled_dim"] = int(projection.in_features if isinstance(projection, nn.Linear)
                                               else projection.shape[0])
            self.meta["tensors"] += ["image_pooled", "text_pooled"]

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.params.pooled:
            return self.encode_pooled(batch)
        image = self.model.encode_image(batch["pixel_values"])
        rows = {}
        if self.params.patch_tokens:
            image, rows["patch_tokens"] = image  # (B, D), (B, P, width)
        rows["image"] = image  # (B, D)
        rows["text"] = self.model.encode_text(batch["input_ids"])  # (B, D)
        return rows

    def encode_pooled(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One pass per tower with its projection taken out: the pooled outputs, then the projections applied
        here to them (the same products open_clip computes: tests/test_features.py checks equality)."""
        rows = {}
        with without_projections(self.model, self.params.model) as (image_projection, text_projection):
            pooled = self.model.encode_image(batch["pixel_values"])
            if self.params.patch_tokens:
                pooled, rows["patch_tokens"] = pooled  # (B, P, width)
            rows["image_pooled"] = pooled  # (B, width)
            rows["text_pooled"] = self.model.encode_text(batch["input_ids"])  # (B, width_text)
        rows["image"] = rows["image_pooled"] @ image_projection  # (B, D)
        text = rows["text_pooled"]
        rows["text"] = text_projection(text) if isinstance(text_projection, nn.Linear) else text @ text_projection
        return rows


def projections(model: nn.Module, name: str) -> tuple[torch.Tensor, nn.Module]:
    """(the image tower's projection matrix, the module that holds `text_projection`), or a clear error for
    towers whose pooling and projection are one step (a ModifiedResNet's attention pool, timm heads)."""
    image_projection = getattr(model.visual, "proj", None)
    text_owner = getattr(model, "text", model)  # CustomTextCLIP keeps its text tower in .text
    if not isinstance(image_projection, torch.Tensor) or getattr(text_owner, "text_projection", None) is None:
        raise ValueError(f"features.clip.pooled: open_clip model {name!r} ({type(model.visual).__name__} image "
                         f"tower) has no projection after its pooled output to take out; pooled outputs need "
                         f"a ViT image tower with a projection (ViT-L-14, tiny-vit), or set pooled: false")
    return image_projection, text_owner


@contextmanager
def without_projections(model: nn.Module, name: str) -> Iterator[tuple[torch.Tensor, nn.Module | torch.Tensor]]:
    """The model with both projections set to None (open_clip then returns the pooled outputs), restored after;
    yields the two projections."""
    image_projection, text_owner = projections(model, name)
    text_projection = text_owner.text_projection
    model.visual.proj, text_owner.text_projection = None, None
    try:
        yield image_projection, text_projection
    finally:
        model.visual.proj, text_owner.text_projection = image_projection, text_projection
