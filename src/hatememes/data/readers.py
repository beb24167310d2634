"""Readers for the trainers: the fetched memes (and their cached features) as datasets.

    MemeDataset(memes_dir, split)            torch Dataset of {"id", "text", "image" (RGB PIL), "label"}
    hf_dataset(memes_dir, split)             the same as a `datasets.Dataset` (image column decoded by PIL)
    load_items(memes_dir, features, split, inputs)
                                             what a model's `collate` receives: id/text/label plus, per input
                                             name, the cached feature rows ("clip", "grid", "regions") or
                                             the decoded image ("image"), the fine-grained targets
                                             ("fine_grained", hatememes.data.fine_grained)

Labels are -1 where the split has none (the test files of some copies).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from hatememes.data.memes import Meme, load_rgb, read_split
from hatememes.features.store import load_split

FEATURE_TENSORS = {"clip": {"clip_image": "image", "clip_text": "text"}, "grid": {"grid": "grid"},
                   "regions": {"regions": "regions", "boxes": "boxes"},
                   "lmm": {"lmm": "hidden"}}  # a fine-tuned LMM's last-token hidden state (hatememes.features.lmm)
NOT_FEATURES = ("image", "fine_grained")  # inputs that are no cached features: read from data/memes
# item key -> stored tensor, given to the items when the features hold it (features.clip.pooled)
OPTIONAL_TENSORS = {"clip": {"clip_image_pooled": "image_pooled", "clip_text_pooled": "text_pooled"}}


def feature_items(name: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A features kind's stored tensors under their item keys: the required ones, and the optional ones held."""
    keys = {**FEATURE_TENSORS[name],
            **{key: stored for key, stored in OPTIONAL_TENSORS.get(name, {}).items() if stored in tensors}}
    return {key: tensors[stored] for key, stored in keys.items()}


class MemeItems(Dataset):
    """One split's memes with the inputs a model asked for; images are decoded on access."""

    def __init__(self, memes_dir: Path, memes: list[Meme], features: dict[str, torch.Tensor] | None = None,
                 with_images: bool = False):
        self.memes_dir, self.memes = Path(memes_dir), memes
        self.features, self.with_images = features or {}, with_images

    def __len__(self) -> int:
        return len(self.memes)

    def __getitem__(self, index: int) -> dict:
        meme = self.memes[index]
        item = {"id": meme.id, "text": meme.text, "label": meme.label}
        for key, rows in self.features.items():
            item[key] = rows[index]
        if self.with_images:
            item["image"] = load_rgb(self.memes_dir / meme.img)
        return item

    @property
    def ids(self) -> list[int]:
        return [meme.id for meme in self.memes]

    @property
    def labels(self) -> list[int]:
        return [meme.label for meme in self.memes]


def load_items(memes_dir: Path, features_dirs: dict[str, Path], split: str, inputs: Sequence[str]) -> MemeItems:
    """A split's items for a model with these `inputs`; `features_dirs` maps extractor -> its folder."""
    memes = read_split(memes_dir, split)
    features = {}
    if "fine_grained" in inputs:
        features["fine_grained"] = fine_grained_rows(memes_dir, split, memes)
    for name in inputs:
        if name in NOT_FEATURES:
            continue
        if name not in FEATURE_TENSORS:
            raise KeyError(f"unknown model input {name!r}; valid: image, {', '.join(FEATURE_TENSORS)}")
        if name not in features_dirs:
            raise FileNotFoundError(f"the model needs {name!r} features but no folder for them was given")
        tensors = load_split(features_dirs[name], split, memes_dir)
        features.update(feature_items(name, tensors))
    return MemeItems(memes_dir, memes, features, with_images="image" in inputs)


def feature_inputs(inputs: Sequence[str]) -> list[str]:
    """The inputs of a model that are cached features (data/features/<name>)."""
    return [name for name in inputs if name not in NOT_FEATURES]


def fine_grained_rows(memes_dir: Path, split: str, memes: list[Meme]) -> torch.Tensor:
    """(N, NUM_FINE) multi-hot fine-grained targets of the memes, a row of NaN where a meme has none (the test
    splits, or memes the annotations do not cover)."""
    from hatememes.data.fine_grained import NUM_FINE, multi_hot, read_fine_labels

    labels = read_fine_labels(memes_dir, split) or {}
    missing = [float("nan")] * NUM_FINE
    return torch.tensor([multi_hot(labels[m.id]) if m.id in labels else missing for m in memes], dtype=torch.float32)


class MemeDataset(MemeItems):
    """A split of `data/memes` as a torch Dataset of id, text, RGB PIL image and label."""

    def __init__(self, memes_dir: Path, split: str):
        super().__init__(memes_dir, read_split(memes_dir, split), with_images=True)


def hf_dataset(memes_dir: Path, split: str):
    """A split of `data/memes` as a `datasets.Dataset` with columns id, text, image (PIL, RGB), label."""
    import datasets

    memes = read_split(memes_dir, split)
    features = datasets.Features({"id": datasets.Value("int64"), "text": datasets.Value("string"),
                                  "image": datasets.Image(), "label": datasets.Value("int64")})
    table = {"id": [m.id for m in memes], "text": [m.text for m in memes],
             "image": [str(Path(memes_dir) / m.img) for m in memes], "label": [m.label for m in memes]}
    dataset = datasets.Dataset.from_dict(table, features=features)
    return dataset.with_transform(to_rgb_batch)


def to_rgb_batch(batch: dict) -> dict:
    batch["image"] = [image.convert("RGB") if image.mode != "RGB" else image for image in batch["image"]]
    return batch
