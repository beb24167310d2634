"""The extraction loop every extractor shares: DataLoader workers decode and preprocess, the model runs
under `torch.inference_mode` (bf16 autocast on GPU), and with several processes each one extracts its
shard of the split and the main process receives the rows in meme order.

An extractor provides `preprocess(image, text) -> dict[str, Tensor]` (picklable: it runs in workers),
`encode(batch) -> dict[str, Tensor]` (rows of the cache), `model` (an nn.Module) and `meta` (meta.json).
A `RowReader` (MMF's precomputed region features) reads its rows from files instead: no images, no model.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from hatememes.data.memes import Meme, load_rgb, read_split
from hatememes.progress import progress
from hatememes.threads import cpu_threads


class Extractor(Protocol):
    model: torch.nn.Module
    meta: dict

    def preprocess(self, image, text: str) -> dict[str, torch.Tensor]: ...

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class RowReader(Protocol):
    meta: dict

    def read_split(self, memes_dir: Path, split: str) -> tuple[list[int], dict[str, torch.Tensor]]: ...


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
    device = accelerator.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    outputs: dict[str, list[torch.Tensor]] = {}
    bar = progress(total=len(dataset), desc=f"{desc}", unit="img", disable=not accelerator.is_local_main_process)

    def encode(batch: dict[str, torch.Tensor]) -> int:
        batch = {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
        for name, tensor in extractor.encode(batch).items():
            outputs.setdefault(name, []).append(tensor.float().cpu())
        images = len(next(iter(batch.values())))
        bar.update(images)
        return images

    with torch.inference_mode(), autocast, bar:
        done = 0
        if device.type == "cpu" and num_workers > 0:
            done, num_workers = where_to_decode(dataset, batch_size, num_workers, encode)
            bar.set_postfix_str(f"decoding in {num_workers} workers" if num_workers else "decoding between batches")
        rest = Subset(dataset, range(done, len(dataset)))  # the same batch boundaries as one loader over all
        loader = DataLoader(rest, batch_size=batch_size, num_workers=num_workers, persistent_workers=False)
        threads = ModelThreads(device, num_workers)
        with cpu_threads(threads.count):
            batches, started = iter(loader), time.perf_counter()
            for batch in batches:
                images = encode(batch)
                threads.observe(time.perf_counter() - started, images)  # waiting for the batch + computing it
                started = time.perf_counter()
    return {name: torch.cat(parts) for name, parts in outputs.items()}


def where_to_decode(dataset, batch_size, num_workers, encode, cores: int | None = None) -> tuple[int, int]:
    """On CPU, decode in `num_workers` DataLoader workers or in this process between the model's batches?

    Workers run beside the model but take cores from it; decoding here stops the model for the decode but
    leaves it every core. This process decodes and `encode`s the first two batches itself (the first warms
    the model up), times the second, and returns (images done, workers for the rest): 0 workers when decode
    + forward on all threads beats the slower of the workers' decode and the forward on the cores they leave
    (assumed to scale with threads). Splits of at most two batches are decoded here whole.

    Measured on 2 cores with 112-px PNGs, whose decode + preprocess costs 0.5-0.7 ms per image: a ViT-B-32
    (55 ms per image on 2 threads, 105 on 1) decodes here, stage/bare 0.95-0.99 against 0.73 with 2 workers
    and the thread trial; the demo's tiny CLIP (0.17-0.20 ms per image on 2 threads) keeps its workers."""
    cores = len(os.sched_getaffinity(0)) if cores is None else cores
    if len(dataset) <= 2 * batch_size:
        return 0, 0
    threads = torch.get_num_threads()
    for start in (0, batch_size):
        began = time.perf_counter()
        batch = default_collate([dataset[i] for i in range(start, start + batch_size)])
        decoded = time.perf_counter()
        encode(batch)
        decode, forward = decoded - began, time.perf_counter() - decoded
    left = max(1, min(threads, cores - num_workers))
    in_workers = max(decode / num_workers, forward * threads / left)
    return 2 * batch_size, 0 if decode + forward <= in_workers else num_workers


class ModelThreads:
    """On CPU with DataLoader workers: the model starts on the cores the workers leave it (at least one), then
    tries every core for a few batches and keeps whichever ran faster. `count` is the thread count to start
    with; `observe` is told each batch's time (waiting for it + computing it) and size.

    Measured on 2 cores. The demo's tiny CLIP (forward 5,500 img/s, PNG decode + resize 0.45 ms per image and
    core) is bound by the workers: 1,800 img/s on 1 thread, 1,050 img/s with 2 model threads spinning on the
    workers' cores. (A model bound by itself, such as a ViT-B-32, gets no workers: see `where_to_decode`.)
    The thread count does not change the features (CPU kernels split rows, not sums: tested bit-identical)."""

    TRIAL_BATCHES = 2  # per setting, after the first batch (which also waits for the workers to start)

    def __init__(self, device: torch.device, num_workers: int, cores: int | None = None):
        self.all = torch.get_num_threads()
        cores = len(os.sched_getaffinity(0)) if cores is None else cores
        leave_workers = device.type == "cpu" and num_workers > 0
        self.count = self.reduced = max(1, min(self.all, cores - num_workers)) if leave_workers else self.all
        self.batches = 0
        self.seconds = {self.reduced: 0.0, self.all: 0.0}
        self.images = {self.reduced: 0, self.all: 0}

    def observe(self, seconds: float, images: int) -> None:
        if self.reduced == self.all or self.batches > 2 * self.TRIAL_BATCHES:
            return
        if self.batches > 0:
            self.seconds[self.count] += seconds
            self.images[self.count] += images
        self.batches += 1
        if self.batches == 1 + self.TRIAL_BATCHES:
            self.count = self.all  # the second trial
        elif self.batches > 2 * self.TRIAL_BATCHES:
            rate = {count: self.images[count] / max(self.seconds[count], 1e-9) for count in self.seconds}
            self.count = self.all if rate[self.all] > 1.1 * rate[self.reduced] else self.reduced
        torch.set_num_threads(self.count)
