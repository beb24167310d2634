"""The demo's tiny LLaVA base: built in code, then pretrained on the demo world's "web" corpus.

LLaVA (Liu et al. 2023) joins a pretrained CLIP vision tower to a pretrained Llama through a projector, and
first trains on image -> text pairs with the next-token loss on the text ("feature alignment"), then on
instructions. The demo has no pretrained towers, so `build_tiny_base` builds them from configs (CLIP vision
+ Llama, hidden 64, 2 layers; 32 px images in 16 patches), trains a byte-level BPE tokenizer on the corpus
descriptions and the prompts, and pretrains in two stages on the corpus's training pairs:

  0. the vision tower alone, classifying each image's object and colour from its mean patch feature
     (standing in for CLIP's own pretraining, which the demo cannot afford at this size);
  1. the projector and the language model, the tower frozen as in LLaVA, on two samples per pair with the
     loss on the answer only:

    USER: <image>\nThis is an image with: "<another pair's text>" written on it. What shape is in the image?
          ASSISTANT: star</s>
    USER: <image>\nDescribe the image. ASSISTANT: a small red star at the top left on grey</s>
    ... Which shape does the text name? ASSISTANT: circle</s>       (in turn with the description and
    ... Does the text name the shape in the image? Answer yes or no. ASSISTANT: No</s>   this one)

The questions share the meme prompt's frame, so the answer position learns to read both the image and the
quoted text; whether a meme is hateful is never taught here. `answer_probe` measures that it does: linear
probes of the last hidden state at the meme prompt's answer position, for the image's object and the quoted
text's. The demo's rule is a table over the two with no signal in either alone, so LoRA can only learn it
if both are already there. Measured on the demo corpus (held-out pairs) and the memes' dev_seen split (the
test splits are not read to choose settings), with a 6-epoch LoRA schedule:

    stage 0 / 1 epochs   probe image / text   llava_lora dev_seen by epoch
    48 / 16              0.957 / 0.788        0.68, 0.83, 0.86, 0.89, 0.91, 0.92
    48 / 10              0.925 / 0.997        0.85, 0.89, 0.91, 0.94, 0.95, 0.95

(the defaults are 48 / 10). In an earlier world (112-px memes, another rule) a base with 4 stage-1 epochs
never read the quoted text (probe 0.21) and LoRA stayed at chance; the vision tower learns the shapes late
(held-out object 0.80 after 24 stage-0 epochs, 0.98 after 48). The model and processor are saved with
`save_pretrained`, so the demo points `base:` at that folder exactly as the full profile points at
`llava-hf/llava-1.5-7b-hf`. Corpus layout (hatememes.data.synthetic): `pairs.jsonl` lines
{"image": "images/000001.png", "text": ..., "object": ..., "color": ..., "split": "train" | "heldout"}.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch import nn
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from hatememes.data.memes import load_rgb
from hatememes.models.llava import DEFAULT_PROMPT, answer_token_ids
from hatememes.pretrain import random_shift

DESCRIBE_PROMPT = "USER: <image>\nDescribe the image. ASSISTANT:"
FRAME = 'USER: <image>\nThis is an image with: "{text}" written on it. {question} ASSISTANT:'  # DEFAULT_PROMPT's
IMAGE_SHAPE = "What shape is in the image?"
TEXT_SHAPE = "Which shape does the text name?"
MATCH = "Does the text name the shape in the image? Answer yes or no."
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")
PROBE_PAIRS = 2000  # training pairs the answer-position probes are fitted on


@dataclass(frozen=True)
class TinyLlavaConfig:
    image_size: int = 32
    patch_size: int = 8  # (32 / 8)^2 = 16 image tokens
    hidden_size: int = 64  # vision and text
    num_layers: int = 2  # vision and text
    num_heads: int = 4
    vocab_size: int = 1024  # upper bound for the BPE tokenizer
    vision_epochs: int = 48  # stage 0: the vision tower (shapes are learnt late: held-out object 0.80 after 24)
    vision_lr: float = 5.0e-3
    shift: int = 0  # stage 0 augmentation: random translation by up to this many pixels (0: none)
    epochs: int = 10  # stage 1: projector + language model (after 4 the answer does not read the quoted text)
    batch_size: int = 64
    lr: float = 3.0e-3
    seed: int = 0


@dataclass(frozen=True)
class PretrainLlavaParams:
    """The `pretrain_llava` stage's section: build the tiny base (demo) or skip (full: a published base)."""

    enabled: bool = True
    tiny: TinyLlavaConfig = field(default_factory=TinyLlavaConfig)
    threads: int = 1  # torch CPU threads for this stage (as pretrain.threads)


def read_pairs(corpus_dir: Path, split: str = "train") -> list[dict]:
    with (Path(corpus_dir) / "pairs.jsonl").open(encoding="utf-8") as lines:
        pairs = [json.loads(line) for line in lines if line.strip()]
    return [pair for pair in pairs if pair["split"] == split]


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on the corpus descriptions and prompts: any text encodes, corpus words are one token."""
    questions = (IMAGE_SHAPE, TEXT_SHAPE, MATCH)
    prompts = [DESCRIBE_PROMPT, DEFAULT_PROMPT.format(text="")] + [FRAME.format(text="", question=q) for q in questions]
    answers = [f"{prompt} {answer}" for prompt in prompts for answer in ("Yes", "No")] * 10
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(list(texts) + answers, trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
    )


def build_processor(tokenizer: PreTrainedTokenizerFast, config: TinyLlavaConfig) -> LlavaProcessor:
    size = config.image_size
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.patch_size,
        vision_feature_select_strategy="default",  # drop CLS, as LLaVA-1.5
        num_additional_image_tokens=1,  # the CLS token the tower adds
    )


def build_model(tokenizer: PreTrainedTokenizerFast, config: TinyLlavaConfig) -> LlavaForConditionalGeneration:
    hidden, layers, heads = config.hidden_size, config.num_layers, config.num_heads
    vision = CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
    )
    text = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    llava = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(config.image_size // config.patch_size) ** 2,
        vision_feature_layer=-1,  # the last of 2 layers (LLaVA-1.5 takes the penultimate of 24)
    )
    return LlavaForConditionalGeneration(llava)


def instruction_samples(pairs: list[dict], seed: int) -> list[tuple[int, str, str]]:
    """(pair index, prompt, answer), two per pair. First the shape in its image, asked beside another
    pair's description; then in turn its description, the shape that other description names, or whether
    a description (its own, or another object's: half each) names the shape in its image."""
    generator = torch.Generator().manual_seed(seed)

    def draw(n: int) -> int:
        return int(torch.randint(n, (1,), generator=generator))

    samples = []
    for index, pair in enumerate(pairs):
        other = pairs[draw(len(pairs))]
        samples.append((index, FRAME.format(text=other["text"], question=IMAGE_SHAPE), pair["object"]))
        if index % 3 == 0:
            samples.append((index, DESCRIBE_PROMPT, pair["text"]))
        elif index % 3 == 1:
            samples.append((index, FRAME.format(text=other["text"], question=TEXT_SHAPE), other["object"]))
        elif other["object"] != pair["object"] and draw(2):
            samples.append((index, FRAME.format(text=other["text"], question=MATCH), "No"))
        else:
            samples.append((index, FRAME.format(text=pair["text"], question=MATCH), "Yes"))
    return samples


def encode_samples(tokenizer, samples: list[tuple[int, str, str]], image_tokens: int) -> list[tuple]:
    """(pair index, input_ids, labels) with the image token expanded as the processor does; loss on the answer."""
    encoded = []
    for index, prompt, answer in samples:
        prompt_ids = tokenizer(prompt.replace("<image>", "<image>" * image_tokens))["input_ids"]
        answer_ids = tokenizer(f" {answer}</s>", add_special_tokens=False)["input_ids"]
        encoded.append((index, prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
    return encoded


def concept_labels(pairs: list[dict]) -> torch.Tensor:
    """(N, 2): each pair's object and colour as class indices."""
    objects = sorted({pair["object"] for pair in pairs})
    colors = sorted({pair["color"] for pair in pairs})
    return torch.tensor([[objects.index(pair["object"]), colors.index(pair["color"])] for pair in pairs])


def pad_left(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([[value] * (width - len(row)) + row for row in rows])  # (B, T)


def pretrain_vision(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor, labels: torch.Tensor,
                    config: TinyLlavaConfig) -> list[float]:
    """Stage 0, standing in for CLIP's own pretraining: the vision tower's mean patch feature (at the layer
    LLaVA reads) classifies each image's object and colour, (N, 2) labels; returns the loss per epoch."""
    tower = model.model.vision_tower
    objects, colors = (int(count) + 1 for count in labels.max(0).values)
    head = nn.Linear(tower.config.hidden_size, objects + colors)
    parameters = list(tower.parameters()) + list(head.parameters())

    shifts = torch.Generator().manual_seed(config.seed + 1)

    def loss_fn(index: torch.Tensor) -> torch.Tensor:
        images = random_shift(pixel_values[index], config.shift, shifts)  # (B, 3, H, W)
        hidden = tower(images, output_hidden_states=True).hidden_states[model.config.vision_feature_layer]
        logits = head(hidden[:, 1:].mean(1))  # (B, objects + colours)
        object_loss = F.cross_entropy(logits[:, :objects], labels[index, 0])
        return object_loss + F.cross_entropy(logits[:, objects:], labels[index, 1])

    return fit(parameters, loss_fn, len(labels), config.vision_epochs, config.vision_lr, config)


def fit(parameters: list[nn.Parameter], loss_fn, n: int, epochs: int, lr: float,
        config: TinyLlavaConfig) -> list[float]:
    """Minimise loss_fn(batch index) over n examples: AdamW, one-cycle schedule, clipping; loss per epoch."""
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    steps = epochs * math.ceil(n / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    epoch_losses = []
    for _ in range(epochs):
        total = 0.0
        for index in torch.randperm(n, generator=generator).split(config.batch_size):
            loss = loss_fn(index)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            total += loss.item() * len(index)
        epoch_losses.append(total / n)
    return epoch_losses


def pretrain(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor, encoded: list[tuple],
             config: TinyLlavaConfig, pad_id: int) -> list[float]:
    """Stage 1 (alignment): next-token loss on the answers, training the projector and the language model
    (the vision tower frozen, as in LLaVA); returns the loss per epoch."""
    model.model.vision_tower.requires_grad_(False)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]

    def loss_fn(index: torch.Tensor) -> torch.Tensor:
        rows = [encoded[i] for i in index]
        input_ids = pad_left([row[1] for row in rows], pad_id)  # (B, T)
        labels = pad_left([row[2] for row in rows], -100)  # (B, T): left padding puts every answer at the end
        span = labels.shape[1] - int((labels != -100).any(0).nonzero()[0])  # the columns holding answer tokens
        logits = model(
            input_ids=input_ids,
            attention_mask=(input_ids != pad_id).long(),
            pixel_values=pixel_values[[row[0] for row in rows]],  # (B, 3, H, W)
            use_cache=False,  # one forward per batch: a KV cache would only hold memory
            logits_to_keep=span + 1,  # the vocabulary projection only where the loss reads it
        ).logits  # (B, span + 1, V): position t predicts token t + 1
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, -span:].flatten(), ignore_index=-100)

    return fit(parameters, loss_fn, len(encoded), config.epochs, config.lr, config)


def pixel_values_of(processor: LlavaProcessor, corpus_dir: Path, pairs: list[dict]) -> torch.Tensor:
    """(N, 3, H, W): the pairs' images through the processor's image half, once per stage."""
    if not pairs:
        return torch.empty(0)
    images = [load_rgb(Path(corpus_dir) / pair["image"]) for pair in pairs]
    return processor.image_processor(images, return_tensors="pt")["pixel_values"]


def prompt_batch(tokenizer, prompts: list[str], image_tokens: int) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask, the image token expanded as the processor expands it, padded left so
    that the last position is every prompt's answer position."""
    rows = [tokenizer(prompt.replace("<image>", "<image>" * image_tokens))["input_ids"] for prompt in prompts]
    input_ids = pad_left(rows, tokenizer.pad_token_id)  # (B, T)
    return {"input_ids": input_ids, "attention_mask": (input_ids != tokenizer.pad_token_id).long()}


@torch.no_grad()
def shape_accuracy(model: LlavaForConditionalGeneration, tokenizer, pixel_values: torch.Tensor,
                   pairs: list[dict]) -> float | None:
    """How often the most likely object word after the image-shape question is the pair's object."""
    if not pairs:
        return None
    objects = sorted({pair["object"] for pair in pairs})
    object_ids = [tokenizer(f" {name}", add_special_tokens=False)["input_ids"][0] for name in objects]
    model.eval()
    hits = 0
    prompt = FRAME.format(text="", question=IMAGE_SHAPE)
    for start in range(0, len(pairs), 256):
        chunk = pairs[start : start + 256]
        batch = prompt_batch(tokenizer, [prompt] * len(chunk), model.config.image_seq_length)
        logits = model(**batch, pixel_values=pixel_values[start : start + 256], use_cache=False,
                       logits_to_keep=1).logits[:, -1, object_ids]  # (B, objects)
        hits += sum(objects[k] == pair["object"] for k, pair in zip(logits.argmax(-1).tolist(), chunk, strict=True))
    return hits / len(pairs)


@torch.no_grad()
def answer_probe(model: LlavaForConditionalGeneration, tokenizer, train: tuple[torch.Tensor, list[dict]],
                 heldout: tuple[torch.Tensor, list[dict]], seed: int = 0) -> dict[str, float] | None:
    """What the meme prompt's answer position knows before any LoRA: linear probes of the language model's
    last hidden state there, with the meme prompt quoting another pair's description, fitted on `train`
    pairs and scored on `heldout` ones (each given as its pixel values and its pairs): accuracy for the
    object in the image and for the object the quoted text names. A rule over the two (what the LoRA stage
    must learn) needs both to be there."""
    if not train[1] or not heldout[1]:
        return None
    model.eval()
    generator = torch.Generator().manual_seed(seed)

    def states(pixel_values: torch.Tensor, pairs: list[dict]) -> tuple[np.ndarray, list[str], list[str]]:
        others = [pairs[k] for k in torch.randperm(len(pairs), generator=generator).tolist()]
        rows = []
        for start in range(0, len(pairs), 256):
            quoted = others[start : start + 256]
            batch = prompt_batch(tokenizer, [DEFAULT_PROMPT.format(text=other["text"]) for other in quoted],
                                 model.config.image_seq_length)
            hidden = model(**batch, pixel_values=pixel_values[start : start + 256], output_hidden_states=True,
                           use_cache=False, logits_to_keep=1)
            rows.append(hidden.hidden_states[-1][:, -1])  # (B, hidden)
        return (torch.cat(rows).float().numpy(), [pair["object"] for pair in pairs],
                [other["object"] for other in others])

    x_train, image_train, text_train = states(*train)
    x_heldout, image_heldout, text_heldout = states(*heldout)
    scale = StandardScaler().fit(x_train)
    x_train, x_heldout = scale.transform(x_train), scale.transform(x_heldout)

    def accuracy(train_labels: list[str], heldout_labels: list[str]) -> float | None:
        if len(set(train_labels)) < 2:  # a one-object corpus: nothing to tell apart
            return None
        return LogisticRegression(max_iter=2000).fit(x_train, train_labels).score(x_heldout, heldout_labels)

    return {"image_object": accuracy(image_train, image_heldout), "text_object": accuracy(text_train, text_heldout)}


def build_tiny_base(corpus_dir: str | Path, out_dir: str | Path, config: TinyLlavaConfig) -> Path:
    """Build, pretrain (feature alignment) and save the tiny LLaVA base; writes `pretrain_log.json` beside it.

    The folder holds no wall-clock time: it is a function of its inputs (checked bit-identical across runs),
    so a rerun that rebuilds the same bytes leaves every stage downstream up to date."""
    torch.manual_seed(config.seed)
    pairs = read_pairs(corpus_dir, "train")
    tokenizer = train_tokenizer([pair["text"] for pair in pairs], config.vocab_size)
    answer_token_ids(tokenizer)  # fail early if Yes/No are not single tokens
    processor = build_processor(tokenizer, config)
    model = build_model(tokenizer, config)
    pixel_values = pixel_values_of(processor, corpus_dir, pairs)  # (N, 3, H, W)
    samples = instruction_samples(pairs, config.seed)
    encoded = encode_samples(tokenizer, samples, model.config.image_seq_length)
    model.train()
    started = time.perf_counter()
    vision_losses = pretrain_vision(model, pixel_values, concept_labels(pairs), config)
    print(f"stage 0 (vision tower): {config.vision_epochs} epochs in {time.perf_counter() - started:.1f}s", flush=True)
    started = time.perf_counter()
    losses = pretrain(model, pixel_values, encoded, config, tokenizer.pad_token_id)
    print(f"stage 1 (projector + language model): {config.epochs} epochs in {time.perf_counter() - started:.1f}s",
          flush=True)  # printed, not logged: the folder holds no wall-clock time
    model.requires_grad_(True)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    heldout = read_pairs(corpus_dir, "heldout")
    heldout_pixels = pixel_values_of(processor, corpus_dir, heldout)
    log = {"config": asdict(config), "pairs": len(pairs),
           "heldout_shape_accuracy": shape_accuracy(model, tokenizer, heldout_pixels, heldout),
           "answer_probe": answer_probe(model, tokenizer, (pixel_values[:PROBE_PAIRS], pairs[:PROBE_PAIRS]),
                                        (heldout_pixels, heldout), config.seed),
           "vision_epoch_loss": vision_losses, "epoch_loss": losses}
    (out_dir / "pretrain_log.json").write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
    return out_dir
