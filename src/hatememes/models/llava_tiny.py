"""The demo's tiny LLaVA base: built in code, then pretrained on the demo world's "web" corpus.

LLaVA (Liu et al. 2023) joins a pretrained CLIP vision tower to a pretrained Llama through a projector, and
first trains on image -> text pairs with the next-token loss on the text ("feature alignment"), then on
instructions. The demo has no pretrained towers, so `build_tiny_base` builds them from configs (CLIP vision
+ Llama, hidden 64, 2 layers; 32 px images in 16 patches), trains a byte-level BPE tokenizer on the corpus
descriptions and the prompts, and pretrains in two stages on the corpus's training pairs:

  0. the vision tower alone, classifying each image's object and colour from its mean patch feature
     (standing in for CLIP's own pretraining, which the demo cannot afford at this size);
  1. the projector and the language model, the tower frozen as in LLaVA (its features computed once), on
     one question per pair in the meme prompt's frame, with the loss on the answer:

    USER: <image>\nThis is an image with: "<a corpus text>" written on it. Does the text name the shape in
          the image? Answer yes or no. ASSISTANT: No</s>

     the quoted text naming the image's object (Yes) or another one (No), half each; and a linear head on the
     last hidden state at the answer position names the image's object and the quoted text's (the naming
     loss, weighted by `naming_loss`; the head is discarded).

Whether a meme is hateful is never taught here. The demo's rule is a table over (caption's object, image's
object) with no signal in either alone, so LoRA can only learn it if the meme prompt's answer position
already holds both: `answer_probe` measures that (linear probes of its last hidden state, fitted on
training pairs, scored on held-out ones), and `match_auroc` the held-out match question, which zero-shot
LLaVA's positive control asks of the memes. Without the naming loss the match answer stayed at chance
(held-out AUROC 0.50-0.52 after 4 epochs on one question per pair, 0.52 on the older 10-epoch base of four
question kinds, which read each object alone): at its answer position the quoted text's object was not
linearly readable (probe 0.51); with it, 2 epochs reach 0.96-0.97 (docs/llava.md). The vision tower learns
shapes late (held-out object 0.81 after 24 stage-0 epochs, 0.93 after 32, 0.96-0.98 after 48), and the
tower's accuracy bounds the rest: from a 24-epoch tower LoRA reached dev_seen 0.91. The model and processor
are saved with `save_pretrained`, so the demo points `base:` at that folder exactly as the full profile
points at `llava-hf/llava-1.5-7b-hf`. Corpus layout (hatememes.data.synthetic): `pairs.jsonl` lines
{"image": "images/000001.png", "text": ..., "object": ..., "color": ..., "split": "train" | "heldout"}.
"""


from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
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

from hatememes.augment import random_shift
from hatememes.data.memes import load_rgb
from hatememes.metrics import auroc
from hatememes.models.lmm import DEFAULT_QUESTION, answer_token_ids

FRAME = 'USER: <image>\nThis is an image with: "{text}" written on it. {question} ASSISTANT:'
# the meme prompt as LLaVA-1.5's chat template renders DEFAULT_QUESTION (tests/test_llava.py checks it)
MEME_PROMPT = 'USER: <image>\n' + DEFAULT_QUESTION + ' ASSISTANT:'
# llava-hf/llava-1.5-7b-hf's chat_template.json (as transformers' tests/models/llava/test_processing_llava.py
# holds it): "USER: <image>\n{text} ASSISTANT:", the answer after a space
LLAVA_15_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
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
    vision_epochs: int = 32  # stage 0: the vision tower (shapes are learnt late: held-out object 0.81 after 24)
    vision_lr: float = 1.0e-2
    shift: int = 1  # stage 0 augmentation: random translation by up to this many pixels (0: none)
    epochs: int = 2  # stage 1: projector + language model on the match question
    naming_loss: float = 1.0  # stage 1: weight of the loss that the answer position names both objects (0: off)
    batch_size: int = 64
    lr: float = 3.0e-3
    seed: int = 0


@dataclass(frozen=True)
class PretrainLlavaParams:
    """The `pretrain_llava` params section (the `pretrain` stage's second process): build the tiny base (demo)
    or skip (full: a published base)."""

    enabled: bool = True
    tiny: TinyLlavaConfig = field(default_factory=TinyLlavaConfig)
    threads: int = 1  # torch CPU threads for this stage (as pretrain.threads)


def read_pairs(corpus_dir: Path, split: str = "train") -> list[dict]:
    with (Path(corpus_dir) / "pairs.jsonl").open(encoding="utf-8") as lines:
        pairs = [json.loads(line) for line in lines if line.strip()]
    return [pair for pair in pairs if pair["split"] == split]


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on the corpus descriptions and prompts: any text encodes, corpus words are one token."""
    prompts = [MEME_PROMPT.format(text=""), FRAME.format(text="", question=MATCH)]
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
        chat_template=LLAVA_15_CHAT_TEMPLATE,  # the meme prompt is written as LLaVA-1.5's is (hatememes.models.lmm)
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


class Sample(NamedTuple):
    pair: int  # the pair whose image the sample shows
    quoted: int  # the pair whose text it quotes
    prompt: str
    answer: str


def instruction_samples(pairs: list[dict], seed: int) -> list[Sample]:
    """One per pair: whether a quoted text of the corpus names the shape in the pair's image, half Yes (a text
    naming the image's object), half No (one naming another object), so that only the two objects tell the
    answers apart (not a colour or a place that both mention)."""
    generator = torch.Generator().manual_seed(seed)

    def draw(candidates: list[int]) -> int:
        return candidates[int(torch.randint(len(candidates), (1,), generator=generator))]

    names = {pair["object"] for pair in pairs}
    naming = {name: [k for k, pair in enumerate(pairs) if pair["object"] == name] for name in names}
    naming_other = {name: [k for k, pair in enumerate(pairs) if pair["object"] != name] for name in names}
    samples = []
    for index, pair in enumerate(pairs):
        match = not naming_other[pair["object"]] or bool(draw([0, 1]))  # a one-object corpus: always Yes
        quoted = draw(naming[pair["object"]] if match else naming_other[pair["object"]])
        prompt = FRAME.format(text=pairs[quoted]["text"], question=MATCH)
        samples.append(Sample(index, quoted, prompt, "Yes" if match else "No"))
    return samples


def encode_samples(tokenizer, samples: list[Sample], image_tokens: int) -> list[tuple]:
    """(sample, input_ids, labels) with the image token expanded as the processor does; loss on the answer."""
    prompts = tokenizer([sample.prompt.replace("<image>", "<image>" * image_tokens) for sample in samples])
    answers = tokenizer([f" {sample.answer}</s>" for sample in samples], add_special_tokens=False)
    return [(sample, prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids)
            for sample, prompt_ids, answer_ids in zip(samples, prompts["input_ids"], answers["input_ids"], strict=True)]


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
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01, fused=True)  # one kernel: 8% a step
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


def tower_features(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> torch.Tensor:
    """(N, P, hidden): the vision tower's patch features at the layer LLaVA reads, CLS dropped, as
    `get_image_features` selects them before the projector."""
    layer = model.config.vision_feature_layer
    with torch.no_grad():
        rows = [model.model.vision_tower(chunk, output_hidden_states=True).hidden_states[layer][:, 1:]
                for chunk in pixel_values.split(256)]  # (b, P, hidden) each
    return torch.cat(rows) if rows else torch.empty(0)


def forward_from_features(model: LlavaForConditionalGeneration, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor, image_features: torch.Tensor, logits_to_keep: int):
    """LLaVA's forward from the tower's features (`tower_features`) on: the projector, its output in place of
    the image tokens, the language model. The outputs of `model(input_ids, pixel_values)`, hidden states too."""
    projected = model.model.multi_modal_projector(image_features)  # (B, P, hidden)
    inputs_embeds = model.get_input_embeddings()(input_ids)  # (B, T, hidden)
    image_mask = (input_ids == model.config.image_token_index).unsqueeze(-1).expand_as(inputs_embeds)
    inputs_embeds = inputs_embeds.masked_scatter(image_mask, projected.to(inputs_embeds.dtype))
    return model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False,
                 logits_to_keep=logits_to_keep, output_hidden_states=True)


def pretrain(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor, encoded: list[tuple],
             objects: torch.Tensor, config: TinyLlavaConfig, pad_id: int) -> list[float]:
    """Stage 1 (alignment): next-token loss on the answers, training the projector and the language model
    (the vision tower frozen, as in LLaVA, so its features are computed once). Plus, weighted by
    `config.naming_loss`, a linear head on the last hidden state at the answer position names the image's
    object and the quoted text's (`objects`: (N,) each pair's object): the position the meme prompt's answer
    reads then holds both, which the match question and LoRA's rule need. Returns the loss per epoch."""
    model.model.vision_tower.requires_grad_(False)
    head = nn.Linear(model.config.text_config.hidden_size, 2 * (int(objects.max()) + 1))
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad] + list(head.parameters())
    image_features = tower_features(model, pixel_values)  # (N, P, hidden)

    def loss_fn(index: torch.Tensor) -> torch.Tensor:
        rows = [encoded[i] for i in index]
        input_ids = pad_left([row[1] for row in rows], pad_id)  # (B, T)
        labels = pad_left([row[2] for row in rows], -100)  # (B, T): left padding puts every answer at the end
        span = labels.shape[1] - int((labels != -100).any(0).nonzero()[0])  # the columns holding answer tokens
        shown = torch.tensor([row[0].pair for row in rows])  # (B,)
        quoted = torch.tensor([row[0].quoted for row in rows])  # (B,)
        outputs = forward_from_features(
            model, input_ids, (input_ids != pad_id).long(), image_features[shown],
            logits_to_keep=span + 1,  # the vocabulary projection only where the loss reads it
        )
        logits = outputs.logits[:, :-1]  # (B, span, V): position t predicts token t + 1
        answer_loss = F.cross_entropy(logits.flatten(0, 1), labels[:, -span:].flatten(), ignore_index=-100)
        answer_position = input_ids.shape[1] - 1 - (labels != -100).sum(1)  # (B,): the prompt's last token
        names = head(outputs.hidden_states[-1][torch.arange(len(rows)), answer_position])  # (B, 2 * objects)
        image_name, text_name = names.chunk(2, dim=-1)  # (B, objects) each
        naming_loss = F.cross_entropy(image_name, objects[shown]) + F.cross_entropy(text_name, objects[quoted])
        return answer_loss + config.naming_loss * naming_loss

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
def match_auroc(model: LlavaForConditionalGeneration, processor: LlavaProcessor, pixel_values: torch.Tensor,
                pairs: list[dict], seed: int = 0) -> float | None:
    """AUROC of P(Yes) to the match question on `pairs` (held out), quoting texts drawn as in training."""
    samples = instruction_samples(pairs, seed)
    labels = np.array([sample.answer == "Yes" for sample in samples], dtype=int)
    if labels.min() == labels.max():  # one answer only (a one-object corpus): nothing to rank
        return None
    tokenizer, (yes, no) = processor.tokenizer, answer_token_ids(processor)
    model.eval()
    scores = []
    for start in range(0, len(samples), 256):
        chunk = samples[start : start + 256]
        batch = prompt_batch(tokenizer, [sample.prompt for sample in chunk], model.config.image_seq_length)
        logits = model(**batch, pixel_values=pixel_values[[sample.pair for sample in chunk]], use_cache=False,
                       logits_to_keep=1).logits[:, -1]  # (B, V)
        scores.append((logits[:, yes] - logits[:, no]).numpy())
    return auroc(labels, np.concatenate(scores))


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
            batch = prompt_batch(tokenizer, [MEME_PROMPT.format(text=other["text"]) for other in quoted],
                                 model.config.image_seq_length)
            hidden = model(**batch, pixel_values=pixel_values[start : start + 256], output_hidden_states=True,
                           use_cache=False, logits_to_keep=1)
            rows.append(hidden.hidden_states[-1][:, -1])  # (B, hidden)
        return torch.cat(rows), [pair["object"] for pair in pairs], [other["object"] for other in others]

    x_train, image_train, text_train = states(*train)
    x_heldout, image_heldout, text_heldout = states(*heldout)
    return {"image_object": probe_accuracy(x_train, image_train, x_heldout, image_heldout),
            "text_object": probe_accuracy(x_train, text_train, x_heldout, text_heldout)}


def probe_accuracy(x_train: torch.Tensor, train_labels: list[str], x_heldout: torch.Tensor,
                   heldout_labels: list[str]) -> float | None:
    """Held-out accuracy of a linear probe: scikit-learn's default LogisticRegression (multinomial, the
    cross-entropy summed over rows plus |W|^2 / 2, on standardised features) fitted by L-BFGS in float64
    here, as importing scikit-learn would cost this stage a second."""
    classes = sorted(set(train_labels))
    if len(classes) < 2:  # a one-object corpus: nothing to tell apart
        return None
    x_train, x_heldout = x_train.double(), x_heldout.double()
    mean, std = x_train.mean(0), x_train.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    x_train, x_heldout = (x_train - mean) / std, (x_heldout - mean) / std  # (N, hidden) each
    targets = torch.tensor([classes.index(label) for label in train_labels])  # (N,)
    weight = torch.zeros(x_train.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=1000, tolerance_grad=1e-9, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x_train @ weight + bias, targets, reduction="sum") + weight.square().sum() / 2
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    predicted = (x_heldout @ weight + bias).argmax(1).tolist()  # (N_heldout,)
    return sum(classes[k] == label for k, label in zip(predicted, heldout_labels, strict=True)) / len(heldout_labels)


def build_tiny_base(corpus_dir: str | Path, out_dir: str | Path, config: TinyLlavaConfig) -> Path:
    """Build, pretrain (feature alignment) and save the tiny LLaVA base; writes `pretrain_log.json` beside it.

    The folder holds no wall-clock time: it is a function of its inputs (checked bit-identical across runs),
    so a rerun that rebuilds the same bytes leaves every stage downstream up to date."""
    torch.manual_seed(config.seed)
    pairs = read_pairs(corpus_dir, "train")
    tokenizer = train_tokenizer([pair["text"] for pair in pairs], config.vocab_size)
    processor = build_processor(tokenizer, config)
    answer_token_ids(processor)  # fail early if Yes/No are not single tokens
    model = build_model(tokenizer, config)
    pixel_values = pixel_values_of(processor, corpus_dir, pairs)  # (N, 3, H, W)
    samples = instruction_samples(pairs, config.seed)
    encoded = encode_samples(tokenizer, samples, model.config.image_seq_length)
    model.train()
    started = time.perf_counter()
    labels = concept_labels(pairs)  # (N, 2): object, colour
    vision_losses = pretrain_vision(model, pixel_values, labels, config)
    print(f"stage 0 (vision tower): {config.vision_epochs} epochs in {time.perf_counter() - started:.1f}s", flush=True)
    started = time.perf_counter()
    losses = pretrain(model, pixel_values, encoded, labels[:, 0], config, tokenizer.pad_token_id)
    print(f"stage 1 (projector + language model): {config.epochs} epochs in {time.perf_counter() - started:.1f}s",
          flush=True)  # printed, not logged: the folder holds no wall-clock time
    model.requires_grad_(True)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    heldout = read_pairs(corpus_dir, "heldout")
    heldout_pixels = pixel_values_of(processor, corpus_dir, heldout)
    log = {"config": asdict(config), "pairs": len(pairs),
           "heldout_match_auroc": match_auroc(model, processor, heldout_pixels, heldout, config.seed),
           "answer_probe": answer_probe(model, tokenizer, (pixel_values[:PROBE_PAIRS], pairs[:PROBE_PAIRS]),
                                        (heldout_pixels, heldout), config.seed),
           "vision_epoch_loss": vision_losses, "epoch_loss": losses}
    (out_dir / "pretrain_log.json").write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
    return out_dir
