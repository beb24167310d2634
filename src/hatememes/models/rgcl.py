"""RGCL (Mei et al., ACL 2024, "Improving Hateful Meme Detection through Retrieval-Guided Contrastive
Learning"), on cached CLIP outputs, as the authors' code has it (JingbiaoMei/RGCL: src/model/classifier.py
`classifier_hateClipper`, src/model/loss.py `compute_loss`, src/utils/retrieval.py
`dense_retrieve_hard_negatives_pseudo_positive`):

    image, text (B, D_image), (B, D_text)  frozen CLIP outputs (`embeddings`, as clip_fusion)
      -> per modality Linear to P, Dropout(p_map) (+ ReLU, Linear, Dropout per further mapping layer,
         as clip_fusion's); L2-normalised; fused ("align": product, "cross": outer)
      -> Dropout(p_fusion), then num_layers x (Linear to H, ReLU, Dropout(p_hidden))
      -> Linear -> logit (B,)
    g = the output of the last hidden Linear (before its ReLU): the embedding retrieval reads (in training,
        as theirs, the logits come from a second pass through the hidden layers, with fresh dropout masks)

Training adds a retrieval-guided term to the classifier's BCE: loss = (1 - w) BCE + w L_rgcl, w =
`contrastive_weight` (the authors' `1 - ce_weight`; 0 is plain fusion, the report's ablation). The index holds
g of every training meme (eval mode, no gradient), rebuilt every `refresh_every` training batches as the
encoder moves (the authors rebuild it at each epoch's start: one epoch of batches). For each anchor of a batch
it returns, from the `search_multiple` x max(hard_negatives, pseudo_positives) nearest training memes (cosine,
never the anchor itself), the nearest `pseudo_positives` with the anchor's label (pseudo-gold positives) and the
nearest `hard_negatives` with the other label; the other-label memes of the batch are in-batch negatives.
`contrastive_loss` is the authors' "triplet" (their experiments.sh):

    L = mean_i relu(mean_j cos(g_i, g_j) + sum_h cos(g_i, n_h) - mean_p cos(g_i, p_p) + margin)

(j over in-batch negatives, h over hard negatives, p over pseudo-gold positives) or their "contrastive":
-log(e_pos / (e_hard + e_pos + e_batch)) with e_pos = mean_p exp cos(g_i, p_p), e_hard the mean of exp cos over
the hard negatives found and e_batch the sum over the in-batch negatives. An anchor with no hard negative in
its window has none (masked, as theirs); one with no positive gets cos 0 (their zero vector). Ours differs
from their code where the paper describes retrieval otherwise: an anchor never retrieves itself (their index
holds the anchor, so its own eval-mode embedding is usually its pseudo-gold positive), and with more hard
negatives than positives all of them are taken (their loop stops once it holds one of each). The index lives in
buffers, so a checkpoint holds it and a resumed run continues with the same one; `save_pretrained` leaves it
out (rgcl_knn builds its own from the trained encoder).

`features: lmm` is LMM-RGCL's second stage (Mei et al. 2025; JingbiaoMei/RGCL, RA-HMD/Stage2): the input is a
fine-tuned LMM's last-token hidden state (`hatememes.features.lmm`), which has fused image and text already, so
it goes straight to the hidden layers (no maps, no fusion). `metric: ip` is that stage's similarity: the inner
product / H in the loss, and retrieval by inner product (no normalisation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hatememes.models import BuildContext
from hatememes.models.clip_fusion import (
    clip_batch,
    clip_input_dims,
    fuse,
    hidden_layers,
    load_model_files,
    mapping,
    save_model,
)
from hatememes.retrieval import Backend, Index, make_index

INDEX_BUFFERS = ("index_embeddings", "index_labels", "index_ids", "batches_seen")


@dataclass(frozen=True)
class RGCLConfig:
    projection_dim: int = 1024  # the authors' map_dim
    num_mapping_layers: int = 1  # per modality, as clip_fusion's (the authors': 1)
    fusion: Literal["align", "cross"] = "align"
    num_layers: int = 3  # hidden layers after the fusion (the authors' num_layers); the last one's output is g
    hidden_dim: int = 1024  # the authors' proj_dim
    drop_probs: tuple[float, float, float] = (0.2, 0.4, 0.1)  # map, fusion, hidden (the authors' order)
    embeddings: Literal["projected", "pooled"] = "projected"  # which CLIP outputs of the clip features
    # "clip": an image and a text embedding, fused; "lmm": one fine-tuned LMM's last-token hidden state (LMM-RGCL's
    # second stage, hatememes.features.lmm), which goes straight to the hidden layers (no maps, no fusion)
    features: Literal["clip", "lmm"] = "clip"
    metric: Literal["cos", "ip"] = "cos"  # the loss's similarity: cosine, or inner product / hidden_dim (theirs)
    contrastive_weight: float = 0.5  # w in (1 - w) BCE + w L_rgcl: the authors' 1 - ce_weight; 0: plain fusion
    contrastive_loss: Literal["triplet", "contrastive"] = "triplet"
    margin: float = 0.1  # the triplet's (the authors' triplet_margin)
    hard_negatives: int = 1
    pseudo_positives: int = 1
    search_multiple: int = 12  # neighbours searched: this x max(hard_negatives, pseudo_positives)
    refresh_every: int = 133  # training batches between index rebuilds (their train set: 8500 / 64 = 1 epoch)
    backend: Backend = "exact"  # "faiss": faiss-cpu's flat index (hatememes.retrieval)
    image_dim: int = 0  # filled from the features' meta.json at build time (features lmm: its hidden size)
    text_dim: int = 0


class RGCL(nn.Module):
    Config = RGCLConfig
    inputs = ("clip",)  # ("lmm",) with features: lmm (set per instance)

    def __init__(self, config: RGCLConfig):
        super().__init__()
        counts = (config.num_layers, config.num_mapping_layers, config.pseudo_positives, config.refresh_every)
        if min(counts) < 1 or min(config.hard_negatives, config.search_multiple) < 0 \
                or not 0 <= config.contrastive_weight <= 1:
            raise ValueError(f"rgcl: num_layers {config.num_layers}, num_mapping_layers {config.num_mapping_layers}, "
                             f"pseudo_positives {config.pseudo_positives} and refresh_every {config.refresh_every} "
                             f"must be >= 1, hard_negatives and search_multiple "
                             f">= 0, contrastive_weight in [0, 1] (got {config.contrastive_weight})")
        self.config, self.inputs = config, (config.features,)
        p_map, p_fusion, p_hidden = config.drop_probs
        if config.features == "clip":
            self.image_projection = mapping(config.image_dim, config.projection_dim, config.num_mapping_layers, p_map)
            self.text_projection = mapping(config.text_dim, config.projection_dim, config.num_mapping_layers, p_map)
            width = config.projection_dim * (config.projection_dim if config.fusion == "cross" else 1)
        else:
            width = config.image_dim
        self.hidden, width = hidden_layers(width, config.num_layers, config.hidden_dim, p_fusion, p_hidden)
        self.classifier = nn.Linear(width, 1)
        self._train_batch: dict[str, torch.Tensor] | None = None  # the training set, collated once
        self._index: Index | None = None

    @classmethod
    def build(cls, config: RGCLConfig, context: BuildContext) -> RGCL:
        if config.features == "lmm":
            return cls(RGCLConfig(**{**asdict(config), "image_dim": context.feature_meta["lmm"]["dim"]}))
        dims = clip_input_dims(config.embeddings, context, "rgcl model.embeddings")
        return cls(RGCLConfig(**{**asdict(config), **dims}))

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        if self.config.features == "clip":
            return clip_batch(items, self.config.embeddings)
        return {"features": torch.stack([item["lmm"] for item in items]).float(),  # (B, H_lmm)
                "labels": torch.tensor([item["label"] for item in items], dtype=torch.float32),
                "ids": torch.tensor([item["id"] for item in items], dtype=torch.long)}

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B,), g (B, H))."""
        if self.config.features == "lmm":
            fused = batch["features"]  # (B, H_lmm): the LMM has fused image and text already
        else:
            image = F.normalize(self.image_projection(batch["image_features"]), dim=-1)  # (B, P)
            text = F.normalize(self.text_projection(batch["text_features"]), dim=-1)  # (B, P)
            fused = fuse(image, text, self.config.fusion)  # (B, P) or (B, P*P)
        embedding = self.hidden[:-2](fused)  # up to the last hidden Linear: (B, H)
        # the authors run the logits' pass afresh from the fusion: in training, other dropout masks than g's
        hidden = self.hidden(fused) if self.training else self.hidden[-2:](embedding)
        return self.classifier(hidden).squeeze(-1), embedding

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        """Logits (B,); in training with contrastive_weight > 0, the loop's output dict: the logits, the
        weighted retrieval-guided term (`aux_loss`) and the classifier loss's weight (`loss_weight`)."""
        logits, embedding = self.encode(batch)
        weight = self.config.contrastive_weight
        if not self.training or weight == 0:
            return logits
        return {"logits": logits, "aux_loss": weight * self.retrieval_loss(embedding, batch),
                "loss_weight": 1.0 - weight}

    # ----- the training index

    def set_training_items(self, items) -> None:
        """The memes the index holds (the training split only; the shared loop calls this before training)."""
        self._train_batch = self.collate([items[i] for i in range(len(items))])
        n = len(self._train_batch["ids"])
        self.register_buffer("index_embeddings", torch.zeros(n, self.config.hidden_dim))
        self.register_buffer("index_labels", self._train_batch["labels"].clone())
        self.register_buffer("index_ids", self._train_batch["ids"].clone())
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))
        self._index = None

    @torch.no_grad()
    def refresh_index(self, chunk: int = 1024) -> None:
        """g of every training meme from the current weights, in eval mode (dropout off), as the authors'."""
        was_training = self.training
        self.eval()
        device = self.classifier.weight.device
        n = len(self.index_ids)
        for start in range(0, n, chunk):
            part = {key: value[start:start + chunk].to(device) for key, value in self._train_batch.items()}
            self.index_embeddings[start:start + chunk] = self.encode(part)[1]
        self.train(was_training)
        self._index = None

    def retrieval_loss(self, embedding: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._train_batch is None:
            raise RuntimeError("rgcl: no training index; call set_training_items(train_items) before training "
                               "(hatememes.training does)")
        if int(self.batches_seen) % self.config.refresh_every == 0:
            self.refresh_index()
        self.batches_seen += 1
        if self._index is None:  # after a refresh, or a checkpoint's buffers loaded
            self._index = make_index(self.config.backend, self.index_embeddings, self.index_ids,
                                     normalise=self.config.metric == "cos")
        positives, negatives, found = self.neighbours(embedding, batch["labels"], batch["ids"])
        return rgcl_loss(embedding, batch["labels"], positives, negatives, found, self.config.contrastive_loss,
                         self.config.margin, self.config.metric)

    def neighbours(self, queries: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pseudo-gold positives (B, P, H), hard negatives (B, M, H), found (B, M) bool): the nearest training
        memes of each query's label and of the other one, among its `search_multiple` x max(M, P) nearest
        (never itself). A positive not found is a zero vector, as the authors'."""
        config = self.config
        window = config.search_multiple * max(config.hard_negatives, config.pseudo_positives)
        _, rows = self._index.search(queries, window, ids)  # (B, K)
        valid = rows >= 0
        same = valid & (self.index_labels[rows.clamp(min=0)] == labels.unsqueeze(1))  # (B, K)
        other = valid & ~same
        return (self.first_rows(rows, same, config.pseudo_positives)[0],
                *self.first_rows(rows, other, config.hard_negatives))

    def first_rows(self, rows: torch.Tensor, chosen: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The embeddings of the first `count` chosen rows of each query (B, count, H), and which exist (B, count)."""
        rank = torch.cumsum(chosen.long(), dim=1) - 1  # (B, K): the order among the chosen
        picked = torch.full((len(rows), count), -1, dtype=torch.long, device=rows.device)
        keep = chosen & (rank < count)
        picked[keep.nonzero(as_tuple=True)[0], rank[keep]] = rows[keep]
        found = picked >= 0
        vectors = self.index_embeddings[picked.clamp(min=0)] * found.unsqueeze(-1)  # (B, count, H)
        return vectors, found

    # ----- saving

    def save_pretrained(self, directory: Path) -> None:
        save_model(directory, self.config, {k: v for k, v in self.state_dict().items() if k not in INDEX_BUFFERS})

    @classmethod
    def from_pretrained(cls, directory: Path) -> RGCL:
        config, state = load_model_files(directory, RGCLConfig)
        model = cls(config)
        model.load_state_dict(state)
        return model.eval()


def rgcl_loss(anchors: torch.Tensor, labels: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
              found: torch.Tensor, kind: str, margin: float, metric: str = "cos") -> torch.Tensor:
    """The authors' retrieval-guided term (src/model/loss.py, metric cos or ip): anchors (B, H), labels (B,),
    pseudo-gold positives (B, P, H), hard negatives (B, M, H) of which `found` (B, M) exist."""
    def similar(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if metric == "cos":
            return F.cosine_similarity(a, b, dim=-1, eps=1e-8)
        if metric == "ip":
            return (a * b).sum(-1) / anchors.shape[-1]
        raise ValueError(f"rgcl: metric {metric!r}: cos or ip")

    similarity = similar(anchors.unsqueeze(1), anchors.unsqueeze(0)).fill_diagonal_(0)  # (B, B)
    other = labels.unsqueeze(0) != labels.unsqueeze(1)  # (B, B): in-batch negatives
    in_batch = similarity * other
    counted = in_batch != 0  # their mask: the non-zero terms
    has_negatives = other.any(1)
    hard = found * similar(anchors.unsqueeze(1), negatives)  # (B, M)
    positive = similar(anchors.unsqueeze(1), positives)  # (B, P)
    if kind == "triplet":
        batch_term = torch.where(has_negatives, in_batch.sum(1) / counted.sum(1).clamp(min=1), 0.0)
        return torch.relu(batch_term + hard.sum(1) - positive.mean(1) + margin).mean()
    if kind == "contrastive":
        batch_term = torch.where(has_negatives, (torch.exp(in_batch) * counted).sum(1), 0.0)
        hard_found = hard != 0
        hard_term = torch.where(hard_found.any(1), (torch.exp(hard) * hard_found).sum(1)
                                / hard_found.sum(1).clamp(min=1), 0.0)
        positive_term = torch.exp(positive).mean(1)
        return -torch.log(positive_term / (hard_term + positive_term + batch_term)).mean()
    raise ValueError(f"rgcl: contrastive_loss {kind!r}: triplet or contrastive")
