"""The fine-grained heads (WOAH 2021 shared task) that clip_fusion, mmbt, visualbert and lmm_lora can add beside
their hate classifier: multi-label logits for the protected categories and the attack types, read from the
same representation the hate classifier reads, trained with

    loss = hate loss (the loop's) + pc_weight * BCE(pc columns) + attack_weight * BCE(attack columns)

as MMF's multi-label VisualBERT heads for these labels are (one sigmoid per label). The columns are
`PC_LABELS` then `ATTACK_LABELS` (hatememes.data.fine_grained), `pc_empty` and `attack_empty` included, since
the shared task scores them. Memes without fine-grained labels (the test splits) add no loss. With
`enabled: false` a model builds no head and is exactly the model without this file.

    config = FineGrainedConfig(enabled=True, pc_weight=1.0, attack_weight=1.0)
    batch["fine_grained"] = fine_targets(items)               # (B, NUM_FINE), NaN rows where unannotated
    return fine_outputs(logits, head(features), batch, config, training=self.training)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hatememes.data.fine_grained import NUM_FINE, PC_LABELS

INPUT = "fine_grained"  # the items' key (hatememes.data.readers) and the input name a model asks for


@dataclass(frozen=True)
class FineGrainedConfig:
    enabled: bool = False
    pc_weight: float = 1.0  # the protected categories' multi-label BCE, beside the hate loss
    attack_weight: float = 1.0  # the attack types'

    def __post_init__(self) -> None:
        if min(self.pc_weight, self.attack_weight) < 0:
            raise ValueError(f"fine_grained: pc_weight {self.pc_weight} and attack_weight {self.attack_weight} "
                             "must be >= 0")


def fine_grained_config(value: FineGrainedConfig | dict) -> FineGrainedConfig:
    """A model config's `fine_grained` as read back from its config.json (a dict) or as given."""
    return value if isinstance(value, FineGrainedConfig) else FineGrainedConfig(**value)


def model_inputs(inputs: tuple[str, ...], config: FineGrainedConfig) -> tuple[str, ...]:
    """A model's inputs, with the fine-grained targets when its head is on."""
    return (*inputs, INPUT) if config.enabled else inputs


def fine_targets(items: list[dict]) -> torch.Tensor:
    """(B, NUM_FINE) multi-hot targets; a row of NaN for a meme without fine-grained labels (or an item without
    the key: a meme scored alone, pipelines/predict.py)."""
    unknown = torch.full((NUM_FINE,), float("nan"))
    return torch.stack([item.get(INPUT, unknown) for item in items]).float()


def fine_loss(logits: torch.Tensor, targets: torch.Tensor, config: FineGrainedConfig) -> torch.Tensor:
    """pc_weight * mean BCE over the pc columns + attack_weight * mean BCE over the attack columns, over the
    annotated rows; 0 (with a gradient path) when no row of the batch is annotated."""
    known = ~torch.isnan(targets).any(dim=1)  # (B,)
    if not known.any():
        return logits.sum() * 0.0
    logits, targets = logits[known].float(), targets[known]
    pc = len(PC_LABELS)
    return (config.pc_weight * F.binary_cross_entropy_with_logits(logits[:, :pc], targets[:, :pc])
            + config.attack_weight * F.binary_cross_entropy_with_logits(logits[:, pc:], targets[:, pc:]))


def fine_outputs(logits: torch.Tensor, fine_logits: torch.Tensor, batch: dict, config: FineGrainedConfig,
                 training: bool, aux_loss: torch.Tensor | float = 0.0, **extra) -> dict:
    """The loop's output dict (hatememes.training.model_outputs): the hate logits (B,), the fine-grained logits
    (B, NUM_FINE) and, in training, their loss added to any `aux_loss` of the model's own."""
    if fine_logits.shape[-1] != NUM_FINE:
        raise ValueError(f"fine-grained head: {fine_logits.shape[-1]} outputs, expected {NUM_FINE}")
    outputs = {"logits": logits, "fine_logits": fine_logits, **extra}
    if training:
        outputs["aux_loss"] = aux_loss + fine_loss(fine_logits, batch[INPUT], config)
    return outputs
