"""Zero-shot CLIP (Radford et al. 2021, §3.1.4 prompt ensembling) as a hateful-meme scorer: no training.

The image and the text embedding of a meme are each compared (cosine) with the mean embedding of a
"hateful" and a "benign" prompt ensemble; the meme's score is the mean of the two modalities' margins,
temperature-scaled through a sigmoid. The prompts are encoded with the same open_clip model that
produced the cached features (named in their meta.json).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from hatememes.models import BuildContext

HATEFUL = ("a hateful meme.", "a meme that mocks people.", "an offensive, insulting meme.")
BENIGN = ("a harmless meme.", "a friendly, funny meme.", "a kind and respectful meme.")


@dataclass(frozen=True)
class ClipZeroShotConfig:
    hateful_prompts: tuple[str, ...] = field(default=HATEFUL)
    benign_prompts: tuple[str, ...] = field(default=BENIGN)
    temperature: float = 100.0  # CLIP's logit scale
    clip_model: str = ""  # filled from the features' meta.json at build time
    clip_pretrained: str = ""


def encode_prompts(config: ClipZeroShotConfig) -> torch.Tensor:
    """(2, D) normalised mean embeddings of the benign (row 0) and hateful (row 1) prompt ensembles."""
    import open_clip

    from hatememes.pretrain import register_tiny_configs

    register_tiny_configs()
    model = open_clip.create_model(config.clip_model, pretrained=config.clip_pretrained or None).eval()
    tokenizer = open_clip.get_tokenizer(config.clip_model)
    rows = []
    with torch.inference_mode():
        for prompts in (config.benign_prompts, config.hateful_prompts):
            embeddings = F.normalize(model.encode_text(tokenizer(list(prompts))).float(), dim=-1)
            rows.append(F.normalize(embeddings.mean(0), dim=-1))
    return torch.stack(rows)


class ClipZeroShot:
    Config = ClipZeroShotConfig
    inputs = ("clip",)

    def __init__(self, config: ClipZeroShotConfig, prompt_embeddings: torch.Tensor):
        self.config, self.prompt_embeddings = config, prompt_embeddings  # (2, D)

    @classmethod
    def build(cls, config: ClipZeroShotConfig, context: BuildContext) -> ClipZeroShot:
        meta = context.feature_meta["clip"]
        config = ClipZeroShotConfig(**{**asdict(config), "clip_model": meta["model"],
                                       "clip_pretrained": meta["pretrained"]})
        return cls(config, encode_prompts(config))

    def fit(self, train: list[dict], dev: list[dict]) -> None:
        """Nothing to learn: zero-shot."""

    def predict_proba(self, items: list[dict]) -> np.ndarray:
        margins = []
        for key in ("clip_image", "clip_text"):
            features = F.normalize(torch.stack([item[key] for item in items]).float(), dim=-1)  # (N, D)
            similarity = features @ self.prompt_embeddings.T  # (N, 2)
            margins.append(similarity[:, 1] - similarity[:, 0])
        return torch.sigmoid(self.config.temperature * torch.stack(margins).mean(0)).numpy()

    def save_pretrained(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        save_file({"prompt_embeddings": self.prompt_embeddings.contiguous()}, str(directory / "prompts.safetensors"))

    @classmethod
    def from_pretrained(cls, directory: Path) -> ClipZeroShot:
        directory = Path(directory)
        raw = json.loads((directory / "config.json").read_text())
        config = ClipZeroShotConfig(**{**raw, "hateful_prompts": tuple(raw["hateful_prompts"]),
                                       "benign_prompts": tuple(raw["benign_prompts"])})
        return cls(config, load_file(str(directory / "prompts.safetensors"))["prompt_embeddings"])
