"""RGCL's retrieval inference (Mei et al., ACL 2024): a trained `rgcl` encoder's embedding g of every training
meme in an index, and each meme scored by a similarity-weighted vote of its `top_k` nearest training memes,
as the authors' evaluation does (JingbiaoMei/RGCL: src/model/evaluate_rac.py `retrieve_evaluate_RAC_`,
src/utils/metrics.py `compute_metrics_retrieval` with `use_sim`):

    vote = sum_j w_j (2 y_j - 1) cos(g, g_j) / sum_j w_j,   P(hateful) = (1 + vote) / 2

with w_j = top_k, top_k - 1, ..., 1 by rank ("arithmetic", their experiments.sh) or 1 ("mean"). Their score is
sigmoid(vote): the same order, so the same AUROC; (1 + vote) / 2 keeps a unanimous, identical neighbourhood
at 0 or 1. Only training memes are in the index, and a training meme scored here never retrieves itself.
The saved folder holds the encoder (`encoder/`, an rgcl folder) and the index, so `predict.py` scores new memes
with it alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hatememes.models import BuildContext
from hatememes.models.rgcl import RGCL
from hatememes.retrieval import Backend, make_index


@dataclass(frozen=True)
class RGCLKnnConfig:
    encoder: str = "models/rgcl"  # a trained rgcl folder (its train@ stage's output)
    top_k: int = 20
    vote: Literal["arithmetic", "mean"] = "arithmetic"
    backend: Backend = "exact"
    batch_size: int = 1024  # memes embedded at once


class RGCLKnn:
    Config = RGCLKnnConfig
    inputs = ("clip",)

    def __init__(self, config: RGCLKnnConfig, encoder: RGCL):
        if config.top_k < 1 or config.vote not in ("arithmetic", "mean"):
            raise ValueError(f"rgcl_knn: top_k {config.top_k} (1 or more), vote {config.vote!r} (arithmetic or mean)")
        self.config, self.encoder = config, encoder.eval()
        self.inputs = encoder.inputs  # ("clip",), or ("lmm",) for lmm_rgcl's encoder
        self.embeddings = self.labels = self.ids = None

    @classmethod
    def build(cls, config: RGCLKnnConfig, context: BuildContext) -> RGCLKnn:
        folder = Path(config.encoder)
        if not (folder / "model.json").is_file():
            raise FileNotFoundError(f"model.encoder = {config.encoder}: no trained rgcl model there (model.json is "
                                    "missing: run its train stage, e.g. dvc repro train@rgcl)")
        return cls(config, RGCL.from_pretrained(folder))

    @torch.no_grad()
    def embed(self, items: list[dict]) -> torch.Tensor:
        """g of each item (N, H), in eval mode."""
        step = self.config.batch_size
        parts = [self.encoder.encode(self.encoder.collate(items[i:i + step]))[1] for i in range(0, len(items), step)]
        return torch.cat(parts) if parts else torch.empty(0, self.encoder.config.hidden_dim)

    def fit(self, train: list[dict], dev: list[dict]) -> None:
        """The index: every training meme (dev is not used: there is nothing to fit)."""
        rows = [train[i] for i in range(len(train))]
        if any(item["label"] not in (0, 1) for item in rows):
            raise ValueError("rgcl_knn: every training meme needs a label 0 or 1 to vote with")
        self.embeddings = self.embed(rows)
        self.labels = torch.tensor([item["label"] for item in rows], dtype=torch.float32)
        self.ids = torch.tensor([item["id"] for item in rows], dtype=torch.long)

    def predict_proba(self, items: list[dict]) -> np.ndarray:
        if self.embeddings is None:
            raise RuntimeError("rgcl_knn: fit it (or load a fitted one) before scoring")
        rows = [items[i] for i in range(len(items))]
        queries = self.embed(rows)
        ids = torch.tensor([item["id"] for item in rows], dtype=torch.long)
        index = make_index(self.config.backend, self.embeddings, self.ids)
        scores, found = index.search(queries, self.config.top_k, ids)
        return (1 + vote(scores, self.labels[found.clamp(min=0)], found >= 0, self.config.vote).numpy()) / 2

    def save_pretrained(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        self.encoder.save_pretrained(directory / "encoder")
        save_file({"embeddings": self.embeddings.contiguous(), "labels": self.labels, "ids": self.ids},
                  str(directory / "index.safetensors"))

    @classmethod
    def from_pretrained(cls, directory: Path) -> RGCLKnn:
        directory = Path(directory)
        model = cls(RGCLKnnConfig(**json.loads((directory / "config.json").read_text())),
                    RGCL.from_pretrained(directory / "encoder"))
        index = load_file(str(directory / "index.safetensors"))
        model.embeddings, model.labels, model.ids = index["embeddings"], index["labels"], index["ids"]
        return model


def vote(similarity: torch.Tensor, labels: torch.Tensor, found: torch.Tensor, kind: str) -> torch.Tensor:
    """(B,) the similarity-weighted vote in [-1, 1] of each row's neighbours, best first: similarity, labels
    and found (B, k). Rank weights k, ..., 1 ("arithmetic") or 1 ("mean"), over the neighbours found."""
    k = similarity.shape[1]
    weights = torch.arange(k, 0, -1, dtype=torch.float32) if kind == "arithmetic" else torch.ones(k)
    weights = weights * found  # (B, k)
    signed = (2 * labels - 1) * similarity.masked_fill(~found, 0.0)
    return (weights * signed).sum(1) / weights.sum(1).clamp(min=1e-12)
