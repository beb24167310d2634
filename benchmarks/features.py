"""Feature-extraction throughput: the whole stage path (decode + preprocess in DataLoader workers, then
the model) against the bare model forward on the same, already decoded batches.

    python benchmarks/features.py --memes data/memes                      # demo extractors, CPU
    python benchmarks/features.py --memes data/memes --full-clip          # open_clip ViT-L-14, random weights,
                                                                          # bf16 on GPU; prints MFU too
    python benchmarks/features.py --extractors clip --clip-model ViT-B-32 # any open_clip architecture, random
                                                                          # weights (a real-size model on CPU)
Prints images/s of both (medians of --repeats rounds that time them in turn, as a shared machine's speed
drifts by 5% from one minute to the next) and their ratio (1.0 = the input pipeline costs nothing). The
demo's tiny CLIP costs less per image than decoding the image does, so its ratio shows the decoder, not
the pipeline; a real-size architecture shows what the stage adds to the model.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from hatememes import params as P
from hatememes.data.memes import load_rgb, read_split
from hatememes.features import FeaturesParams, build_extractor
from hatememes.features.clip import ClipParams
from hatememes.features.extract import MemeInputs, run_shard

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def bare_batches(extractor, memes_dir: Path, memes, batch_size: int, device) -> list[dict[str, torch.Tensor]]:
    inputs = [extractor.preprocess(load_rgb(memes_dir / m.img), m.text) for m in memes]
    batches = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start:start + batch_size]
        batches.append({k: torch.stack([x[k] for x in chunk]).to(device) for k in chunk[0]})
    return batches


def bare_rate(extractor, batches, device) -> float:
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), autocast:
        extractor.encode(batches[0])
        synchronize(device)
        start, count = time.perf_counter(), 0
        for batch in batches:
            extractor.encode(batch)
            count += len(next(iter(batch.values())))
        synchronize(device)
    return count / (time.perf_counter() - start)


def stage_rate(extractor, memes_dir, memes, batch_size, num_workers, accelerator) -> float:
    dataset = MemeInputs(memes_dir, memes, extractor.preprocess)
    run_shard(extractor, MemeInputs(memes_dir, memes[:batch_size], extractor.preprocess), batch_size, 0,
              accelerator, desc="warm-up")
    synchronize(accelerator.device)
    start = time.perf_counter()
    run_shard(extractor, dataset, batch_size, num_workers, accelerator, desc="stage")
    synchronize(accelerator.device)
    return len(memes) / (time.perf_counter() - start)


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def vit_flops_per_image(extractor) -> float:
    """2 x parameters x tokens of the image tower plus the attention matmuls (a standard estimate)."""
    visual = extractor.model.visual
    params = sum(p.numel() for p in visual.parameters())
    tokens = (visual.image_size[0] // visual.patch_size[0]) ** 2 + 1
    width, layers = visual.transformer.width, len(visual.transformer.resblocks)
    return 2 * params * tokens + 4 * layers * tokens * tokens * width


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memes", type=Path, default=Path("data/memes"))
    parser.add_argument("--split", default="test_unseen")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="stage and bare timed in turn; medians")
    parser.add_argument("--extractors", nargs="+", default=["clip", "grid", "regions"])
    parser.add_argument("--full-clip", action="store_true", help="open_clip ViT-L-14 with random weights")
    parser.add_argument("--clip-model", help="the clip extractor as this open_clip architecture, random weights")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    config = P.section(P.from_arguments(args), "features", FeaturesParams)
    accelerator = Accelerator()
    device = accelerator.device
    memes = read_split(args.memes, args.split)[: args.images]
    print(f"{len(memes)} memes of {args.split}, batch {config.batch_size}, {config.num_workers} workers, "
          f"{torch.get_num_threads()} threads, {device}")
    print(f"{'extractor':10s} {'stage img/s':>12s} {'bare img/s':>11s} {'ratio':>6s} {'rounds':>9s}")
    rows = []
    for name in args.extractors:
        if name == "clip" and (args.full_clip or args.clip_model):
            from hatememes.features.clip import ClipExtractor

            extractor = ClipExtractor(ClipParams(model=args.clip_model or "ViT-L-14", pretrained=""))
        else:
            extractor = build_extractor(name, config)
        extractor.model.to(device)
        batches = bare_batches(extractor, args.memes, memes, config.batch_size, device)
        rates = [(stage_rate(extractor, args.memes, memes, config.batch_size, config.num_workers, accelerator),
                  bare_rate(extractor, batches, device)) for _ in range(args.repeats)]
        stage, bare = statistics.median(s for s, _ in rates), statistics.median(b for _, b in rates)
        ratios = [s / b for s, b in rates]
        line = f"{name:10s} {stage:12.1f} {bare:11.1f} {stage / bare:6.2f} {min(ratios):.2f}-{max(ratios):.2f}"
        if name == "clip" and device.type == "cuda" and hasattr(extractor.model.visual, "transformer"):  # a ViT
            peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in torch.cuda.get_device_name()), None)
            if peak:
                line += f"  MFU {vit_flops_per_image(extractor) * stage / peak:.1%} (image tower)"
        print(line)
        rows.append({"extractor": name, "stage": stage, "bare": bare, "ratio": stage / bare, "rounds": ratios})
    return rows


if __name__ == "__main__":
    main()
