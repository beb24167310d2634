"""Stage `features@EXTRACTOR`: cache CLIP / grid / region features of every split for the trainers.

    python pipelines/features.py clip --memes data/memes --out data/features/clip
    accelerate launch pipelines/features.py grid --memes data/memes --out data/features/grid   # sharded

Writes `<out>/<split>.safetensors` (rows in the order of `<memes>/<split>.jsonl`, ids alongside) and
`<out>/meta.json` (model, tag, dims, preprocessing, box source, and the data hash of every split), all or
nothing. With `features.regions.precomputed_dir` the regions are MMF's files, read without images or a CNN.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from hatememes import params as P
from hatememes.features import EXTRACTORS, FeaturesParams, build_extractor
from hatememes.features.extract import RowReader, extract_split
from hatememes.features.mmf_regions import PrecomputedFeaturesError
from hatememes.features.store import save_split
from hatememes.files import read_json, report_write_error, write_json
from hatememes.pretrained import PretrainedLoadError
from hatememes.process import exit_after
from hatememes.progress import quiet_library_bars


def main(argv: list[str] | None = None) -> int:
    quiet_library_bars()  # transformers' and the Hub's bars would write carriage returns into a log
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extractor", choices=sorted(EXTRACTORS))
    parser.add_argument("--memes", type=Path, required=True, help="the fetched memes (data/memes)")
    parser.add_argument("--out", type=Path, required=True, help="where to write (data/features/EXTRACTOR)")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    config = P.section(P.from_arguments(args), "features", FeaturesParams)
    try:
        extract(args.extractor, config, args.memes, args.out)
    except (PretrainedLoadError, PrecomputedFeaturesError) as error:  # weights or files that a param names
        print(f"features: {error}", file=sys.stderr)  # the message says which and what is wrong with them
        return 1
    except Exception as error:
        return report_write_error("features", args.out, error)
    return 0


def extract(name: str, config: FeaturesParams, memes: Path, out: Path) -> None:
    torch.manual_seed(0)
    accelerator = Accelerator()
    extractor = build_extractor(name, config)  # the weights first: one that cannot be loaded fails before any data
    reads_files = isinstance(extractor, RowReader)  # MMF's precomputed regions: no model, no images
    if reads_files and not accelerator.is_main_process:
        return  # reading files needs no shards: the main process reads and writes them all
    if not reads_files:
        extractor.model.to(accelerator.device)  # with the regions' detector, which is part of it
    manifest = read_json(memes / "manifest.json")
    building = out.with_name(f".{out.name}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(building, ignore_errors=True)
    try:
        for split in manifest["splits"]:
            if reads_files:
                ids, tensors = extractor.read_split(memes, split)
            else:
                ids, tensors = extract_split(extractor, memes, split, config.batch_size, config.num_workers,
                                             accelerator)
            if accelerator.is_main_process:
                save_split(building, split, ids, tensors)
    except BaseException:
        if accelerator.is_main_process:  # an error leaves `out` as it was and no .partial folder
            shutil.rmtree(building, ignore_errors=True)
        raise
    if accelerator.is_main_process:
        shapes = {key: list(tensor.shape[1:]) for key, tensor in tensors.items()}
        data_hashes = {split: info["sha256"] for split, info in manifest["splits"].items()}
        write_json(building / "meta.json", {**extractor.meta, "shapes": shapes, "data_sha256": data_hashes})
        shutil.rmtree(out, ignore_errors=True)
        building.rename(out)  # complete or absent: a killed run leaves only the .partial folder
        print(f"{name}: {', '.join(f'{n} {s}' for n, s in shapes.items())} -> {out}")


if __name__ == "__main__":
    exit_after(main())  # without the interpreter's teardown (hatememes.process)
