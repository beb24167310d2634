"""Stage `features@EXTRACTOR`: cache CLIP / grid / region features of every split for the trainers.

    python pipelines/features.py clip --memes data/memes --out data/features/clip
    accelerate launch pipelines/features.py grid --memes data/memes --out data/features/grid   # sharded

Writes `<out>/<split>.safetensors` (rows in the order of `<memes>/<split>.jsonl`, ids alongside) and
`<out>/meta.json` (model, tag, dims, preprocessing, box source, and the data hash of every split).
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
from hatememes.features.extract import extract_split
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
    except PretrainedLoadError as error:  # the weights a param names cannot be loaded: the message says what to do
        print(f"features: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        return report_write_error("features", args.out, error)
    return 0


def extract(name: str, config: FeaturesParams, memes: Path, out: Path) -> None:
    torch.manual_seed(0)
    accelerator = Accelerator()
    extractor = build_extractor(name, config)  # the weights first: one that cannot be loaded fails before any data
    extractor.model.to(accelerator.device)  # with the regions' detector, which is part of it
    manifest = read_json(memes / "manifest.json")
    building = out.with_name(f".{out.name}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(building, ignore_errors=True)
    for split in manifest["splits"]:
        ids, tensors = extract_split(extractor, memes, split, config.batch_size, config.num_workers, accelerator)
        if accelerator.is_main_process:
            save_split(building, split, ids, tensors)
    if accelerator.is_main_process:
        shapes = {key: list(tensor.shape[1:]) for key, tensor in tensors.items()}
        data_hashes = {split: info["sha256"] for split, info in manifest["splits"].items()}
        write_json(building / "meta.json", {**extractor.meta, "shapes": shapes, "data_sha256": data_hashes})
        shutil.rmtree(out, ignore_errors=True)
        building.rename(out)  # complete or absent: a killed run leaves only the .partial folder
        print(f"{name}: {', '.join(f'{n} {s}' for n, s in shapes.items())} -> {out}")


if __name__ == "__main__":
    exit_after(main())  # without the interpreter's teardown (hatememes.process)
