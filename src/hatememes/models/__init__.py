"""Every model the pipeline knows, by name: the one dict `MODELS` at the bottom of this file.

A model file holds its config dataclass, its module(s) and its classifier class. The class is what
`MODELS` maps a name to (as "module:class", imported by `get_model_class`), and it follows one of two protocols:

**Torch classifiers** (an `nn.Module`, trained by `hatememes.training.train` with Accelerate):

    Config: type                          # the dataclass read from params.yaml `train.<name>.model`
    inputs: tuple[str, ...]               # what each item carries besides id/text/label (see below)
    @classmethod build(config, context) -> Self
    collate(items: list[dict]) -> dict    # a batch of tensors; must hold "labels" (B,) float and "ids" (B,) long
    forward(batch: dict) -> Tensor        # logits (B,), before the sigmoid; or, in training, a dict with
                                          # "logits" and a term of the model's own ("aux_loss", "loss_weight":
                                          # hatememes.training.model_outputs)
    set_training_items(items) -> None     # optional: called with the training split before training (rgcl)
    save_pretrained(directory) / @classmethod from_pretrained(directory) -> Self

**Fitted classifiers** (scikit-learn probes, numpy course networks, zero-shot, ensembles):

    Config, inputs, build, save_pretrained, from_pretrained as above, and
    fit(train: list[dict], dev: list[dict]) -> None
    predict_proba(items: list[dict]) -> np.ndarray     # P(hateful), shape (N,)

Items are dicts with `id` (int), `text` (str), `label` (0, 1, or -1 when unknown) and, by input name:
    "clip"    -> "clip_image" (D,), "clip_text" (D,)     float tensors, unnormalised CLIP embeddings
                 (+ "clip_image_pooled", "clip_text_pooled"  the towers' outputs before the projections,
                  with features.clip.pooled)
    "grid"    -> "grid" (C, S, S)                          CNN feature map (MMBT-Grid)
    "regions" -> "regions" (K, D), "boxes" (K, 6)        RoIAlign features + (x1, y1, x2, y2, w, h) in [0, 1]
    "lmm"     -> "lmm" (H,)                               a fine-tuned LMM's last-token hidden state
    "image"   -> "image"                                   PIL RGB image
`context` is a `BuildContext`: the meta.json of every cached feature set and the training texts (for
tokenizers trained on the data). `inputs` may be set per instance by `build` (MMBT reads `grid` or
`regions` as its config says): the pipeline asks the built model what to load.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BuildContext:
    feature_meta: dict[str, dict] = field(default_factory=dict)  # extractor -> its meta.json
    train_texts: tuple[str, ...] = ()
    name: str = ""  # the model's name in params.yaml (`train.<name>`), for errors that name a param


# name -> "module:class"; a stage imports only the model it runs (scikit-learn's import costs 2 s and
# transformers' 1.4 s, paid by every stage when this dict held the classes)
MODELS: dict[str, str] = {
    "clip_fusion": "hatememes.models.clip_fusion:ClipFusion",
    "rgcl": "hatememes.models.rgcl:RGCL",
    "rgcl_bce_only": "hatememes.models.rgcl:RGCL",  # the ablation: the same model, contrastive_weight 0
    "rgcl_knn": "hatememes.models.rgcl_knn:RGCLKnn",
    "lmm_rgcl": "hatememes.models.rgcl:RGCL",  # LMM-RGCL's second stage: rgcl on llava_lora's hidden states
    "lmm_rgcl_knn": "hatememes.models.rgcl_knn:RGCLKnn",
    "clip_linear_image": "hatememes.models.clip_linear:ClipLinearImage",
    "clip_linear_text": "hatememes.models.clip_linear:ClipLinearText",
    "clip_zeroshot": "hatememes.models.clip_zeroshot:ClipZeroShot",
    "mmbt": "hatememes.models.mmbt:MMBT",
    "visualbert": "hatememes.models.visualbert:VisualBert",
    # the benchmark paper's baselines (Kiela et al. 2020, Table 2); its Late Fusion is the mean of text_bert's and
    # image_grid's probabilities: params.yaml `late_fusion`, run by the ensemble stage as `ensemble` is
    "image_grid": "hatememes.models.image_only:ImageOnly",
    "image_region": "hatememes.models.image_only:ImageOnly",  # the same model on the mean region feature
    "text_bert": "hatememes.models.text_bert:TextBert",
    "concat_bert": "hatememes.models.concat_bert:ConcatBert",
    # any image-text-to-text model; llava_* are the LLaVA-1.5 presets (params.yaml), lmm_* any other base
    "llava_zeroshot": "hatememes.models.lmm:LMMZeroShot",
    "llava_lora": "hatememes.models.lmm:LMMLoRA",
    "lmm_zeroshot": "hatememes.models.lmm:LMMZeroShot",
    "lmm_lora": "hatememes.models.lmm:LMMLoRA",
    "course_mlp": "hatememes.models.course.numpy_mlp:CourseMLP",
    "course_cnn": "hatememes.models.course.numpy_cnn:CourseCNN",
    "course_lstm": "hatememes.models.course.lstm:CourseLSTM",
    "course_transformer": "hatememes.models.course.transformer:CourseTransformer",
}


def get_model_class(name: str) -> type:
    """The class `name` maps to, imported now."""
    try:
        module, attribute = MODELS[name].split(":")
    except KeyError:
        raise KeyError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}") from None
    return getattr(importlib.import_module(module), attribute)
