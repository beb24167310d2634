"""Stage `explain`: what the image model looks at, and how easily it is fooled (CS7643's visualisation
assignment): saliency overlays of chosen memes and the AUROC under FGSM at a few eps.

    python pipelines/explain.py --memes data/memes --model models/course_cnn --out eval/course_cnn/extra

Writes `saliency_<id>.png` overlays, `fgsm.json` ({eps: AUROC}, eps on the 0-1 pixel scale) and
`fgsm.png`; the report embeds everything in `eval/<model>/extra/`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from hatememes import params as P  # noqa: E402
from hatememes.data.readers import load_items  # noqa: E402
from hatememes.explain import fgsm_auroc, numpy_cnn_model, saliency, save_overlay  # noqa: E402
from hatememes.files import write_json  # noqa: E402
from hatememes.inference import load_model  # noqa: E402
from hatememes.models.course.numpy_cnn import CourseCNN, pixel_values  # noqa: E402
from hatememes.process import exit_after  # noqa: E402


@dataclass(frozen=True)
class ExplainParams:
    split: str = "test_unseen"
    num_memes: int = 4  # saliency overlays: the first hateful and benign memes of the split, alternating
    eps: tuple[float, ...] = (0.0, 0.004, 0.008, 0.016, 0.031)  # FGSM steps on the 0-1 pixel scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memes", type=Path, default=Path("data/memes"))
    parser.add_argument("--model", type=Path, default=Path("models/course_cnn"))
    parser.add_argument("--out", type=Path, default=Path("eval/course_cnn/extra"))
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    config = P.section(P.from_arguments(args), "explain", ExplainParams)
    model, name = load_model(args.model)
    if not isinstance(model, CourseCNN):
        raise SystemExit(f"explain: {args.model} is {name}; saliency and FGSM need the pixel model course_cnn")
    items = load_items(args.memes, {}, config.split, ("image",))
    labelled = [items[i] for i in range(len(items)) if items.memes[i].label != -1]
    pixels = torch.from_numpy(pixel_values(labelled, model.config.image_size))  # (N, 3, S, S) in [-1, 1]
    labels = torch.tensor([item["label"] for item in labelled], dtype=torch.float32)
    image_model = numpy_cnn_model(model)
    args.out.mkdir(parents=True, exist_ok=True)
    # The numpy CNN sees pixels in [-1, 1]: an eps on the 0-1 scale is twice as large there.
    aurocs = fgsm_auroc(image_model, pixels, labels, [2 * eps for eps in config.eps], pixel_range=(-1.0, 1.0))
    fgsm = {f"{eps:g}": auroc for eps, auroc in zip(config.eps, aurocs.values(), strict=True)}
    write_json(args.out / "fgsm.json", {"model": name, "split": config.split, "auroc_at_eps": fgsm})
    plot_fgsm(fgsm, name, config.split, args.out / "fgsm.png")
    saliency_files = {}
    for index in chosen(labels.numpy(), config.num_memes):
        heat = saliency(image_model, pixels[index : index + 1])[0]  # (S, S)
        heat = heat / heat.max().clamp_min(1e-12)
        path = args.out / f"saliency_{labelled[index]['id']}.png"
        save_overlay(labelled[index]["image"], heat, path)
        saliency_files[path.name] = (labelled[index]["id"], int(labels[index]))
    write_json(args.out / "captions.json", captions(name, config.split, saliency_files))
    print(f"explain {name}: FGSM AUROC " + ", ".join(f"eps {k}: {v:.3f}" for k, v in fgsm.items()))
    return 0


def captions(name: str, split: str, saliency_files: dict[str, tuple]) -> dict[str, str]:
    """What each file shows and what to look for: the report's captions (eval/<model>/extra/captions.json)."""
    fgsm = (f"{name} under FGSM on {split}: each pixel moved by eps in the direction that raises the loss on "
            f"the true label (the sign of its gradient). Look at how fast the AUROC falls as eps grows: a robust "
            f"model stays near its eps-0 value; below 0.5 the attack has turned the ranking around.")
    result = {"fgsm.png": fgsm, "fgsm.json": f"The FGSM curve's numbers: AUROC on {split} at each eps."}
    for file, (meme_id, label) in saliency_files.items():
        result[file] = (f"Input-gradient saliency of {name} on meme {meme_id} (label {label}): the brighter, the "
                        f"more the pixel moves the score. Look at whether it sits on the object or on the caption.")
    return result


def chosen(labels: np.ndarray, count: int) -> list[int]:
    hateful, benign = np.flatnonzero(labels == 1).tolist(), np.flatnonzero(labels == 0).tolist()
    alternating = [i for pair in zip(hateful, benign, strict=False) for i in pair]
    return alternating[:count]


def plot_fgsm(aurocs: dict[str, float], name: str, split: str, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(5, 3.2))
    axes.plot([float(eps) * 255 for eps in aurocs], list(aurocs.values()), marker="o")
    axes.axhline(0.5, color="grey", linestyle=":", label="chance")
    axes.set(xlabel="FGSM eps (x 1/255)", ylabel=f"AUROC on {split}", title=f"{name} under FGSM", ylim=(0, 1))
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    exit_after(main())  # without the interpreter's teardown (hatememes.process)
