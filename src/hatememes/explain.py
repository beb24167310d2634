"""What an image model looks at, and how easily it is fooled: saliency, Grad-CAM and FGSM.

- `saliency` (Simonyan et al. 2014): |d logit / d pixel|, the largest over the colour channels.
- `grad_cam` (Selvaraju et al. 2017): ReLU(sum_k alpha_k A^k) for a chosen layer's activations A,
  alpha_k = the spatial mean of d logit / d A^k; captured with a forward hook, upsampled to the image.
- `fgsm` / `fgsm_auroc` (Goodfellow et al. 2015): x + eps * sign(d BCE / d x), clipped to the pixel
  range; the AUROC at each eps shows how fast the classifier can be fooled.
- `save_overlay`: a heat map over the image as a PNG a report can embed.

`model` is any callable from pixel_values (B, 3, H, W) to logits (B,): an nn.Module, or for a protocol
classifier `lambda pixel_values: model({"pixel_values": pixel_values})`. `numpy_cnn_model(course_cnn)`
makes the numpy CourseCNN one (its hand-written backward gives the input gradient); its pixels are in
[-1, 1], so pass pixel_range=(-1, 1) and eps on that scale (twice the [0, 1] value).

    heat = grad_cam(model, model.features[-2], pixel_values)      # (B, H, W) in [0, 1]
    save_overlay(image, heat[0], "eval/plots/gradcam_0.png")
    fgsm_auroc(model, pixel_values, labels, eps_values=(0.0, 2 / 255, 8 / 255))   # {eps: AUROC}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from hatememes.metrics import auroc, undefined_reason

ImageModel = Callable[[torch.Tensor], torch.Tensor]


def saliency(model: ImageModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """|d logit_b / d pixel_values_b|, max over channels: (B, H, W)."""
    pixels = pixel_values.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(pixels).sum(), pixels)  # each logit depends on its own image only
    return grad.abs().amax(dim=1)


def grad_cam(model: ImageModel, layer: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of `layer` (its output (B, K, h, w)) upsampled to (B, H, W), each map scaled to max 1.

    Put dropout/batch-norm models in eval mode first: the maps assume each logit sees only its image."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        logits = model(pixel_values.detach().clone().requires_grad_(True))  # (B,)
    finally:
        handle.remove()
    activations = captured[-1]  # (B, K, h, w)
    (grads,) = torch.autograd.grad(logits.sum(), activations)
    alphas = grads.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
    cam = torch.relu((alphas * activations).sum(dim=1, keepdim=True)).detach()  # (B, 1, h, w)
    cam = F.interpolate(cam, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def fgsm(
    model: ImageModel, pixel_values: torch.Tensor, labels: torch.Tensor, eps: float, pixel_range=(0.0, 1.0)
) -> torch.Tensor:
    """The one-step attack x + eps * sign(d BCE(logit, label) / d x), clipped to pixel_range: (B, 3, H, W)."""
    pixels = pixel_values.detach().clone().requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(model(pixels), labels.to(pixels.dtype), reduction="sum")
    (grad,) = torch.autograd.grad(loss, pixels)
    adversarial = pixel_values.detach() + eps * grad.sign()
    return adversarial.clamp(*pixel_range) if pixel_range is not None else adversarial


def fgsm_auroc(
    model: ImageModel,
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    eps_values: Sequence[float] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255),
    pixel_range=(0.0, 1.0),
    batch_size: int = 64,
) -> dict[float, float]:
    """{eps: AUROC of the model on the FGSM images at that eps}; eps=0 is the clean AUROC."""
    results = {}
    for eps in eps_values:
        logits = []
        for start in range(0, len(labels), batch_size):
            batch, batch_labels = pixel_values[start : start + batch_size], labels[start : start + batch_size]
            adversarial = fgsm(model, batch, batch_labels, eps, pixel_range) if eps > 0 else batch
            with torch.no_grad():
                logits.append(model(adversarial).float().cpu())
        value = auroc(labels.cpu().numpy(), torch.cat(logits).numpy())
        if value is None:
            raise ValueError(f"FGSM AUROC: {undefined_reason(labels.cpu().numpy())}")
        results[float(eps)] = value
    return results


def save_overlay(image, heat, path: str | Path, alpha: float = 0.6, colormap: str = "jet") -> Path:
    """Blend a heat map (h, w) in [0, 1] over an RGB image (PIL or (H, W, 3) uint8) and write a PNG.

    Each pixel takes alpha * heat of the colour-mapped heat: where the heat is 0 the image is unchanged."""
    image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    heat = np.asarray(heat.detach().cpu() if isinstance(heat, torch.Tensor) else heat, dtype=np.float32)
    heat = np.asarray(Image.fromarray(heat.clip(0, 1)).resize(image.size, Image.BILINEAR)).clip(0, 1)  # (H, W)
    colours = matplotlib.colormaps[colormap](heat)[..., :3]  # (H, W, 3)
    weight = alpha * heat[..., None]
    blended = base * (1 - weight) + colours * weight
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((blended * 255).round().astype(np.uint8)).save(path, format="PNG")
    return path


class _NumpyNetwork(torch.autograd.Function):
    """A numpy `Network` as a torch op: forward runs its forward, backward its hand-written backward."""

    @staticmethod
    def forward(ctx, pixel_values, net):
        logits = net.forward(pixel_values.detach().cpu().numpy().astype(np.float32))[:, 0]  # (B,)
        ctx.net = net
        return torch.from_numpy(np.ascontiguousarray(logits)).to(pixel_values.dtype)

    @staticmethod
    def backward(ctx, grad_logits):
        grad = ctx.net.backward(grad_logits.detach().cpu().numpy().astype(np.float32)[:, None])  # (B, 3, H, W)
        return torch.from_numpy(np.ascontiguousarray(grad)).to(grad_logits.dtype), None


def numpy_cnn_model(cnn) -> ImageModel:
    """CourseCNN as an ImageModel for saliency and FGSM (not Grad-CAM: it has no torch layers to hook).

    Pixels as `numpy_cnn.pixel_values` makes them: (B, 3, S, S) in [-1, 1]. Backward must follow its own
    forward (the network caches one batch), which saliency and fgsm do."""
    return lambda pixel_values: _NumpyNetwork.apply(pixel_values, cnn.net)
