"""Unimodal linear probes on cached CLIP embeddings (Radford et al. 2021, §3.2: linear-probe evaluation):
logistic regression on the L2-normalised image embedding (`clip_linear_image`) or text embedding
(`clip_linear_text`). On Hateful Memes they measure how far one modality alone gets; the benchmark's
confounders are built to keep them near chance.

Saved as plain numbers (coefficients in safetensors, config in JSON), never as a pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from sklearn.linear_model import LogisticRegression

from hatememes.models import BuildContext


@dataclass(frozen=True)
class ClipLinearConfig:
    C: float = 1.0  # inverse L2 regularisation strength
    max_iter: int = 2000


class ClipLinearProbe:
    Config = ClipLinearConfig
    inputs = ("clip",)
    modality = ""  # "image" or "text", fixed by the subclass

    def __init__(self, config: ClipLinearConfig):
        self.config = config
        self.coef = np.zeros(0)
        self.intercept = 0.0

    @classmethod
    def build(cls, config: ClipLinearConfig, context: BuildContext):
        return cls(config)

    def features(self, items: list[dict]) -> np.ndarray:
        vectors = torch.stack([item[f"clip_{self.modality}"] for item in items]).double()  # (N, D)
        return torch.nn.functional.normalize(vectors, dim=-1).numpy()

    def fit(self, train: list[dict], dev: list[dict]) -> None:
        probe = LogisticRegression(C=self.config.C, max_iter=self.config.max_iter)
        probe.fit(self.features(train), np.array([item["label"] for item in train]))
        self.coef, self.intercept = probe.coef_[0], float(probe.intercept_[0])

    def predict_proba(self, items: list[dict]) -> np.ndarray:
        logits = self.features(items) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))

    def save_pretrained(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        save_file({"coef": self.coef, "intercept": np.array([self.intercept])}, str(directory / "probe.safetensors"))

    @classmethod
    def from_pretrained(cls, directory: Path):
        directory = Path(directory)
        probe = cls(ClipLinearConfig(**json.loads((directory / "config.json").read_text())))
        weights = load_file(str(directory / "probe.safetensors"))
        probe.coef, probe.intercept = weights["coef"], float(weights["intercept"][0])
        return probe


class ClipLinearImage(ClipLinearProbe):
    modality = "image"


class ClipLinearText(ClipLinearProbe):
    modality = "text"
