"""The extraction loop every extractor shares: DataLoader workers decode and preprocess, the model runs
under `torch.inference_mode` (bf16 autocast on GPU), and with several processes each one extracts its
shard of the split and the main process receives the rows in meme order.

An extractor provides `preprocess(image, text) -> dict[str, Tensor]` (picklable: it runs in workers),
`encode(batch) -> dict[str, Tensor]` (rows of the cache), `model` (an nn.Module) and `meta` (meta.json).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from hatememes.data.memes import Meme, load_rgb, read_split
from hatememes.threads import cpu_threads


class Extractor(Protocol):
    model: torch.nn.Module
    meta: dict

    def preprocess(self, image, text: str) -> dict[str, torch.Tensor]: ...

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


class MemeInputs(Dataset):
    """The preprocessed inputs of some memes of a split (decoded in the DataLoader's workers)."""

    def __init__(self, memes_dir: Path, memes: list[Meme], preprocess):
        self.memes_dir, self.memes, self.preprocess = Path(memes_dir), memes, preprocess

    def __len__(self) -> int:
        return len(self.memes)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        meme = self.memes[index]
        return self.preprocess(load_rgb(self.memes_dir / meme.img), meme.text)


def extract_split(
    extractor: Extractor, memes_dir: Path, split: str, batch_size: int, num_workers: int, accelerator: Accelerator
) -> tuple[list[int], dict[str, torch.Tensor]]:
    """(ids, {name: (N, ...) tensor}) for every meme of `split`, in file order, on every process."""
    memes = read_split(memes_dir, split)
    with accelerator.split_between_processes(list(range(len(memes)))) as shard:
        rows = run_shard(extractor, MemeInputs(memes_dir, [memes[i] for i in shard], extractor.preprocess),
                         batch_size, num_workers, accelerator, desc=split)
        shards = gather_object([(shard[0] if shard else len(memes), rows)])
    shards = [s for s in sorted(shards, key=lambda s: s[0]) if s[1]]
    tensors = {name: torch.cat([rows[name] for _, rows in shards]) for name in shards[0][1]}
    return [m.id for m in memes], tensors


def run_shard(extractor, dataset, batch_size, num_workers, accelerator, desc) -> dict[str, torch.Tensor]:
    if len(dataset) == 0:
        return {}
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, persistent_workers=False)
    device = accelerator.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    outputs: dict[str, list[torch.Tensor]] = {}
    bar = tqdm(total=len(dataset), desc=f"{desc}", unit="img", disable=not accelerator.is_local_main_process)
    with torch.inference_mode(), autocast, bar, model_threads(device, num_workers):
        for batch in loader:
            batch = {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
            for name, tensor in extractor.encode(batch).items():
                outputs.setdefault(name, []).append(tensor.float().cpu())
            bar.update(len(next(iter(batch.values()))))
    return {name: torch.cat(parts) for name, parts in outputs.items()}


def model_threads(device: torch.device, num_workers: int) -> AbstractContextManager[None]:
    """On CPU, leave the DataLoader workers their cores and give the model the rest (at least one).

    Measured on 2 cores with the demo's tiny CLIP (forward 5,500 img/s, PNG decode + resize 0.45 ms per
    image and core): 1,800 img/s this way, 1,050 img/s with 2 workers and 2 model threads spinning on the
    same 2 cores, 1,270 img/s with no workers. A model much slower than the decoding (ViT-L-14 on a CPU)
    would rather have every core: set `features.num_workers: 0` for it."""
    count = torch.get_num_threads()
    if device.type == "cpu" and num_workers > 0:
        count = max(1, min(count, len(os.sched_getaffinity(0)) - num_workers))
    return cpu_threads(count)
