"""The training losses every trainer can pick by name from params: bce, focal, class_balanced.

    config = LossConfig(name="focal", focal_alpha=0.25, focal_gamma=2.0)
    loss_fn = make_loss(config.name, config, class_counts=(n_benign, n_hateful))
    loss = loss_fn(logits, labels)            # logits (B,) before the sigmoid, labels (B,) in {0, 1}

- `bce`: binary cross-entropy on logits.
- `focal`: Lin et al. 2017 ("Focal loss for dense object detection"): -alpha_t (1 - p_t)^gamma log p_t,
  where p_t is the probability of the true class; alpha=None weighs both classes 1, gamma=0 is BCE.
- `class_balanced`: Cui et al. 2019 ("Class-balanced loss based on effective number of samples"):
  class c weighs 1 / E_c with E_c = (1 - beta^n_c) / (1 - beta), normalised so the weights sum to the
  number of classes (2); applied on top of bce or focal (`cb_base`). beta=0 is unweighted, beta -> 1
  approaches inverse class frequency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossConfig:
    name: str = "bce"
    focal_alpha: float | None = None  # weight of the hateful class; None weighs both classes 1
    focal_gamma: float = 2.0
    cb_beta: float = 0.999
    cb_base: Literal["bce", "focal"] = "bce"


def bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example binary cross-entropy (B,)."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")


def focal(logits: torch.Tensor, labels: torch.Tensor, alpha: float | None, gamma: float) -> torch.Tensor:
    """Per-example focal loss (B,): alpha_t * (1 - p_t)^gamma * BCE."""
    labels = labels.to(logits.dtype)
    probs = torch.sigmoid(logits)
    p_true = probs * labels + (1 - probs) * (1 - labels)  # p_t
    loss = bce(logits, labels) * (1 - p_true) ** gamma
    if alpha is not None:
        loss = loss * (alpha * labels + (1 - alpha) * (1 - labels))
    return loss


def class_balanced_weights(class_counts: tuple[int, int], beta: float) -> tuple[float, float]:
    """(w_benign, w_hateful) = normalised 1 / effective number of samples, summing to 2."""
    if len(class_counts) != 2 or min(class_counts) <= 0:
        raise ValueError(f"class_balanced needs a positive count for both classes, got {class_counts}")
    if not 0 <= beta < 1:
        raise ValueError(f"cb_beta must be in [0, 1), got {beta}")
    inverse = [(1 - beta) / (1 - beta**n) for n in class_counts]  # 1 / E_n
    total = sum(inverse)
    return inverse[0] * 2 / total, inverse[1] * 2 / total


def class_balanced(logits, labels, weights: tuple[float, float], base: LossFn) -> torch.Tensor:
    """Per-example base loss times the class-balanced weight of each example's class (B,)."""
    labels = labels.to(logits.dtype)
    return base(logits, labels) * (weights[0] * (1 - labels) + weights[1] * labels)


def make_loss(name: str, config: LossConfig, class_counts: tuple[int, int]) -> LossFn:
    """The mean loss `name` over a batch: (logits (B,), labels (B,)) -> scalar tensor."""
    makers = {
        "bce": lambda: bce,
        "focal": lambda: partial(focal, alpha=config.focal_alpha, gamma=config.focal_gamma),
        "class_balanced": lambda: partial(
            class_balanced,
            weights=class_balanced_weights(class_counts, config.cb_beta),
            base=bce if config.cb_base == "bce" else partial(focal, alpha=config.focal_alpha, gamma=config.focal_gamma),
        ),
    }
    if name not in makers:
        raise KeyError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(makers))}")
    if config.cb_base not in ("bce", "focal"):
        raise ValueError(f"cb_base must be 'bce' or 'focal', got {config.cb_base!r}")
    per_example = makers[name]()
    return lambda logits, labels: per_example(logits, labels).mean()
