"""Every model the pipeline knows, by name: the one dict `MODELS` at the bottom of this file.

A model file holds its config dataclass, its module(s) and its classifier class. The class is what
`MODELS` maps a name to, and it follows one of two protocols:

**Torch classifiers** (an `nn.Module`, trained by `hatememes.training.train` with Accelerate):

    Config: type                          # the dataclass read from params.yaml `train.<name>.model`
    inputs: tuple[str, ...]               # what each item carries besides id/text/label (see below)
    @classmethod build(config, context) -> Self
    collate(items: list[dict]) -> dict    # a batch of tensors; must hold "labels" (B,) float and "ids" (B,) long
    forward(batch: dict) -> Tensor        # logits (B,), before the sigmoid
    save_pretrained(directory) / @classmethod from_pretrained(directory) -> Self

**Fitted classifiers** (scikit-learn probes, numpy course networks, zero-shot, ensembles):

    Config, inputs, build, save_pretrained, from_pretrained as above, and
    fit(train: list[dict], dev: list[dict]) -> None
    predict_proba(items: list[dict]) -> np.ndarray     # P(hateful), shape (N,)

Items are dicts with `id` (int), `text` (str), `label` (0, 1, or -1 when unknown) and, by input name:
    "clip"    -> "clip_image" (D,), "clip_text" (D,)     float tensors, unnormalised CLIP embeddings
    "grid"    -> "grid" (C, S, S)                          CNN feature map (MMBT-Grid)
    "regions" -> "regions" (K, D), "boxes" (K, 6)        RoIAlign features + (x1, y1, x2, y2, w, h) in [0, 1]
    "image"   -> "image"                                   PIL RGB image
`context` is a `BuildContext`: the meta.json of every cached feature set and the training texts (for
tokenizers trained on the data). `inputs` may be set per instance by `build` (MMBT reads `grid` or
`regions` as its config says): the pipeline asks the built model what to load.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BuildContext:
    feature_meta: dict[str, dict] = field(default_factory=dict)  # extractor -> its meta.json
    train_texts: tuple[str, ...] = ()


from hatememes.models.clip_fusion import ClipFusion  # noqa: E402
from hatememes.models.clip_linear import ClipLinearImage, ClipLinearText  # noqa: E402
from hatememes.models.clip_zeroshot import ClipZeroShot  # noqa: E402
from hatememes.models.course.lstm import CourseLSTM  # noqa: E402
from hatememes.models.course.numpy_cnn import CourseCNN  # noqa: E402
from hatememes.models.course.numpy_mlp import CourseMLP  # noqa: E402
from hatememes.models.course.transformer import CourseTransformer  # noqa: E402
from hatememes.models.llava import LlavaLoRA, LlavaZeroShot  # noqa: E402
from hatememes.models.mmbt import MMBT  # noqa: E402
from hatememes.models.visualbert import VisualBert  # noqa: E402

MODELS: dict[str, type] = {
    "clip_fusion": ClipFusion,
    "clip_linear_image": ClipLinearImage,
    "clip_linear_text": ClipLinearText,
    "clip_zeroshot": ClipZeroShot,
    "mmbt": MMBT,
    "visualbert": VisualBert,
    "llava_zeroshot": LlavaZeroShot,
    "llava_lora": LlavaLoRA,
    "course_mlp": CourseMLP,
    "course_cnn": CourseCNN,
    "course_lstm": CourseLSTM,
    "course_transformer": CourseTransformer,
}


def get_model_class(name: str) -> type:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}") from None
