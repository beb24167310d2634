"""Saliency, Grad-CAM, FGSM and overlays on tiny models whose right answers are known."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hatememes.explain import fgsm, fgsm_auroc, grad_cam, numpy_cnn_model, saliency, save_overlay
from hatememes.models.course.numpy_cnn import CourseCNN, CourseCNNConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


class BrightnessModel(nn.Module):
    """logit = 10 * (mean of a smoothed, rectified red channel over the left half - 0.5); blind to the right half."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1 / 9  # channel 0: a 3x3 mean of the red channel
            self.conv.bias.zero_()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B,)
        features = torch.relu(self.conv(pixel_values))  # (B, 2, H, W)
        return 10 * (features[:, 0, :, : features.shape[-1] // 2].mean(dim=(1, 2)) - 0.5)


def test_saliency_is_zero_where_the_model_cannot_see():
    pixels = torch.rand(2, 3, 8, 8)
    maps = saliency(BrightnessModel(), pixels)
    assert maps.shape == (2, 8, 8)
    assert maps[:, :, 5:].abs().max() == 0  # columns the left-half mean never reads
    assert (maps[:, :, :3] > 0).all()


def test_grad_cam_matches_its_definition_and_removes_its_hook():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.Flatten(), nn.Linear(5 * 8 * 8, 1)
    )
    pixels = torch.rand(3, 3, 8, 8)
    heat = grad_cam(lambda x: model(x)[:, 0], model[2], pixels)
    activations = model[:3](pixels).detach().requires_grad_(True)  # (B, K, h, w) of the chosen layer
    (grads,) = torch.autograd.grad(model[3:](activations).sum(), activations)
    alphas = grads.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1), of both signs with random weights
    assert (alphas > 0).any() and (alphas < 0).any()
    expected = torch.relu((alphas * activations).sum(dim=1)).detach()
    torch.testing.assert_close(heat, expected / expected.amax(dim=(1, 2), keepdim=True))
    assert not model[2]._forward_hooks


def test_grad_cam_finds_the_bright_patch():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)
    )
    with torch.no_grad():
        model[0].weight.fill_(0.1)
        model[0].bias.fill_(-0.05)
        model[4].weight.fill_(1.0)
    pixels = torch.zeros(1, 3, 16, 16)
    pixels[:, :, 2:6, 10:14] = 1.0  # a bright patch at the top right
    heat = grad_cam(lambda x: model(x)[:, 0], model[1], pixels)[0]
    row, col = divmod(int(heat.argmax()), 16)
    assert 2 <= row < 6 and 10 <= col < 14
    assert heat[10:, :6].max() == 0


def brightness_data(n=64, seed=0):
    """Images whose left half is uniformly one red level; hateful when that level is above 0.5."""
    generator = torch.Generator().manual_seed(seed)
    red = 0.3 + 0.4 * torch.rand(n, generator=generator)
    pixels = torch.rand(n, 3, 8, 8, generator=generator)
    pixels[:, 0] = red[:, None, None]
    return pixels, (red > 0.5).float()


def test_fgsm_stays_in_the_eps_ball_and_the_pixel_range():
    pixels, labels = brightness_data()
    adversarial = fgsm(BrightnessModel(), pixels, labels, eps=0.1)
    assert (adversarial - pixels).abs().max() <= 0.1 + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1


def test_fgsm_auroc_falls_as_eps_grows():
    pixels, labels = brightness_data()
    results = fgsm_auroc(BrightnessModel(), pixels, labels, eps_values=(0.0, 0.02, 0.1, 0.3), batch_size=16)
    assert list(results) == [0.0, 0.02, 0.1, 0.3]
    assert results[0.0] == 1.0
    values = list(results.values())
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert results[0.3] < 0.1  # pushed past the threshold: the classifier is fooled


def test_overlay_png_leaves_cold_pixels_alone(tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    heat = torch.zeros(10, 15)
    heat[:, 10:] = 1.0  # hot on the right, cold on the left
    path = save_overlay(image, heat, tmp_path / "plots" / "overlay.png")
    with Image.open(path) as written:
        assert written.format == "PNG" and written.size == (30, 20)
        overlay = np.asarray(written.convert("RGB"), dtype=int)
    original = np.asarray(image, dtype=int)
    np.testing.assert_array_equal(overlay[:, :16], original[:, :16])
    assert np.abs(overlay[:, 22:] - original[:, 22:]).mean() > 20


def test_numpy_cnn_saliency_and_fgsm_match_the_same_torch_network():
    cnn = CourseCNN(CourseCNNConfig(image_size=12, channels=(3,), hidden_size=4))
    twin = nn.Sequential(
        nn.Conv2d(3, 3, 3, 1, 1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 6 * 6, 4),
        nn.ReLU(),
        nn.Linear(4, 1),
    )
    twin.load_state_dict({key: torch.from_numpy(value) for key, value in cnn.net.state().items()})
    model, torch_model = numpy_cnn_model(cnn), lambda x: twin(x)[:, 0]
    pixels, labels = torch.rand(16, 3, 12, 12) * 2 - 1, torch.tensor([0.0, 1.0] * 8)
    torch.testing.assert_close(saliency(model, pixels), saliency(torch_model, pixels), rtol=1e-4, atol=1e-6)
    adversarial = fgsm(model, pixels, labels, eps=0.1, pixel_range=(-1, 1))
    expected = fgsm(torch_model, pixels, labels, eps=0.1, pixel_range=(-1, 1))
    assert (adversarial == expected).float().mean() > 0.99  # signs agree except where a gradient is ~0
    eps_values = (0.0, 0.05, 0.5)
    ours = fgsm_auroc(model, pixels, labels, eps_values, pixel_range=(-1, 1))
    theirs = fgsm_auroc(torch_model, pixels, labels, eps_values, pixel_range=(-1, 1))
    assert list(ours.values()) == pytest.approx(list(theirs.values()), abs=0.02)
    assert ours[0.5] < ours[0.0]
