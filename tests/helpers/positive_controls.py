"""Positive controls for the demo's models that must stay at chance (tests/helpers/e2e_bars.py `AT_CHANCE`).

A dead model passes "AUROC ≤ 0.65 on the pair rule". So each of them is also trained (or, zero-shot, asked)
once more, the same model class on the same features with its own params, on a label that its modality
does carry, and must reach `CONTROL_BAR` on test_unseen:

    clip_linear_image                                   is the picture's object k? once for each of the 8
                                                        objects, AUROCs averaged (one-vs-rest macro AUROC)
    clip_linear_text                                    is the caption's object k? (the same, 8 objects)
    clip_zeroshot (image and text margins, averaged)    the same question, asked with the prompt "a <k>."
                                                        against the other 7 objects' prompts, on the memes
                                                        whose picture and caption agree on the answer
    course_cnn                                          is the picture's object red or blue? (the numpy CNN,
                                                        10 epochs of its recipe, does not learn shapes: even
                                                        objects reached dev_seen / dev_unseen 0.59 / 0.43,
                                                        star against the rest 0.88 / 0.82; colour 1.0 / 1.0,
                                                        and 1.0 / 1.0 after the demo's 5 epochs)
    course_lstm, course_transformer                     is the caption's object one of GROUP (4 of the 8)?
    llava_zeroshot                                      "Does the text name the shape in the image?"
                                                        (yes iff the caption's object is the picture's)
    image_grid, image_region                            is the picture's object one of GROUP? (MMF's MLP
                                                        head: two hidden layers cut 4 clusters from 4)
    text_bert                                           is the caption's object one of GROUP?
    late_fusion                                         are both objects in GROUP? Each member (text_bert,
                                                        image_grid) is trained on that label and the two
                                                        probabilities averaged, as the stage averages them:
                                                        each sees half of the evidence, the mean ranks both
                                                        halves above one

Why one object against the rest for the tiny CLIP's embeddings: they cluster the 8 objects on the unit
sphere, and a cap cuts one cluster from the others, while no hyperplane need cut 4 clusters from 4. The
4-of-8 label, chosen on world 0, failed in CI's worlds 356 and 651 (test_unseen 0.72-0.87, dev 0.74-0.85);
these labels reached dev_seen / dev_unseen ≥ 0.977 (linear) and ≥ 0.940 (zero-shot) in worlds 0, 23, 88,
150, 356 and 651 (`python benchmarks/controls.py`, docs/measurements.md). The course text networks learn
the caption's words, and 4 of 8 holds for them in every world measured.

The concepts come from the synthetic generator with the reproduced world's `fetch.synthetic` params, and
must give back every meme's id, text and label: a control never runs on a world other than the one fetched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hatememes.data.readers import MemeItems, load_items
from hatememes.data.synthetic import OBJECTS, SyntheticConfig, SyntheticMeme, sample_memes
from hatememes.metrics import auroc
from hatememes.params import load_params, section

CONTROL_BAR = 0.90
# every other object: circle, triangle, cross, diamond (chosen on the dev splits of world 0; for the course
# text networks only, see the docstring)
GROUP = range(0, len(OBJECTS), 2)
# the tiny LLaVA's pretraining question (hatememes.models.llava_tiny MATCH), in the meme prompt's frame
MATCH_QUESTION = ('This is an image with: "{text}" written on it. Does the text name the shape in the image? Answer '
                  "yes or no.")


@dataclass(frozen=True)
class Control:
    """A label its modality carries, the memes it is scored on, and config changes (zero-shot prompts)."""

    label: Callable[[SyntheticMeme], int]  # 0/1 from the meme's concepts and scene
    keep: Callable[[SyntheticMeme], bool] = lambda meme: True
    config: dict = field(default_factory=dict)


def image_red_or_blue(meme: SyntheticMeme) -> int:
    return int(meme.scene.color in ("red", "blue"))


def text_in_group(meme: SyntheticMeme) -> int:
    return int(meme.text_concept in GROUP)


def image_in_group(meme: SyntheticMeme) -> int:
    return int(meme.image_concept in GROUP)


def both_in_group(meme: SyntheticMeme) -> int:
    return int(meme.image_concept in GROUP and meme.text_concept in GROUP)


def image_is(k: int) -> Control:
    return Control(lambda meme: int(meme.image_concept == k))


def text_is(k: int) -> Control:
    return Control(lambda meme: int(meme.text_concept == k))


def prompted_object(k: int) -> Control:
    """Zero-shot "is the object k?": k's prompt against the others', on memes whose two objects agree on it."""
    return Control(lambda meme: int(meme.image_concept == k),
                   keep=lambda meme: (meme.text_concept == k) == (meme.image_concept == k),
                   config={"hateful_prompts": (f"a {OBJECTS[k]}.",),
                           "benign_prompts": tuple(f"a {name}." for j, name in enumerate(OBJECTS) if j != k)})


# model -> its controls; with several, the score is their mean AUROC
CONTROLS: dict[str, tuple[Control, ...]] = {
    "clip_linear_image": tuple(image_is(k) for k in range(len(OBJECTS))),
    "clip_linear_text": tuple(text_is(k) for k in range(len(OBJECTS))),
    "clip_zeroshot": tuple(prompted_object(k) for k in range(len(OBJECTS))),
    "course_cnn": (Control(image_red_or_blue),),
    "course_lstm": (Control(text_in_group),),
    "course_transformer": (Control(text_in_group),),
    "llava_zeroshot": (Control(lambda meme: int(meme.text_concept == meme.image_concept),
                               config={"question": MATCH_QUESTION}),),
    "lmm_zeroshot": (Control(lambda meme: int(meme.text_concept == meme.image_concept),
                             config={"question": MATCH_QUESTION}),),
    "image_grid": (Control(image_in_group),),
    "image_region": (Control(image_in_group),),
    "text_bert": (Control(text_in_group),),
    "late_fusion": (Control(both_in_group),),  # its members', averaged (`control_auroc`)
}


def concepts(root: Path) -> dict[int, SyntheticMeme]:
    """meme id -> its concepts and scene, in the world fetched in `root` (checked against its files)."""
    from hatememes.data.memes import read_split

    config = section(load_params(root / "params.yaml"), "fetch.synthetic", SyntheticConfig)
    table = {}
    for split, memes in sample_memes(config).items():
        fetched = read_split(root / "data" / "memes", split)
        if [m.meme for m in memes] != fetched:
            raise AssertionError(f"{split}: the generator with {config} does not give back data/memes/{split}.jsonl")
        table.update({m.meme.id: m for m in memes})
    return table


def relabelled(items: MemeItems, table: dict[int, SyntheticMeme], control: Control) -> MemeItems:
    keep = [i for i, meme in enumerate(items.memes) if control.keep(table[meme.id])]
    memes = [dataclasses.replace(items.memes[i], label=control.label(table[items.memes[i].id])) for i in keep]
    features = {key: rows[keep] for key, rows in items.features.items()}
    return MemeItems(items.memes_dir, memes, features, items.with_images)


def control_auroc(root: Path, name: str, out: Path, split: str = "test_unseen") -> float:
    """`name` fitted (or built) on each of its controls' train labels and scored on `split`: the mean AUROC.
    An ensemble of the params (late_fusion) is its members fitted on the control, combined as the stage does."""
    params, table = load_params(root / "params.yaml"), concepts(root)
    values = []
    for n, control in enumerate(CONTROLS[name]):
        if name in params and "members" in params[name]:
            from hatememes.models.ensemble import Ensemble, EnsembleConfig

            ensemble = Ensemble(section(params, name, EnsembleConfig))
            scored = {member: fitted_scores(root, params, table, member, control, out / str(n) / member, split)
                      for member in ensemble.config.members}
            labels, ids = next(iter(scored.values()))[:2]
            if any(not np.array_equal(other[1], ids) for other in scored.values()):
                raise AssertionError(f"{name}'s members scored the memes of {split} in different orders")
            probs = np.column_stack([scored[member][2] for member in ensemble.config.members])
            values.append(auroc(labels, ensemble.predict_arrays(ids, probs)))
        else:
            labels, _, probs = fitted_scores(root, params, table, name, control, out / str(n), split)
            values.append(auroc(labels, probs))
    return float(np.mean(values))


def fitted_scores(root: Path, params: dict, table: dict[int, SyntheticMeme], name: str, control: Control, out: Path,
                  split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`name` fitted (or built) on one control's train labels, scored on `split`: (labels, ids, P(label))."""
    import torch
    from torch import nn

    from hatememes.files import read_json
    from hatememes.inference import score
    from hatememes.models import BuildContext, get_model_class
    from hatememes.training import LoopParams, train

    model_class = get_model_class(name)
    config = section(params, f"train.{name}.model", model_class.Config)
    config = dataclasses.replace(config, **control.config)
    memes, features_dir = root / "data" / "memes", root / "data" / "features"
    metas = {path.parent.name: read_json(path) for path in features_dir.glob("*/meta.json")}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = model_class.build(config, BuildContext(metas, tuple(m.text for m in load_items(
            memes, {}, "train", ()).memes)))
        features = {key: features_dir / key for key in model.inputs if key != "image"}
        items = {s: relabelled(load_items(memes, features, s, model.inputs), table, control)
                 for s in ("train", params["train"]["dev_split"], split)}
        train_items, dev_items = items["train"], items[params["train"]["dev_split"]]
        if isinstance(model, nn.Module):
            loop = section(params, f"train.{name}.loop", LoopParams)
            train(model, train_items, dev_items, loop, out)
            model.eval()
            batch_size = loop.eval_batch_size
        else:
            model.fit(train_items, dev_items)
            batch_size = 64
        ids, probs, _ = score(model, items[split], batch_size)
    return np.asarray(items[split].labels), np.asarray(ids), probs
