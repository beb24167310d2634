"""CLIP features with open_clip (Radford et al. 2021; Cherti et al. 2023): projected image and text
embeddings (unnormalised; normalise at use), optionally the image's patch tokens.

Any open_clip name/tag works (`ViT-L-14` / `openai` in the full profile), and so does a local checkpoint
through the same `pretrained=` route: the demo's tiny `tiny-vit`, whose config ships in this package.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hatememes.pretrained import loading, open_clip_download


@dataclass(frozen=True)
class ClipParams:
    model: str = "ViT-L-14"
    pretrained: str = "openai"  # an open_clip tag or a checkpoint path; "" for random weights
    patch_tokens: bool = False


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
                params.model, pretrained=params.pretrained or None
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

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = self.model.encode_image(batch["pixel_values"])
        rows = {}
        if self.params.patch_tokens:
            image, rows["patch_tokens"] = image  # (B, D), (B, P, width)
        rows["image"] = image  # (B, D)
        rows["text"] = self.model.encode_text(batch["input_ids"])  # (B, D)
        return rows
