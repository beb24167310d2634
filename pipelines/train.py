"""Stage `train@MODEL`: fit one model (a section of params.yaml `train`), save it to models/MODEL and score
every split with it into eval/MODEL/predictions (the evaluate stage turns those into metrics).

    python pipelines/train.py clip_fusion --memes data/memes --features data/features --out models/clip_fusion \
        --predictions eval/clip_fusion/predictions
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml pipelines/train.py mmbt --memes ... --out ...

Torch models train with the shared Accelerate loop (`hatememes.training.train`; params `train.MODEL.loop`),
fitted ones (probes, numpy networks, zero-shot) with their own `fit`. A killed run resumes from
`<out>/checkpoints/` when started again with the same params and data. Scoring here, with the trained
weights still in memory, spares a second start-up, model load and feature read per model (MMF's
`train_val_test` and the HF Trainer's `predict` after `train` do the same); every id of every split is
checked to come back exactly once, from every process. With `loop.seeds`, the same model is trained again
from each of those seeds (a run is exactly the model trained with that `loop.seed`); their predictions go to
eval/MODEL/predictions/seeds/<seed>/ and their checkpoints to models/MODEL/seeds/<seed>/, for the report's
mean ± sd over seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import set_seed
from torch import nn

from hatememes import params as P
from hatememes.data.memes import read_split
from hatememes.data.readers import FEATURE_TENSORS, feature_inputs, load_items
from hatememes.data.sources import sha256_file
from hatememes.evaluation import write_predictions_folder
from hatememes.files import read_json, report_write_error, write_json
from hatememes.inference import score_splits
from hatememes.launch import relaunch
from hatememes.models import MODELS, BuildContext, get_model_class
from hatememes.process import exit_after
from hatememes.progress import quiet_library_bars
from hatememes.threads import cpu_threads
from hatememes.training import LoopParams, train, train_params


def main(argv: list[str] | None = None) -> int:
    quiet_library_bars()  # transformers' and the Hub's bars would write carriage returns into a log
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help=f"one of: {', '.join(sorted(MODELS))}")
    parser.add_argument("--memes", type=Path, default=Path("data/memes"))
    parser.add_argument("--features", type=Path, default=Path("data/features"))
    parser.add_argument("--out", type=Path, help="default: models/MODEL")
    parser.add_argument("--predictions", type=Path, help="default: eval/MODEL/predictions")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    out = args.out or Path("models") / args.model
    predictions = args.predictions or Path("eval") / args.model / "predictions"
    try:
        params = P.from_arguments(args)
        relaunch(params, __file__, sys.argv[1:] if argv is None else argv)
        seeds = more_seeds(params, args.model)  # checked before anything trains
        with cpu_threads(loop_threads(params, args.model)):
            model = fit_and_save(args.model, params, args.memes, args.features, out)
            score_and_save(model, args.model, params, args.memes, args.features, predictions)
            for seed in seeds:  # the same model from scratch: predictions for the report's mean ± sd
                replica_params = with_seed(params, args.model, seed)
                replica = fit_and_save(args.model, replica_params, args.memes, args.features,
                                       out / "seeds" / str(seed), save=False)
                score_and_save(replica, args.model, replica_params, args.memes, args.features,
                               predictions / "seeds" / str(seed))
    except Exception as error:
        return report_write_error("train", out, error)
    return 0


def loop_threads(params: dict, name: str) -> int:
    """`train.<name>.loop.threads` (0 for fitted models, which have no loop): torch's CPU threads for the stage."""
    if "loop" not in params["train"][name]:
        return 0
    threads = P.section(params, f"train.{name}.loop", LoopParams).threads
    if threads < 0:
        raise P.ParamsError(f"train.{name}.loop.threads = {threads}: 1 or more, or 0 for torch's own count")
    return threads


def seed_section(params: dict, name: str) -> str | None:
    """Where `train.<name>` keeps its `seed` and `seeds`: `loop` (torch models), `model` (a fitted model that
    draws random numbers: the numpy course networks), or nowhere (deterministic fits, zero-shot)."""
    section = params["train"][name]
    if "loop" in section:
        return "loop"
    return "model" if "seeds" in section.get("model", {}) else None


def more_seeds(params: dict, name: str) -> list[int]:
    """`train.<name>.loop.seeds` (or `.model.seeds`), checked: no repeats, not the model's own `seed`."""
    where = seed_section(params, name)
    if where is None:
        return []
    section = params["train"][name][where]
    seeds, seed = list(section.get("seeds") or []), section.get("seed", 0)
    if len(set(seeds)) != len(seeds) or seed in seeds:
        raise ValueError(f"train.{name}.{where}.seeds = {seeds}: each seed once, and not {where}.seed ({seed}), "
                         f"whose run is the model itself")
    return seeds


def with_seed(params: dict, name: str, seed: int) -> dict:
    """The params with `train.<name>.loop.seed` (or `.model.seed`) set to `seed` (and no further seeds)."""
    import copy

    replica = copy.deepcopy(params)
    replica["train"][name][seed_section(params, name)].update(seed=seed, seeds=[])
    return replica


def fit_and_save(name: str, params: dict, memes: Path, features_dir: Path, out: Path, save: bool = True):
    """The fitted model (its best-on-dev weights), also saved to `out` (with `save`; else only its training
    state: checkpoints and the dev curve)."""
    model_class = get_model_class(name)
    dev_split = train_params(params, check=(name,)).dev_split
    config = P.section(params, f"train.{name}.model", model_class.Config)
    available = {path.parent.name: path for path in sorted(features_dir.glob("*/meta.json"))}
    context = BuildContext({key: read_json(path) for key, path in available.items()},
                           tuple(meme.text for meme in read_split(memes, "train")), name)
    set_seed(params["train"][name].get("loop", {}).get("seed", 0))  # the initial weights follow the seed too
    try:
        model = model_class.build(config, context)  # the model instance says which inputs it reads
    except KeyError as error:  # a builder reading context.feature_meta[<extractor>] that was never extracted
        missing = error.args[0] if error.args else None
        if missing not in FEATURE_TENSORS or missing in context.feature_meta:
            raise
        raise FileNotFoundError(f"{features_dir / missing / 'meta.json'}: not found; {name} needs the {missing!r} "
                                f"features (run: python pipelines/features.py {missing} ...)") from None
    check_fine_grained_labels(name, model, memes)
    features = {key: features_dir / key for key in feature_inputs(model.inputs)}
    train_items = load_items(memes, features, "train", model.inputs)
    dev_items = load_items(memes, features, dev_split, model.inputs)
    summary = {"name": name, "dev_split": dev_split, "num_processes": PartialState().num_processes}
    if isinstance(model, nn.Module):
        loop = P.section(params, f"train.{name}.loop", LoopParams)
        section = P.resolved(params)["train"][name]
        fingerprint = {"params": section, "memes": memes_hashes(memes),
                       "inputs": input_digests(section, list(features.values()))}
        discard_stale_checkpoints(out / "checkpoints", fingerprint)
        result = train(model, train_items, dev_items, loop, out)
        summary.update(best_dev_auroc=result.best_auroc, best_epoch=result.best_epoch, epochs_run=result.epochs_run)
    else:
        model.fit(train_items, dev_items)
    if save and PartialState().is_main_process:  # model.json goes last: without it the folder is not a model
        (out / "model.json").unlink(missing_ok=True)
        model.save_pretrained(out)
        write_json(out / "params.json", P.resolved(params))
        write_json(out / "model.json", summary)
        print(f"{name}: saved to {out}")
    return model


def check_fine_grained_labels(name: str, model, memes: Path) -> None:
    """A model with fine-grained heads needs the memes' fine-grained labels to train on."""
    from hatememes.data.fine_grained import fine_labels_path

    if "fine_grained" in model.inputs and not fine_labels_path(memes, "train").is_file():
        raise FileNotFoundError(f"train.{name}.model.fine_grained.enabled is true, but "
                                f"{fine_labels_path(memes, 'train')} does not exist: these memes have no "
                                "fine-grained labels (set fetch.fine_grained to the WOAH 2021 annotations folder)")


def score_and_save(model, name: str, params: dict, memes: Path, features_dir: Path, out: Path) -> None:
    """Every split scored with the model in memory (torch models at `train.<name>.loop.eval_batch_size`)."""
    if isinstance(model, nn.Module):
        model.eval()
        batch_size = P.section(params, f"train.{name}.loop", LoopParams).eval_batch_size
    else:
        batch_size = 64  # fitted models score their own way
    predictions, fine_grained = score_splits(model, memes, features_dir, batch_size)
    if PartialState().is_main_process:
        write_predictions_folder(out, predictions, fine_grained)
        print(f"{name}: {sum(len(p.ids) for p in predictions.values())} memes scored -> {out}")


def memes_hashes(memes: Path) -> dict:
    return {split: value["sha256"] for split, value in read_json(memes / "manifest.json")["splits"].items()}


def input_digests(section: dict, folders: list[Path]) -> dict[str, str]:
    """sha256 of every file the run starts from besides the memes: the feature folders it reads and any local
    file or folder its params name (the demo's LLaVA base, a checkpoint). Paths alone are not enough: a stage
    upstream rewrites `data/llava-tiny` in place, and a run must not resume on top of the old one."""
    paths = list(folders) + [Path(value) for value in string_values(section) if is_local_path(value)]
    files = [file for root in paths
             for file in ([root] if root.is_file() else sorted(path for path in root.rglob("*") if path.is_file()))]
    return {str(file): sha256_file(file) for file in files}


def string_values(value) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in string_values(item)]
    if isinstance(value, list | tuple):
        return [text for item in value for text in string_values(item)]
    return [value] if isinstance(value, str) else []


def is_local_path(value: str) -> bool:
    try:
        return bool(value.strip()) and Path(value).exists()
    except (OSError, ValueError):  # a prompt is no path: too long, or a NUL in it
        return False


def discard_stale_checkpoints(checkpoints: Path, fingerprint: dict) -> None:
    """Resume only a run of the same params and data: else start over, and say so."""
    import shutil

    stamp = checkpoints / "fingerprint.json"
    if checkpoints.exists() and (not stamp.is_file() or read_json(stamp) != fingerprint):
        if PartialState().is_main_process:
            print(f"{checkpoints}: made with other params or data; starting afresh")
            shutil.rmtree(checkpoints)
    PartialState().wait_for_everyone()
    if PartialState().is_main_process:
        write_json(stamp, fingerprint)


if __name__ == "__main__":
    exit_after(main())  # without the interpreter's teardown (hatememes.process)
