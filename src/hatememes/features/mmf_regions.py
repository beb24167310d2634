"""MMF's released region features (`features.regions.precomputed_dir`): read from files, no CNN, no images.

MMF's feature extractor (tools/scripts/features/extract_features_vmb.py) writes two files per image into
one folder, named after the image file (`img/01235.png` -> `01235`):

    01235.npy        (n, 2048) float32: the detector's fc6 feature of each box, boxes by confidence, highest first
    01235_info.npy   np.save of a dict: bbox (n, 4) x1, y1, x2, y2 in pixels, image_width, image_height,
                     num_boxes (and objects, cls_prob, ..., not read here)

A meme's files are found under its image's stem, else its id padded to 5 digits, else its id unpadded: the
first name whose .npy exists is used (so an exact match of the image's name wins over the others). The info
file is unpickled by hatememes.features.safe_npy, which refuses any global but numpy's array constructors.

Each meme gives the first K = `num_boxes` boxes and their features (MMF's files are sorted by detector
confidence, so these are its top K), boxes normalised by the image size plus their w, h (`box_geometry`).
An image with fewer boxes is padded with zero features and zero boxes; meta.json's `padded` counts those
images per split. MMF's own reader keeps every row of the arrays too: `num_boxes` in the info file counts
the boxes with a nonzero confidence and may be smaller than the rows, so it is only checked (0 <= it <= n).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from hatememes.data.memes import Meme, read_split
from hatememes.features.regions import RegionsParams, box_geometry
from hatememes.features.safe_npy import load_pickled_npy
from hatememes.progress import progress

INFO_KEYS = ("bbox", "image_width", "image_height", "num_boxes")
SLACK = 1e-3  # how far outside [0, 1] a normalised box edge may stray (the detector's float rounding) before clipping
LISTED = 20  # bad memes named in an error; the rest are counted


class BadRegions(ValueError):
    """One meme's files cannot be used; the message names the file and the reason."""


class PrecomputedFeaturesError(ValueError):
    """Memes of a split whose precomputed region files are missing or unusable, all in one message."""


def meme_files(folder: Path, meme: Meme) -> tuple[Path, Path]:
    """(features, info) paths of `meme`: the first of its image's stem, its padded id, its id with a .npy."""
    stems = list(dict.fromkeys([Path(meme.img).stem, f"{meme.id:05d}", str(meme.id)]))
    for stem in stems:
        if (folder / f"{stem}.npy").is_file():
            info = folder / f"{stem}_info.npy"
            if not info.is_file():
                raise BadRegions(f"{info}: missing (the info file beside {stem}.npy)")
            return folder / f"{stem}.npy", info
    raise BadRegions(f"{folder}: no {' or '.join(f'{stem}.npy' for stem in stems)}")


def read_features(path: Path, dim: int) -> np.ndarray:
    """(n, dim) float32 features, checked for shape and finite values."""
    try:
        features = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise BadRegions(f"{path}: unreadable ({error})") from None
    if features.ndim != 2 or features.shape[1] != dim or features.dtype.kind != "f":
        raise BadRegions(f"{path}: {features.dtype} features of shape {features.shape}, expected (boxes, {dim}) floats")
    if not np.isfinite(features).all():
        raise BadRegions(f"{path}: NaN or inf in the features")
    return features.astype(np.float32, copy=False)


def read_info(path: Path) -> dict:
    try:
        info = load_pickled_npy(path)
    except (ValueError, pickle.UnpicklingError, OSError, EOFError) as error:
        message = str(error)
        raise BadRegions(message if message.startswith(str(path)) else f"{path}: unreadable ({message})") from None
    if not isinstance(info, dict):
        raise BadRegions(f"{path}: holds a {type(info).__name__}, not MMF's info dict")
    missing = [key for key in INFO_KEYS if key not in info]
    if missing:
        raise BadRegions(f"{path}: no {', '.join(missing)} (an MMF info file has {', '.join(INFO_KEYS)})")
    return info


def number(info: dict, key: str, path: Path, kinds: str) -> float:
    """info[key] as a number: a Python or numpy scalar whose dtype kind is in `kinds` ("iu" integers, "f" floats)."""
    value = np.asarray(info[key])
    if value.shape != () or value.dtype.kind not in kinds:
        raise BadRegions(f"{path}: {key} = {info[key]!r}, expected a {'number' if 'f' in kinds else 'whole number'}")
    return value.item()


def normalised_boxes(info: dict, path: Path, rows: int) -> np.ndarray:
    """(rows, 4) x1, y1, x2, y2 in [0, 1]: MMF's pixel boxes divided by the image size, checked."""
    bbox = np.asarray(info["bbox"])
    if bbox.shape != (rows, 4) or bbox.dtype.kind not in "iuf":
        raise BadRegions(f"{path}: bbox of shape {bbox.shape} ({bbox.dtype}), expected ({rows}, 4) numbers as the "
                         f"features have {rows} rows")
    num_boxes = number(info, "num_boxes", path, "iu")
    if not 0 <= num_boxes <= rows:
        raise BadRegions(f"{path}: num_boxes = {num_boxes}, but the arrays have {rows} rows")
    width, height = number(info, "image_width", path, "iuf"), number(info, "image_height", path, "iuf")
    if not (np.isfinite([width, height]).all() and width > 0 and height > 0):
        raise BadRegions(f"{path}: image size {width} x {height}")
    if not np.isfinite(bbox).all():
        raise BadRegions(f"{path}: NaN or inf in bbox")
    boxes = bbox.astype(np.float64) / [width, height, width, height]
    if (boxes < -SLACK).any() or (boxes > 1 + SLACK).any():
        raise BadRegions(f"{path}: a box outside the {width} x {height} image")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise BadRegions(f"{path}: a box with x2 < x1 or y2 < y1")
    return boxes.clip(0, 1).astype(np.float32)


def read_meme(folder: Path, meme: Meme, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, dim), boxes (n, 4) normalised) of one meme; BadRegions names the file and what is wrong."""
    features_path, info_path = meme_files(folder, meme)
    features = read_features(features_path, dim)
    return features, normalised_boxes(read_info(info_path), info_path, len(features))


def unusable(folder: Path, split: str, total: int, problems: list[str]) -> PrecomputedFeaturesError:
    listed = "".join(f"\n  {problem}" for problem in problems[:LISTED])
    more = f"\n  ... and {len(problems) - LISTED} more" if len(problems) > LISTED else ""
    return PrecomputedFeaturesError(
        f"features.regions.precomputed_dir {folder}: {len(problems)} of {total} memes of split {split} have no "
        f"usable region features (nothing was written):{listed}{more}")


class PrecomputedRegions:
    """The `regions` extractor for MMF's files: `read_split` gives a split's rows; no `model`, no `preprocess`."""

    def __init__(self, params: RegionsParams):
        self.folder, self.num_boxes, self.dim = Path(params.precomputed_dir), params.num_boxes, params.precomputed_dim
        if not self.folder.is_dir():
            raise FileNotFoundError(f"features.regions.precomputed_dir {self.folder}: no such folder")
        self.meta = {
            "extractor": "regions", "box_source": f"precomputed: MMF's region features in {self.folder}",
            "precomputed_dir": str(self.folder), "dim": self.dim, "num_boxes": self.num_boxes,
            "box_format": "x1, y1, x2, y2, w, h normalised to [0, 1]", "tensors": ["regions", "boxes"],
            "padded": {},  # per split, filled by read_split: images with fewer than num_boxes boxes (zero rows after)
        }

    def read_split(self, memes_dir: Path, split: str) -> tuple[list[int], dict[str, torch.Tensor]]:
        """(ids, {"regions": (N, K, D), "boxes": (N, K, 6)}) in the order of `<memes_dir>/<split>.jsonl`; raises
        one PrecomputedFeaturesError listing every meme whose files are missing or unusable."""
        memes = read_split(memes_dir, split)
        regions = torch.zeros(len(memes), self.num_boxes, self.dim)  # (N, K, D): zero rows pad short images
        boxes = torch.zeros(len(memes), self.num_boxes, 4)  # (N, K, 4)
        counts, problems = [], []
        for row, meme in enumerate(progress(memes, desc=split, unit="img")):
            try:
                features, found = read_meme(self.folder, meme, self.dim)  # (n, D), (n, 4)
            except BadRegions as error:
                problems.append(f"meme {meme.id}: {error}")
                continue
            kept = min(len(features), self.num_boxes)  # sorted by confidence: the first K are the detector's top K
            regions[row, :kept] = torch.from_numpy(features[:kept])
            boxes[row, :kept] = torch.from_numpy(found[:kept])
            counts.append(len(features))
        if problems:
            raise unusable(self.folder, split, len(memes), problems)
        self.record_padding(split, counts)
        return [meme.id for meme in memes], {"regions": regions, "boxes": box_geometry(boxes)}

    def record_padding(self, split: str, counts: list[int]) -> None:
        short = [count for count in counts if count < self.num_boxes]
        self.meta["padded"][split] = {"images": len(short), "fewest_boxes": min(short, default=self.num_boxes)}
        if short:
            print(f"regions: {len(short)} of {len(counts)} images of {split} have fewer than {self.num_boxes} boxes "
                  f"(fewest {min(short)}): padded with zero features and zero boxes (meta.json: padded)")
