"""The pretraining stages' one augmentation: random translation with the edges replicated.

torch only (no open_clip, no transformers), so both pretraining processes (the tiny CLIP's and the tiny
LLaVA's) import it for free."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(pixel_values: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, S, S) images, each translated by up to `shift` pixels in x and y (edge padding), one draw of
    `generator` per image and axis; shift 0 returns the input."""
    if shift == 0:
        return pixel_values
    size = pixel_values.shape[-1]
    padded = F.pad(pixel_values, (shift,) * 4, mode="replicate")  # (B, 3, S + 2s, S + 2s)
    dx, dy = torch.randint(0, 2 * shift + 1, (2, len(pixel_values)), generator=generator)  # (B,) each
    windows = padded.unfold(2, size, 1).unfold(3, size, 1)  # (B, 3, 2s + 1, 2s + 1, S, S)
    return windows[torch.arange(len(padded)), :, dy, dx]  # (B, 3, S, S)
