"""A toy training run for the resume tests: clip_fusion on fake CLIP features with a pairwise rule.

    python tests/helpers/toy_training.py OUT_DIR [--slow]     # writes OUT_DIR/probs.npy when done
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from hatememes.data.memes import Meme
from hatememes.data.readers import MemeItems
from hatememes.losses import LossConfig
from hatememes.models import BuildContext
from hatememes.models.clip_fusion import ClipFusion, ClipFusionConfig
from hatememes.training import LoopParams, predict, train


def toy_items(count: int, seed: int, dim: int = 16) -> MemeItems:
    """Image and text concept vectors; hateful iff the two concepts differ by 1 (mod 4): pairwise only."""
    generator = torch.Generator().manual_seed(seed)
    concepts = torch.randn(4, dim, generator=generator.manual_seed(0))
    generator.manual_seed(seed + 1)
    image_concept = torch.randint(0, 4, (count,), generator=generator)
    text_concept = torch.randint(0, 4, (count,), generator=generator)
    labels = ((text_concept - image_concept) % 4 == 1).long()
    noise = 0.3 * torch.randn(2, count, dim, generator=generator)
    memes = [Meme(id=seed * 10_000 + i, img="img/none.png", text=f"t{i}", label=int(labels[i])) for i in range(count)]
    features = {"clip_image": concepts[image_concept] + noise[0], "clip_text": concepts[text_concept] + noise[1]}
    return MemeItems(Path("."), memes, features)


def toy_model(dim: int = 16) -> ClipFusion:
    config = ClipFusionConfig(projection_dim=32, pre_output_dim=32, drop_probs=(0.1, 0.0, 0.1))
    return ClipFusion.build(config, BuildContext(feature_meta={"clip": {"dim": dim}}))


LOOP = LoopParams(epochs=4, batch_size=16, lr=3.0e-3, warmup_steps=5, grad_clip=1.0, patience=10,
                  checkpoint_every=7, loss=LossConfig())


class SlowItems(MemeItems):
    def __getitem__(self, index: int) -> dict:
        time.sleep(0.01)
        return super().__getitem__(index)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    train_items, dev_items = toy_items(400, seed=1), toy_items(120, seed=2)
    if "--slow" in sys.argv:
        train_items = SlowItems(train_items.memes_dir, train_items.memes, train_items.features)
    model = toy_model()
    train(model, train_items, dev_items, LOOP, out)
    _, probs = predict(model, toy_items(120, seed=3))
    np.save(out / "probs.npy", probs)
