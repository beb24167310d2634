"""The fine-tuned LMM's meme embeddings: the final hidden state at the last prompt position (the answer's) of a
trained `llava_lora` folder, for every meme of every split, in the feature cache's layout (`hatememes.features
.store`: `<out>/<split>.safetensors` with the tensor "hidden" (N, H) and the ids, and `meta.json`).

LMM-RGCL's second stage (Mei et al. 2025; JingbiaoMei/RGCL, RA-HMD/Stage2) extracts these once from its
stage-1 model and trains the retrieval-guided head on them, the LMM frozen: `lmm_rgcl` is `rgcl` with
`features: lmm`. The prompt, the image processing and the left padding are the model's own (its `collate`),
so the position read is the one its classifier head and its Yes/No answer read.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from hatememes.data.readers import load_items
from hatememes.features.store import save_split
from hatememes.files import read_json, write_json
from hatememes.inference import load_model
from hatememes.progress import progress


@dataclass(frozen=True)
class LMMFeaturesParams:
    model: str = "llava_lora"  # LMM-RGCL's first stage: a trained LMMLoRA model (llava_lora, lmm_lora)

    def __post_init__(self) -> None:
        from hatememes.models import MODELS

        if MODELS.get(self.model) != "hatememes.models.lmm:LMMLoRA":
            lora = sorted(name for name, path in MODELS.items() if path == "hatememes.models.lmm:LMMLoRA")
            raise ValueError(f"lmm_features.model {self.model!r}: the stage reads a LoRA-tuned LMM, one of {lora}")


@torch.no_grad()
def embed_split(model, items, batch_size: int) -> torch.Tensor:
    """(N, H) last-position hidden states of `items`, in their order."""
    rows = []
    for start in progress(range(0, len(items), batch_size), desc="lmm features", unit="batch"):
        batch = model.collate([items[i] for i in range(start, min(start + batch_size, len(items)))])
        device = next(model.parameters()).device
        rows.append(model.embed({key: value.to(device) for key, value in batch.items()}).float().cpu())  # (b, H)
    return torch.cat(rows) if rows else torch.empty(0)


def extract_lmm_features(model_dir: Path, memes: Path, out: Path, batch_size: int) -> dict:
    """Write the features of every split of `memes`' manifest to `out` (complete or absent); return meta."""
    from accelerate import PartialState

    model, name = load_model(model_dir)
    if not hasattr(model, "embed"):
        raise TypeError(f"{model_dir}: a {name} model has no last-token embedding (a trained llava_lora has)")
    device = PartialState().device  # the GPU where there is one (a 4-bit base is placed there when loaded)
    if next(model.parameters()).device != device:
        model.to(device)
    manifest = read_json(Path(memes) / "manifest.json")
    building = Path(out).with_name(f".{Path(out).name}.partial")
    shutil.rmtree(building, ignore_errors=True)
    dim = None
    for split in manifest["splits"]:
        items = load_items(memes, {}, split, model.inputs)
        hidden = embed_split(model, items, batch_size)  # (N, H)
        save_split(building, split, items.ids, {"hidden": hidden})
        dim = hidden.shape[1]
    meta = {"model": str(model_dir), "model_name": name, "dim": dim, "position": "last prompt token, final layer",
            "data_sha256": {split: info["sha256"] for split, info in manifest["splits"].items()}}
    write_json(building / "meta.json", meta)
    shutil.rmtree(out, ignore_errors=True)
    building.rename(out)
    return meta
