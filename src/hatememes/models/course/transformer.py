"""The course Transformer: a text-only classifier on a Transformer encoder written from scratch.

Vaswani et al. 2017 ("Attention is all you need"): scaled dot-product multi-head self-attention with
a key padding mask, sinusoidal or learned positional embeddings, and either the paper's post-norm
blocks or pre-norm blocks (Xiong et al. 2020). The attention and the block use the parameter layout
of `nn.MultiheadAttention` / `nn.TransformerEncoderLayer` (in_proj, out_proj, linear1/2, norm1/2), so
weights copy across for parity tests. The text is pooled at [CLS] (position 0) or by a masked mean.

    model = CourseTransformer.build(CourseTransformerConfig(), BuildContext(train_texts=texts))
    logits = model(model.collate(items))    # (B,)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hatememes.models.course.tokenizer import WordTokenizer


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), attention_mask (B, T) true on real tokens -> (B, T, D); padded keys get no weight."""
        b, t, d = x.shape
        qkv = x @ self.in_proj_weight.T + self.in_proj_bias  # (B, T, 3D)
        q, k, v = qkv.view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)  # (B, h, T, d_h)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.num_heads)  # (B, h, T, T)
        scores = scores.masked_fill(~attention_mask[:, None, None, :], float("-inf"))
        weights = self.dropout(scores.softmax(dim=-1))
        heads = (weights @ v).transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        return self.out_proj(heads)


class EncoderBlock(nn.Module):
    """Self-attention and a ReLU feed-forward, each in a residual branch; LayerNorm before or after."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float, norm: str):
        super().__init__()
        self.self_attn = MultiHeadSelfAttention(d_model, num_heads, dropout)
        self.linear1, self.linear2 = nn.Linear(d_model, ffn_dim), nn.Linear(ffn_dim, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout, self.pre_norm = nn.Dropout(dropout), norm == "pre"

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.dropout(self.self_attn(self.norm1(x), attention_mask))
            return x + self.dropout(self.feed_forward(self.norm2(x)))
        x = self.norm1(x + self.dropout(self.self_attn(x, attention_mask)))
        return self.norm2(x + self.dropout(self.feed_forward(x)))


def sinusoidal_positions(max_length: int, d_model: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)): (max_length, d_model)."""
    positions = torch.arange(max_length, dtype=torch.float32)[:, None]  # (P, 1)
    frequencies = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_length, d_model)
    table[:, 0::2] = torch.sin(positions * frequencies)
    table[:, 1::2] = torch.cos(positions * frequencies[: d_model // 2])
    return table


@dataclass(frozen=True)
class CourseTransformerConfig:
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    ffn_dim: int = 128
    dropout: float = 0.1
    positional: Literal["learned", "sinusoidal"] = "learned"
    norm: Literal["pre", "post"] = "pre"
    pooling: Literal["cls", "mean"] = "cls"
    max_length: int = 32
    min_freq: int = 1
    max_vocab: int = 20000


class CourseTransformer(nn.Module):
    """Torch classifier: word + position embeddings -> encoder blocks -> [CLS] or mean pooling -> one logit."""

    Config = CourseTransformerConfig
    inputs: tuple[str, ...] = ()

    def __init__(self, config: CourseTransformerConfig, tokenizer: WordTokenizer):
        super().__init__()
        self.config, self.tokenizer = config, tokenizer
        d = config.d_model
        self.embed = nn.Embedding(len(tokenizer), d, padding_idx=tokenizer.pad_id)
        if config.positional == "learned":
            self.positions = nn.Parameter(torch.randn(config.max_length, d) * 0.02)
        else:
            self.register_buffer("positions", sinusoidal_positions(config.max_length, d), persistent=False)
        self.blocks = nn.ModuleList(
            EncoderBlock(d, config.num_heads, config.ffn_dim, config.dropout, config.norm)
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(d) if config.norm == "pre" else nn.Identity()  # pre-norm leaves x unnormalised
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(d, 1)

    @classmethod
    def build(cls, config: CourseTransformerConfig, context) -> CourseTransformer:
        return cls(config, WordTokenizer.build(context.train_texts, config.min_freq, config.max_vocab))

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer([item["text"] for item in items], self.config.max_length)
        batch["labels"] = torch.tensor([float(item["label"]) for item in items])  # (B,)
        batch["ids"] = torch.tensor([item["id"] for item in items], dtype=torch.long)  # (B,)
        return batch

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, T, D), (B, T) -> (B, D)
        if self.config.pooling == "cls":
            return x[:, 0]
        return (x * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        input_ids, mask = batch["input_ids"], batch["attention_mask"].bool()  # (B, T) each
        x = self.dropout(self.embed(input_ids) + self.positions[: input_ids.shape[1]])
        for block in self.blocks:
            x = block(x, mask)  # (B, T, D)
        return self.head(self.pool(self.final_norm(x), mask)).squeeze(-1)  # logits (B,)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        self.tokenizer.save(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> CourseTransformer:
        directory = Path(directory)
        config = CourseTransformerConfig(**json.loads((directory / "config.json").read_text()))
        model = cls(config, WordTokenizer.load(directory))
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        return model
