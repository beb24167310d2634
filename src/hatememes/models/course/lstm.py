"""The course LSTM: a text-only classifier with the LSTM written from its gates, and attention pooling.

LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000) in the gate order and
parameterisation of `torch.nn.LSTM` (i, f, g, o; W_ih, W_hh, b_ih, b_hh), so its weights can be copied
from one and the outputs compared. Padded batches run step by step with a mask: past its length a
sequence keeps its state and outputs zeros (what pack_padded_sequence gives). The states are pooled
with additive attention over the valid time steps (Yang et al. 2016, hierarchical attention networks).

    model = CourseLSTM.build(CourseLSTMConfig(), BuildContext(train_texts=texts))
    batch = model.collate(items)            # input_ids, attention_mask, labels
    logits = model(batch)                   # (B,)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hatememes.models.course.tokenizer import WordTokenizer


class LSTMCell(nn.Module):
    """One step: gates = W_ih x + b_ih + W_hh h + b_hh; c' = f*c + i*g; h' = o*tanh(c')."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)  # nn.LSTM's default init
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state  # (B, H) each
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of (B, T, D) within its length; padding positions stay where they are."""
    steps = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    index = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)  # (B, T)
    return x.gather(1, index[..., None].expand_as(x))


class LSTM(nn.Module):
    """Multi-layer, optionally bidirectional LSTM over a padded batch; cells[layer * directions + d]."""

    def __init__(self, input_size: int, hidden_size: int, num_layers=1, bidirectional=False, dropout=0.0):
        super().__init__()
        self.directions = 2 if bidirectional else 1
        sizes = [input_size] + [hidden_size * self.directions] * (num_layers - 1)
        self.cells = nn.ModuleList(LSTMCell(size, hidden_size) for size in sizes for _ in range(self.directions))
        self.dropout = nn.Dropout(dropout)

    def run(self, cell: LSTMCell, x: torch.Tensor, mask: torch.Tensor):
        """One direction of one layer: x (B, T, I), mask (B, T) -> outputs (B, T, H), final (h, c)."""
        h = x.new_zeros(x.shape[0], cell.weight_hh.shape[1])  # (B, H)
        c, outputs = h, []
        for t in range(x.shape[1]):
            h_new, c_new = cell(x[:, t], (h, c))
            valid = mask[:, t, None]  # (B, 1)
            h, c = torch.where(valid, h_new, h), torch.where(valid, c_new, c)
            outputs.append(h_new * valid)
        return torch.stack(outputs, dim=1), (h, c)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        """x (B, T, I), lengths (B,) -> outputs (B, T, directions*H), (h_n, c_n) each (layers*directions, B, H)."""
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]  # (B, T)
        finals_h, finals_c = [], []
        for layer in range(len(self.cells) // self.directions):
            if layer > 0:
                x = self.dropout(x)  # between layers, as nn.LSTM
            outputs = []
            for direction in range(self.directions):
                cell = self.cells[layer * self.directions + direction]
                inputs = x if direction == 0 else reverse_padded(x, lengths)
                out, (h, c) = self.run(cell, inputs, mask)
                outputs.append(out if direction == 0 else reverse_padded(out, lengths))
                finals_h.append(h)
                finals_c.append(c)
            x = torch.cat(outputs, dim=-1)  # (B, T, directions*H)
        return x, (torch.stack(finals_h), torch.stack(finals_c))


class AttentionPooling(nn.Module):
    """weights_t = softmax_t(v . tanh(W s_t + b)) over valid steps; pooled = sum_t weights_t s_t."""

    def __init__(self, dim: int, attention_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, attention_dim)
        self.context = nn.Linear(attention_dim, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.context(torch.tanh(self.proj(states))).squeeze(-1)  # (B, T)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)  # (B, T)
        return (weights[..., None] * states).sum(dim=1), weights  # (B, D), (B, T)


@dataclass(frozen=True)
class CourseLSTMConfig:
    embedding_dim: int = 64
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = True
    attention_dim: int = 64
    dropout: float = 0.1
    max_length: int = 32
    min_freq: int = 1
    max_vocab: int = 20000


class CourseLSTM(nn.Module):
    """Torch classifier: word embeddings -> LSTM -> attention pooling -> one logit."""

    Config = CourseLSTMConfig
    inputs: tuple[str, ...] = ()

    def __init__(self, config: CourseLSTMConfig, tokenizer: WordTokenizer):
        super().__init__()
        self.config, self.tokenizer = config, tokenizer
        self.embed = nn.Embedding(len(tokenizer), config.embedding_dim, padding_idx=tokenizer.pad_id)
        self.lstm = LSTM(
            config.embedding_dim, config.hidden_size, config.num_layers, config.bidirectional, config.dropout
        )
        states_dim = config.hidden_size * self.lstm.directions
        self.pool = AttentionPooling(states_dim, config.attention_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(states_dim, 1)

    @classmethod
    def build(cls, config: CourseLSTMConfig, context) -> CourseLSTM:
        return cls(config, WordTokenizer.build(context.train_texts, config.min_freq, config.max_vocab))

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer([item["text"] for item in items], self.config.max_length)
        batch["labels"] = torch.tensor([float(item["label"]) for item in items])  # (B,)
        batch["ids"] = torch.tensor([item["id"] for item in items], dtype=torch.long)  # (B,)
        return batch

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"].bool()  # (B, T)
        states, _ = self.lstm(self.dropout(self.embed(batch["input_ids"])), mask.sum(dim=1))  # (B, T, D)
        pooled, _ = self.pool(states, mask)  # (B, D)
        return self.head(self.dropout(pooled)).squeeze(-1)  # logits (B,)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        self.tokenizer.save(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> CourseLSTM:
        directory = Path(directory)
        model = cls(
            CourseLSTMConfig(**json.loads((directory / "config.json").read_text())), WordTokenizer.load(directory)
        )
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        return model
