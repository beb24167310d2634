"""Nearest-neighbour search over meme embeddings by cosine similarity, for the retrieval-guided models (RGCL).

    index = make_index("exact", embeddings, ids)           # (N, D) rows; "faiss" is the same search in faiss
    scores, rows = index.search(queries, k, query_ids)      # (B, k) each: best first, never the query itself

Rows are L2-normalised on the way in, so inner product is cosine similarity (`normalise=False`: plain inner
product, as RGCL's metric "ip"). `exact` is a matrix product and `torch.topk`; `faiss` builds
`faiss.IndexFlatIP`, the flat index the RGCL authors search with (JingbiaoMei/RGCL, src/utils/retrieval.py),
and is the place to put an approximate index for very large training sets. Both return the same neighbours on
the same rows (tests/test_rgcl.py). A query whose id is in the index never retrieves itself: search asks for
one more neighbour and drops the query's own row.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

Backend = Literal["exact", "faiss"]


class Index(Protocol):
    ids: torch.Tensor  # (N,) the meme id of each row

    def search(self, queries: torch.Tensor, k: int, query_ids: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]: ...


class _Index:
    def __init__(self, embeddings: torch.Tensor, ids: torch.Tensor, normalise: bool = True):
        if embeddings.ndim != 2 or len(embeddings) != len(ids):
            raise ValueError(f"index: embeddings {tuple(embeddings.shape)} and ids {tuple(ids.shape)} disagree")
        self.ids, self.normalise = ids.detach().cpu().long(), normalise
        rows = embeddings.detach().float()
        self.rows = F.normalize(rows, dim=-1) if normalise else rows  # (N, D)

    def search(self, queries: torch.Tensor, k: int, query_ids: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (B, k), rows (B, k)): the k most similar rows of each query, best first. Rows of the index
        holding the query's own id are skipped; fewer than k rows left gives row -1 and score -inf."""
        queries = queries.detach().float()
        queries = F.normalize(queries, dim=-1) if self.normalise else queries
        wanted = min(k + (query_ids is not None), len(self.ids))
        scores, rows = self._top(queries, wanted)  # (B, wanted) each, on CPU
        if query_ids is not None:
            own = self.ids[rows.clamp(min=0)] == query_ids.detach().cpu().long().unsqueeze(1)  # (B, wanted)
            scores = scores.masked_fill(own, -torch.inf)
            keep = torch.argsort(own.int(), dim=1, stable=True)  # the query's own row moves to the end
            scores, rows = scores.gather(1, keep), rows.gather(1, keep).masked_fill(own.gather(1, keep), -1)
        scores, rows = scores[:, :k], rows[:, :k]
        short = k - scores.shape[1]
        if short > 0:
            scores = F.pad(scores, (0, short), value=-torch.inf)
            rows = F.pad(rows, (0, short), value=-1)
        return scores.to(queries.device), rows.to(queries.device)

    def _top(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class ExactIndex(_Index):
    """Brute force in torch: one (B, N) similarity matrix per search."""

    def _top(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows.to(queries.device)
        scores, found = torch.topk(queries @ rows.T, k, dim=1)
        return scores.cpu(), found.cpu()


class FaissIndex(_Index):
    """faiss's exact flat inner-product index (faiss-cpu); the rows are added once."""

    def __init__(self, embeddings: torch.Tensor, ids: torch.Tensor, normalise: bool = True):
        super().__init__(embeddings, ids, normalise)
        try:
            import faiss
        except ImportError as error:
            raise ImportError("retrieval backend faiss: install faiss-cpu (pip install -r requirements.txt), "
                              "or set the backend param to exact") from error
        self.index = faiss.IndexFlatIP(self.rows.shape[1])
        self.index.add(np.ascontiguousarray(self.rows.cpu().numpy(), dtype=np.float32))

    def _top(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores, found = self.index.search(np.ascontiguousarray(queries.cpu().numpy(), dtype=np.float32), k)
        return torch.from_numpy(scores), torch.from_numpy(found).long()


BACKENDS = {"exact": ExactIndex, "faiss": FaissIndex}


def make_index(backend: Backend, embeddings: torch.Tensor, ids: torch.Tensor, normalise: bool = True) -> Index:
    """An index of `embeddings` (N, D) by cosine similarity, or by inner product with `normalise` false."""
    if backend not in BACKENDS:
        raise ValueError(f"retrieval backend {backend!r}: one of {', '.join(BACKENDS)}")
    return BACKENDS[backend](embeddings, ids, normalise)
