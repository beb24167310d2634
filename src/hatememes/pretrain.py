"""The `pretrain` stage's library: the demo's tiny CLIP backbones, trained contrastively on the "web" corpus.

CLIP (Radford et al. 2021) as open_clip implements it. The architectures are JSON configs shipped in
`features/model_configs/`: `tiny-rn`, a ModifiedResNet image tower (the tower of OpenAI's RN50 CLIP, shrunk)
that serves both the `clip` features and, through its trunk, the `grid` and `regions` features; and
`tiny-vit`, a ViT tower. Both are trained with open_clip's `ClipLoss` on the corpus of
`hatememes.data.synthetic` and saved as safetensors that load through the real route:

    register_tiny_configs()
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-rn", pretrained="<out>/tiny-rn.safetensors")

Measured on the 2-core machine: in the same number of steps the ResNet learns the shapes (zero-shot ~0.97)
while the ViT, lacking a convolution's locality, learns the colours and not the shapes (~0.25), so the
default trains `tiny-rn` only. The full profile skips this stage and uses published weights (`enabled: false`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file
from torch import Tensor

from hatememes.augment import random_shift
from hatememes.data.memes import load_rgb
from hatememes.data.synthetic import COLORS, OBJECTS
from hatememes.progress import progress
from hatememes.threads import cpu_threads

CONFIG_DIR = Path(__file__).parent / "features" / "model_configs"
TINY_MODELS = ("tiny-vit", "tiny-rn")
OBJECT_PROMPTS = ("a photo of a {obj}", "a {obj}", "a picture of a {obj}")
COLOR_PROMPTS = ("a {color} {obj}",)  # averaged over every object: "something {color}"


@dataclass(frozen=True)
class PretrainParams:
    enabled: bool = True  # false in the full profile: published weights, nothing to pretrain
    models: tuple[str, ...] = ("tiny-rn",)  # tiny-vit can be added: it learns colours, not shapes, in this budget
    epochs: int = 12
    batch_size: int = 32  # steps count more than pairs a step here: 64 fell to probe 0.79 in a world (measured)
    lr: float = 3.0e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1
    shift: int = 2  # random translation in pixels (augmentation); 0 turns it off
    seed: int = 0
    probe_pairs: int = 2000  # corpus train pairs the linear probe is fitted on
    threads: int = 1  # torch CPU threads: 2 on the demo's 2 cores (1.4x faster alone, 10x slower beside other work)


@dataclass(frozen=True)
class CorpusSplit:
    pixel_values: Tensor  # (N, 3, S, S), preprocessed once
    texts: list[str]
    objects: list[int]
    colors: list[int]


def register_tiny_configs() -> list[str]:
    """Make the tiny configs known to open_clip (idempotent); returns their names."""
    if CONFIG_DIR not in open_clip.factory._MODEL_CONFIG_PATHS:
        open_clip.add_model_config(CONFIG_DIR)
    return sorted(path.stem for path in CONFIG_DIR.glob("*.json"))


def read_pairs(corpus_dir: Path) -> list[dict]:
    with (Path(corpus_dir) / "pairs.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def load_split(corpus_dir: Path, pairs: list[dict], split: str, preprocess) -> CorpusSplit:
    rows = [p for p in pairs if p["split"] == split]
    pixel_values = torch.stack([preprocess(load_rgb(Path(corpus_dir) / p["image"])) for p in rows])
    return CorpusSplit(pixel_values, [p["text"] for p in rows], [OBJECTS.index(p["object"]) for p in rows],
                       [list(COLORS).index(p["color"]) for p in rows])


class UsedTokenRows(torch.nn.Module):
    """A token embedding that trains only the rows of the tokens the corpus uses (U of the vocabulary's 49,408).

    The other rows never get a gradient, and embeddings have no weight decay (`make_optimizer`), so AdamW would
    leave them exactly as initialised while reading and writing all of them at every step: for the tiny CLIP
    that full-table update was most of the optimizer's work. `merged()` writes the trained rows back into the
    full table, the checkpoint's shape."""

    def __init__(self, embedding: torch.nn.Embedding, used: Tensor):
        super().__init__()
        self.full = embedding.weight.detach()  # a plain tensor: neither trained nor a parameter of the module
        lookup = torch.full((embedding.num_embeddings,), -1, dtype=torch.long)
        lookup[used] = torch.arange(len(used))
        self.register_buffer("lookup", lookup, persistent=False)
        self.used = used
        self.weight = torch.nn.Parameter(self.full[used].clone())  # (U, D); named token_embedding.weight

    def forward(self, ids: Tensor) -> Tensor:
        return torch.nn.functional.embedding(self.lookup[ids], self.weight)

    def merged(self) -> torch.nn.Embedding:
        weight = self.full.clone()
        weight[self.used] = self.weight.detach()
        return torch.nn.Embedding.from_pretrained(weight, freeze=False)


def cosine_lr(step: int, total: int, warmup: int, lr: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def make_optimizer(model: open_clip.CLIP, params: PretrainParams) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not on embeddings, norms, biases, the temperature)."""
    decays = {n: p.ndim >= 2 and "embedding" not in n for n, p in model.named_parameters()}
    groups = [{"params": [p for n, p in model.named_parameters() if decays[n] == decay],
               "weight_decay": params.weight_decay if decay else 0.0} for decay in (True, False)]
    return torch.optim.AdamW(groups, lr=params.lr, fused=True)


def clip_step(model: open_clip.CLIP, loss_fn: open_clip.ClipLoss, optimizer: torch.optim.Optimizer,
              pixel_values: Tensor, input_ids: Tensor) -> float:
    out = model(pixel_values, input_ids)  # image_features (B, D), text_features (B, D), logit_scale ()
    loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))  # as CLIP: the temperature stays above 1/100
    return loss.item()


def train_clip(model: open_clip.CLIP, tokenizer, train: CorpusSplit, params: PretrainParams,
               desc: str = "pretrain") -> list[float]:
    """Contrastive training with open_clip's ClipLoss, AdamW and a cosine schedule; returns the epoch losses."""
    generator = torch.Generator().manual_seed(params.seed)
    input_ids = tokenizer(train.texts)  # (N, L)
    model.token_embedding = UsedTokenRows(model.token_embedding, torch.unique(input_ids))
    optimizer, loss_fn = make_optimizer(model, params), open_clip.ClipLoss()
    batch_size = min(params.batch_size, len(train.texts))
    steps_per_epoch = len(train.texts) // batch_size
    total = steps_per_epoch * params.epochs
    warmup = max(1, round(total * params.warmup_fraction))
    losses = []
    model.train()
    with progress(total=total * batch_size, desc=desc, unit="pair", unit_scale=True) as bar:
        for epoch in range(params.epochs):
            order = torch.randperm(len(train.texts), generator=generator)
            epoch_losses = []
            for step in range(steps_per_epoch):
                index = order[step * batch_size:(step + 1) * batch_size]
                for group in optimizer.param_groups:
                    group["lr"] = cosine_lr(epoch * steps_per_epoch + step, total, warmup, params.lr)
                pixel_values = random_shift(train.pixel_values[index], params.shift, generator)  # (B, 3, S, S)
                pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)  # as the convolutions
                epoch_losses.append(clip_step(model, loss_fn, optimizer, pixel_values, input_ids[index]))
                bar.update(batch_size)
                bar.set_postfix(loss=f"{epoch_losses[-1]:.3f}")
            losses.append(float(np.mean(epoch_losses)))
    model.token_embedding = model.token_embedding.merged()
    model.eval()
    return losses


@torch.no_grad()
def encode_images(model: open_clip.CLIP, pixel_values: Tensor, batch_size: int = 256) -> Tensor:
    return torch.cat([model.encode_image(pixel_values[i:i + batch_size], normalize=True)
                      for i in range(0, len(pixel_values), batch_size)])  # (N, D)


@torch.no_grad()
def class_embeddings(model: open_clip.CLIP, tokenizer, prompts: list[list[str]]) -> Tensor:
    """One normalised text embedding per class: the mean over its prompts (prompt ensembling)."""
    rows = [model.encode_text(tokenizer(texts), normalize=True).mean(0) for texts in prompts]
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)  # (C, D)


def zero_shot_accuracy(image_features: Tensor, classes: Tensor, labels: list[int]) -> float:
    predictions = (image_features @ classes.T).argmax(-1)  # (N,)
    return float((predictions == torch.tensor(labels)).float().mean())


def probe_accuracy(train_features: Tensor, train_labels: list[int], test_features: Tensor,
                   test_labels: list[int]) -> float:
    from sklearn.linear_model import LogisticRegression  # 1.5 s: not paid by the stages that import this module

    probe = LogisticRegression(max_iter=2000, C=10.0)
    probe.fit(train_features.numpy(), train_labels)
    return float(probe.score(test_features.numpy(), test_labels))


def evaluate(model: open_clip.CLIP, tokenizer, train: CorpusSplit, heldout: CorpusSplit,
             probe_pairs: int) -> dict[str, float]:
    """Zero-shot object and colour accuracy, and a linear probe for the object, on the heldout pairs."""
    features = encode_images(model, heldout.pixel_values)
    objects = class_embeddings(model, tokenizer, [[p.format(obj=o) for p in OBJECT_PROMPTS] for o in OBJECTS])
    colors = class_embeddings(model, tokenizer, [[p.format(color=c, obj=o) for p in COLOR_PROMPTS for o in OBJECTS]
                                                 for c in COLORS])
    train_features = encode_images(model, train.pixel_values[:probe_pairs])
    return {
        "zero_shot_object_accuracy": zero_shot_accuracy(features, objects, heldout.objects),
        "zero_shot_color_accuracy": zero_shot_accuracy(features, colors, heldout.colors),
        "probe_object_accuracy": probe_accuracy(train_features, train.objects[:probe_pairs], features, heldout.objects),
    }


def save_checkpoint(model: open_clip.CLIP, path: Path) -> Path:
    """The state dict as safetensors: `create_model_and_transforms(name, pretrained=path)` loads it."""
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(path))
    return path


def pretrain_model(name: str, corpus_dir: Path, out_dir: Path, params: PretrainParams) -> dict:
    """Build `name` from its tiny config, train it on the corpus, save it, and measure it."""
    register_tiny_configs()
    torch.manual_seed(params.seed)
    model, _, preprocess = open_clip.create_model_and_transforms(name, output_dict=True)
    model = model.to(memory_format=torch.channels_last)  # oneDNN's convolutions: ~7% faster a step (measured)
    tokenizer = open_clip.get_tokenizer(name)
    pairs = read_pairs(corpus_dir)
    train, heldout = (load_split(corpus_dir, pairs, split, preprocess) for split in ("train", "heldout"))
    losses = train_clip(model, tokenizer, train, params, desc=name)
    save_checkpoint(model, Path(out_dir) / f"{name}.safetensors")
    metrics = evaluate(model, tokenizer, train, heldout, params.probe_pairs)
    return {**metrics, "epoch_losses": [round(x, 4) for x in losses],
            "train_pairs": len(train.texts), "heldout_pairs": len(heldout.texts)}


def pretrain(corpus_dir: Path, out_dir: Path, params: PretrainParams) -> dict:
    """Every model of `params.models`; writes `<out>/<name>.safetensors` and `<out>/metrics.json`, with no
    wall-clock time in either: the same inputs give the same bytes, and a rerun leaves downstream stages be."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not params.enabled:
        metrics = {"skipped": True, "reason": "pretrain.enabled is false (published weights are used)"}
    else:
        with cpu_threads(params.threads):
            metrics = {name: pretrain_model(name, corpus_dir, out_dir, params) for name in params.models}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics
