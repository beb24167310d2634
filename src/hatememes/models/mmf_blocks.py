"""The parts MMF builds the benchmark paper's baselines from (Kiela et al. 2020, Table 2: Image-Grid,
Image-Region, Text BERT, Concat BERT), shared by `image_only`, `text_bert` and `concat_bert`.

- `mlp_classifier`: MMF's `MLPClassifer` (`mmf/modules/layers.py`) as the hateful_memes configs set it
  (`projects/others/{unimodal,concat_bert}/.../*.yaml`: `num_layers: 2`, hidden_dim 768, dropout 0.5):
  `num_layers` x (Linear, BatchNorm1d, ReLU, Dropout), then a Linear to one logit (MMF: two classes and
  cross-entropy; one logit and BCE is the same model of P(hateful)).
- `image_vector`: the image as one vector, as MMF's encoders give it: a grid pooled to 1 x 1
  (`ResNet152ImageEncoder`, `num_output_features: 1`), or the mean of the region features
  (`UnimodalModal.forward` with `direct_features_input`).
- `TextEncoder`: a BERT checkpoint and its tokenizer; the pooled output is BERT's pooler on [CLS] (MMF's) or
  the mean of the final states (the demo's), with MMBT's loading (`hatememes.models.mmbt.load_bert`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from hatememes.models.mmbt import load_bert, pooler_argument
from hatememes.pretrained import loading, resolve

ImageFeatures = Literal["grid", "regions"]
IMAGE_TENSORS = {"grid": "grid", "regions": "regions"}  # the item key of each kind


def mlp_classifier(in_dim: int, hidden_dim: int, num_layers: int, dropout: float,
                   batch_norm: bool = True) -> nn.Sequential:
    """MMF's MLPClassifer with one output: `num_layers` x (Linear, BatchNorm1d, ReLU, Dropout), then Linear."""
    layers: list[nn.Module] = []
    for _ in range(num_layers):
        layers += [nn.Linear(in_dim, hidden_dim), *([nn.BatchNorm1d(hidden_dim)] if batch_norm else []), nn.ReLU(),
                   nn.Dropout(dropout)]
        in_dim = hidden_dim
    return nn.Sequential(*layers, nn.Linear(in_dim, 1))


def image_vector(items: list[dict], image_features: ImageFeatures) -> torch.Tensor:
    """(B, D): each item's grid averaged over its cells, or its regions averaged over the boxes."""
    stacked = torch.stack([item[IMAGE_TENSORS[image_features]] for item in items]).float()
    if image_features == "grid":
        return stacked.mean(dim=(2, 3))  # (B, C, S, S) -> (B, C): adaptive average pooling to 1 x 1
    return stacked.mean(dim=1)  # (B, K, D) -> (B, D)


def image_dim(context, image_features: ImageFeatures, key: str) -> int:
    """The image features' width from their meta.json; `key` names the param in the error."""
    if image_features not in context.feature_meta:
        raise ValueError(f"{key} = {image_features}, but there are no {image_features} features: add "
                         f"{image_features} to features.kinds")
    return int(context.feature_meta[image_features]["dim"])


def labels_and_ids(items: list[dict]) -> dict[str, torch.Tensor]:
    return {"labels": torch.tensor([float(item["label"]) for item in items]),  # (B,)
            "ids": torch.tensor([item["id"] for item in items], dtype=torch.long)}  # (B,)


class TextEncoder(nn.Module):
    """A BERT and its tokenizer: texts -> token batches -> one pooled vector (B, H) per text."""

    def __init__(self, config, bert: nn.Module, tokenizer):
        super().__init__()
        self.config, self.bert, self.tokenizer = config, bert, tokenizer
        bert.get_input_embeddings().requires_grad_(not config.freeze_word_embeddings)
        self.hidden_size = bert.config.hidden_size

    @classmethod
    def load(cls, config, model: str) -> TextEncoder:
        """`config.text_model` as published (or its first `num_hidden_layers`); `model` names the params section."""
        name = resolve(config.text_model)
        with loading(f"train.{model}.model.text_model", config.text_model):
            tokenizer = AutoTokenizer.from_pretrained(name)
            bert = load_bert(config, name, model)
        return cls(config, bert, tokenizer)

    def tokenize(self, items: list[dict]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer([item["text"] for item in items], padding=True, truncation=True,
                                max_length=self.config.max_text_length, return_tensors="pt")
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}  # (B, T)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        outputs = self.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        if self.config.pooling == "cls":
            return outputs.pooler_output  # (B, H): dense + tanh on the final [CLS] state, as MMF
        mask = batch["attention_mask"].unsqueeze(-1).to(outputs.last_hidden_state.dtype)  # (B, T, 1)
        return (outputs.last_hidden_state * mask).sum(1) / mask.sum(1)  # (B, H)


def save_with_text(model: nn.Module, directory: Path) -> None:
    """config.json (the model's config and its BERT's), model.safetensors and the tokenizer."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    saved = {"config": asdict(model.config), "bert": model.text.bert.config.to_dict()}
    (directory / "config.json").write_text(json.dumps(saved, indent=2), encoding="utf-8")
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, directory / "model.safetensors")
    model.text.tokenizer.save_pretrained(directory)


def load_with_text(directory: Path, config_class: type) -> tuple:
    """(the config, a TextEncoder of the saved architecture, the state dict): what `save_with_text` wrote,
    with no download."""
    directory = Path(directory)
    saved = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    config = config_class(**saved["config"])
    bert_config = dict(saved["bert"])
    bert = AutoModel.from_config(AutoConfig.for_model(bert_config.pop("model_type"), **bert_config),
                                 **pooler_argument(config))
    text = TextEncoder(config, bert, AutoTokenizer.from_pretrained(directory))
    return config, text, load_file(directory / "model.safetensors")
