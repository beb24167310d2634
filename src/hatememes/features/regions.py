"""Region features for VisualBERT (Li et al. 2019): K boxes, one RoIAlign vector per box on the CNN
feature map, and each box's normalised geometry (x1, y1, x2, y2, w, h).

Three sources, chosen by which setting is filled in (meta.json's `box_source` records the one used):
- `detector` + `detector_weights`: a torchvision detector's top-K boxes by score, RoIAligned on the CNN map;
- `precomputed_dir`: MMF's released Faster R-CNN features and boxes, read from files (no CNN, no images:
  hatememes.features.mmf_regions; docs/region-features.md);
- neither: a fixed multi-scale grid of boxes (whole image, 2x2, 3x3, ...) RoIAligned on the CNN map.
The extractor's `model` holds the CNN and the detector, so the stage's `extractor.model.to(device)` moves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from hatememes.features.grid import CnnParams, ImageOnly, load_cnn, load_weights_file
from hatememes.pretrained import loading, torchvision_download


@dataclass(frozen=True)
class RegionsParams:
    cnn: CnnParams = field(default_factory=CnnParams)
    num_boxes: int = 36
    detector: str = ""  # a torchvision detection model name, e.g. fasterrcnn_resnet50_fpn_v2; "" = grid boxes
    detector_weights: str = ""  # a local weights file for it
    precomputed_dir: str = ""  # a folder of MMF's per-image <id>.npy + <id>_info.npy; "" = RoIAlign on the CNN
    precomputed_dim: int = 2048  # the feature size every precomputed file must have (MMF's fc6: 2048)

    def __post_init__(self) -> None:
        if self.detector_weights and not self.detector:
            raise ValueError("features.regions.detector_weights is set but detector is empty: name the torchvision "
                             "detection model the weights are for")
        if self.detector and self.precomputed_dir:
            raise ValueError("features.regions: detector and precomputed_dir are both set; boxes come from one "
                             "source (empty both for the fixed grid)")

    @property
    def source(self) -> str:
        """Where the regions come from: "precomputed" (MMF's files), "detector", or "grid" (neither set)."""
        return "precomputed" if self.precomputed_dir else "detector" if self.detector else "grid"


def grid_boxes(count: int) -> torch.Tensor:
    """The first `count` boxes of the multi-scale grid 1x1, 2x2, 3x3, ... as (count, 4) in [0, 1]."""
    boxes, scale = [], 1
    while len(boxes) < count:
        for row in range(scale):
            for col in range(scale):
                boxes.append((col / scale, row / scale, (col + 1) / scale, (row + 1) / scale))
        scale += 1
    return torch.tensor(boxes[:count], dtype=torch.float32)


def box_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) normalised x1, y1, x2, y2 -> (..., 6) adding width and height."""
    return torch.cat([boxes, boxes[..., 2:3] - boxes[..., 0:1], boxes[..., 3:4] - boxes[..., 1:2]], dim=-1)


class RegionsModel(nn.Module):
    """The CNN trunk and the optional detector as one module: moved to a device together. Calling it runs the CNN."""

    def __init__(self, trunk: nn.Module, detector: nn.Module | None):
        super().__init__()
        self.trunk, self.detector = trunk, detector

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.trunk(pixel_values)  # (B, C, h, w)


class RegionsExtractor:
    def __init__(self, params: RegionsParams):
        if params.source == "precomputed":
            raise ValueError("features.regions.precomputed_dir is set: those regions are read from MMF's files "
                             "(hatememes.features.build_regions), not RoIAligned on a CNN")
        trunk, transform, cnn_meta = load_cnn(params.cnn, "features.regions.cnn")
        self.preprocess = ImageOnly(transform)
        self.params = params
        self.model = RegionsModel(trunk, self.load_detector() if params.detector else None).eval()
        self.meta = {
            "extractor": "regions", **cnn_meta, "num_boxes": params.num_boxes,
            "box_source": f"detector {params.detector} ({params.detector_weights})" if params.detector
            else "fixed multi-scale grid (1x1, 2x2, 3x3, ...)",
            "box_format": "x1, y1, x2, y2, w, h normalised to [0, 1]", "tensors": ["regions", "boxes"],
        }

    def load_detector(self) -> nn.Module:
        import torchvision

        name, weights = self.params.detector, self.params.detector_weights
        if not weights:
            raise ValueError(f"detector {name!r} needs detector_weights (a local weights file)")
        detector = torchvision.models.get_model(name, weights=None, weights_backbone=None)
        with loading("features.regions.detector_weights", weights, torchvision_download(name)):
            detector.load_state_dict(load_weights_file(weights))
        return detector.eval()

    def boxes_for(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, K, 4) normalised boxes: the detector's top-K by score, topped up with grid boxes."""
        count, (height, width) = self.params.num_boxes, pixel_values.shape[-2:]
        fixed = grid_boxes(count).to(pixel_values.device)
        if self.model.detector is None:
            return fixed.expand(len(pixel_values), count, 4)
        mean = torch.tensor(self.meta_mean_std()[0], device=pixel_values.device).view(3, 1, 1)
        std = torch.tensor(self.meta_mean_std()[1], device=pixel_values.device).view(3, 1, 1)
        detections = self.model.detector(list(pixel_values * std + mean))  # the detector normalises itself
        scale = torch.tensor([width, height, width, height], device=pixel_values.device)
        boxes = []
        for found in detections:
            top = found["boxes"][found["scores"].argsort(descending=True)][:count] / scale
            boxes.append(torch.cat([top, fixed[: count - len(top)]]))
        return torch.stack(boxes)

    def meta_mean_std(self) -> tuple[tuple, tuple]:
        normalize = self.preprocess.transform.transforms[-1]
        return tuple(normalize.mean), tuple(normalize.std)

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from torchvision.ops import roi_align  # torchvision's import is paid by the stages that extract

        pixel_values = batch["pixel_values"]  # (B, 3, H, W)
        feature_map = self.model(pixel_values)  # (B, C, h, w)
        boxes = self.boxes_for(pixel_values)  # (B, K, 4) in [0, 1]
        size = torch.tensor(pixel_values.shape[-1:-3:-1] * 2, device=boxes.device, dtype=boxes.dtype)
        pixel_boxes = list(boxes * size)  # B x (K, 4) in pixels
        pooled = roi_align(feature_map, pixel_boxes, output_size=2, spatial_scale=feature_map.shape[-1]
                           / pixel_values.shape[-1], sampling_ratio=2, aligned=True)  # (B*K, C, 2, 2)
        regions = pooled.mean(dim=(2, 3)).view(len(pixel_values), self.params.num_boxes, -1)  # (B, K, C)
        return {"regions": regions, "boxes": box_geometry(boxes)}
