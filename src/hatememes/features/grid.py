"""Grid features for MMBT-Grid (Kiela et al. 2019): a CNN's last feature map, adaptively pooled.

The CNN is a torchvision ResNet in the full profile (ResNet-152, weights from a local file or the
torchvision weights cache) or, in the demo, the ResNet tower of the pretrain stage's tiny open_clip model
(`open_clip:tiny-rn`). We store the `pool` x `pool` map (3 x 3 by default); MMBT pools it further at use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hatememes.pretrained import loading, open_clip_download, torchvision_download

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CnnParams:
    backbone: str = "torchvision:resnet152"  # or "open_clip:<model name>"
    pretrained: str = "DEFAULT"  # torchvision: weights name (DEFAULT, IMAGENET1K_V1) or file; open_clip: tag/path
    image_size: int = 448


@dataclass(frozen=True)
class GridParams:
    cnn: CnnParams = field(default_factory=CnnParams)
    pool: int = 3


class OpenClipResNetTrunk(nn.Module):
    """open_clip's ModifiedResNet without its attention pool: (B, 3, H, W) -> (B, C, H/32, W/32)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        v = self.visual
        return v.layer4(v.layer3(v.layer2(v.layer1(v.stem(pixel_values)))))


def load_torchvision_trunk(name: str, pretrained: str, param: str) -> tuple[nn.Module, tuple, tuple]:
    """torchvision model `name` without its pooling and classifier; `param` is the setting of `pretrained`:
    torchvision's published weights by name ("DEFAULT", "IMAGENET1K_V1"), a weights file, or "" / "none" (random)."""
    import torchvision

    published = pretrained in torchvision_weights_names(name)
    with loading(param, pretrained, torchvision_download(name, pretrained if published else "DEFAULT")):
        if published or pretrained.lower() in ("", "none"):
            model = torchvision.models.get_model(name, weights=pretrained if published else None)
        else:
            model = torchvision.models.get_model(name, weights=None)
            model.load_state_dict(load_weights_file(pretrained))
    return nn.Sequential(*list(model.children())[:-2]), IMAGENET_MEAN, IMAGENET_STD


def torchvision_weights_names(name: str) -> set[str]:
    """The names of torchvision's published weights for model `name` ("DEFAULT" and e.g. "IMAGENET1K_V1")."""
    import torchvision

    try:
        return {"DEFAULT", *torchvision.models.get_model_weights(name).__members__}
    except ValueError:  # not a torchvision model: get_model's error says so
        return {"DEFAULT"}


def load_weights_file(path: str) -> dict[str, torch.Tensor]:
    """A state dict saved with safetensors or torch.save."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def load_open_clip_trunk(name: str, pretrained: str, param: str) -> tuple[nn.Module, tuple, tuple]:
    import open_clip

    from hatememes.pretrain import register_tiny_configs

    register_tiny_configs()
    with loading(param, pretrained, open_clip_download(name, pretrained)):
        model = open_clip.create_model(name, pretrained=pretrained or None)
    mean = getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    return OpenClipResNetTrunk(model.visual), tuple(mean), tuple(std)


def load_cnn(params: CnnParams, section: str) -> tuple[nn.Module, Callable, dict]:
    """(trunk returning a feature map, image transform, meta) for `torchvision:NAME` or `open_clip:NAME`;
    `section` is where `params` come from (`features.grid.cnn`), for the error when its weights cannot load."""
    from torchvision import transforms

    kind, _, name = params.backbone.partition(":")
    loaders = {"torchvision": load_torchvision_trunk, "open_clip": load_open_clip_trunk}
    if kind not in loaders:
        raise ValueError(f"CNN backbone {params.backbone!r}: expected torchvision:NAME or open_clip:NAME")
    trunk, mean, std = loaders[kind](name, params.pretrained, f"{section}.pretrained")
    transform = transforms.Compose([
        transforms.Resize((params.image_size, params.image_size), antialias=True),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    with torch.inference_mode():
        channels = trunk.eval()(torch.zeros(1, 3, params.image_size, params.image_size)).shape[1]
    meta = {"backbone": params.backbone, "pretrained": params.pretrained, "image_size": params.image_size,
            "dim": int(channels), "preprocessing": repr(transform)}
    return trunk.eval(), transform, meta


class ImageOnly:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image, text: str) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.transform(image)}


class GridExtractor:
    def __init__(self, params: GridParams):
        self.model, transform, cnn_meta = load_cnn(params.cnn, "features.grid.cnn")
        self.preprocess = ImageOnly(transform)
        self.pool = params.pool
        self.meta = {"extractor": "grid", **cnn_meta, "pool": params.pool, "tensors": ["grid"]}

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feature_map = self.model(batch["pixel_values"])  # (B, C, h, w)
        return {"grid": F.adaptive_avg_pool2d(feature_map, self.pool)}  # (B, C, pool, pool)
