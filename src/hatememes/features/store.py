"""The feature cache (DESIGN §5): `data/features/<extractor>/<split>.safetensors` + `meta.json`.

Rows follow the meme order of `data/memes/<split>.jsonl`; the ids are stored alongside and checked on
load, and meta.json records the data hash each split was computed from, so a stale cache is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hatememes.data.memes import read_split
from hatememes.files import read_json


class StaleFeaturesError(ValueError):
    """The cached features do not belong to the memes they are asked for."""


def save_split(directory: Path, split: str, ids: list[int], tensors: dict[str, torch.Tensor]) -> Path:
    """Write one split's tensors (and their `ids`) atomically: a temporary name, then a rename."""
    path = Path(directory) / f"{split}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {name: tensor.contiguous().cpu() for name, tensor in tensors.items()}
    payload["ids"] = torch.tensor(ids, dtype=torch.long)
    temporary = path.with_name(f".{path.name}.tmp")
    save_file(payload, str(temporary))
    os.replace(temporary, path)
    return path


def load_split(features_dir: Path, split: str, memes_dir: Path) -> dict[str, torch.Tensor]:
    """One split's features, checked against `memes_dir`: same data hash, same ids in the same order."""
    features_dir, memes_dir = Path(features_dir), Path(memes_dir)
    path = features_dir / f"{split}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no features for split {split!r} (run the features stage)")
    meta = read_json(features_dir / "meta.json")
    manifest = read_json(memes_dir / "manifest.json")
    expected = manifest["splits"][split]["sha256"]
    if meta.get("data_sha256", {}).get(split) != expected:
        raise StaleFeaturesError(
            f"{path}: computed from another version of {memes_dir / (split + '.jsonl')} "
            f"(data hash {meta.get('data_sha256', {}).get(split)} != {expected}); rerun the features stage"
        )
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for corrupt headers and truncation
        raise StaleFeaturesError(f"{path}: unreadable features file ({error}); rerun the features stage") from None
    ids = [meme.id for meme in read_split(memes_dir, split)]
    if tensors["ids"].tolist() != ids:
        raise StaleFeaturesError(f"{path}: ids do not match the order of {memes_dir / (split + '.jsonl')}")
    return tensors
