"""Text BERT (Kiela et al. 2020, Table 2): the meme's text alone, BERT fine-tuned with MMF's MLP on top.

MMF's `unimodal_text` with a BERT encoder (`projects/others/unimodal/configs/hateful_memes/bert.yaml`): the
pooled [CLS] output -> `mlp_classifier` (2 layers of 768). The text cannot tell a hateful meme from its
benign confounder (the same text under another image), so on the benchmark it stays far from the
multimodal models, and on the demo's world at chance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from hatememes.models import BuildContext
from hatememes.models.mmf_blocks import TextEncoder, labels_and_ids, load_with_text, mlp_classifier, save_with_text


@dataclass(frozen=True)
class TextBertConfig:
    text_model: str = "bert-base-uncased"  # any BERT checkpoint: hub name, local folder or packaged name
    max_text_length: int = 128  # tokens, [CLS] and [SEP] included
    num_hidden_layers: int | None = None  # keep the checkpoint's first k layers; None: all (as published)
    pooling: Literal["cls", "mean"] = "cls"  # cls: BERT's pooler on [CLS], as MMF; mean: the mean final state
    freeze_word_embeddings: bool = False
    hidden_dim: int = 768  # MMF's MLP: hidden_dim 768, num_layers 2, dropout 0.5, batch norm
    num_layers: int = 2
    dropout: float = 0.5


class TextBert(nn.Module):
    Config = TextBertConfig
    inputs: tuple[str, ...] = ()  # the text only

    def __init__(self, config: TextBertConfig, text: TextEncoder):
        super().__init__()
        self.config, self.text = config, text
        self.classifier = mlp_classifier(text.hidden_size, config.hidden_dim, config.num_layers, config.dropout)

    @classmethod
    def build(cls, config: TextBertConfig, context: BuildContext) -> TextBert:
        return cls(config, TextEncoder.load(config, context.name or "text_bert"))

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return {**self.text.tokenize(items), **labels_and_ids(items)}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.text(batch)).squeeze(-1)  # (B,)

    def save_pretrained(self, directory: Path) -> None:
        save_with_text(self, directory)

    @classmethod
    def from_pretrained(cls, directory: Path) -> TextBert:
        config, text, state = load_with_text(directory, TextBertConfig)
        model = cls(config, text)
        model.load_state_dict(state)
        return model.eval()
