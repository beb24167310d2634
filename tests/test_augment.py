"""random_shift against the per-image loop it replaced (the reference, kept here)."""

from __future__ import annotations

import torch

from hatememes.augment import random_shift


def loop_reference(pixel_values: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    size = pixel_values.shape[-1]
    padded = torch.nn.functional.pad(pixel_values, (shift,) * 4, mode="replicate")
    dx, dy = torch.randint(0, 2 * shift + 1, (2, len(pixel_values)), generator=generator).tolist()
    return torch.stack([p[:, y:y + size, x:x + size] for p, x, y in zip(padded, dx, dy, strict=True)])


def test_random_shift_is_the_loop_bit_for_bit():
    images = torch.rand(17, 3, 12, 12)
    for shift in (1, 2, 3):
        ours = random_shift(images, shift, torch.Generator().manual_seed(shift))
        assert torch.equal(ours, loop_reference(images, shift, torch.Generator().manual_seed(shift)))
        assert not torch.equal(ours, images)  # something moved


def test_no_shift_is_the_identity():
    images = torch.rand(2, 3, 8, 8)
    assert random_shift(images, 0, torch.Generator()) is images
