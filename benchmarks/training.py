"""Cost of the shared training loop: its samples/s against a bare PyTorch loop's on the same model, batches
and optimizer, alternated in one process.

    python benchmarks/training.py                    # clip_fusion: 3 epochs, 10 rounds; mmbt: 1 epoch, 3 rounds
    python benchmarks/training.py --models mmbt --epochs 2 --rounds 5

Needs data/memes and data/features (a demo `dvc repro`); the params are `train.<model>` of params.yaml, with
`epochs` set from the command line and `patience` = epochs, so that every run trains every epoch.

Each round runs three loops, in an order that rotates from round to round, each on a fresh copy of the same
initial model, with the same seed, shuffle order, batches, collate, fused AdamW, schedule, loss and clipping:

    ours      `hatememes.training.train` as a stage calls it: Accelerate, the loss logged to dvclive every
              step, dev scoring after each epoch, best.safetensors written on improvement, a checkpoint at each
              epoch's end (and every `checkpoint_every` steps), the best weights loaded at the end.
    bare      plain PyTorch: forward, loss, backward, clip, optimizer and schedule steps, nothing else.
    bare+dev  bare, plus what ours computes besides training: dev scoring at `eval_batch_size` after each
              epoch, its AUROC, an in-memory copy of the best weights, loaded at the end. No files.

ours/bare is what a user pays over a minimal loop; ours/(bare+dev) is the machinery alone (Accelerate, dvclive,
checkpoint and best-weight files). Each run is timed from the call to its return (optimizer, schedule, training,
scoring, restore); the model's copy and the data's loading are outside. A ratio is of samples/s (bare seconds /
ours seconds) within one round: the machine's noise (2 cores shared with other jobs) is paired away; figures
are medians over the rounds with [min, max]. The overhead in seconds is ours minus the other, same epochs.
Both clocks are printed: wall seconds, and this process's CPU seconds, the steadier measure on a shared
machine, which misses waits on the disk (checkpoints). Torch runs one thread (`--threads`): with two, on the
2 shared cores, one clip_fusion run took anywhere from 0.3 to 18 s.

Before the rounds one untimed round on two batches warms imports (dvclive, transformers' schedules) and
kernels; what ours alone imports in a fresh process (accelerate, dvclive), as a `dvc repro` stage pays it
once, is printed on its own. After the rounds, ours' final weights are compared with bare+dev's: the same
best epoch must give the same weights (the check that both loops train the same thing).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import get_scheduler

from hatememes import params as P
from hatememes.data.memes import read_split
from hatememes.data.readers import MemeItems, load_items
from hatememes.files import read_json
from hatememes.losses import make_loss
from hatememes.models import BuildContext, get_model_class
from hatememes.training import LoopParams, auroc_or_nan, train

DEFAULTS = {"clip_fusion": {"epochs": 3, "rounds": 10}, "mmbt": {"epochs": 1, "rounds": 3}}  # else 1 and 3
LOOPS = ("ours", "bare", "bare+dev")
CLOCKS = ("wall", "cpu")


def bare(model, train_items: MemeItems, dev_items: MemeItems, loop: LoopParams, score_dev: bool) -> None:
    """The plain PyTorch loop; with `score_dev`, dev scoring after each epoch and the best weights restored."""
    set_seed(loop.seed)
    shuffle = torch.Generator()
    loader = DataLoader(train_items, batch_size=loop.batch_size, shuffle=True, generator=shuffle,
                        collate_fn=model.collate, num_workers=loop.num_workers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=loop.lr,
                                  weight_decay=loop.weight_decay, fused=True)
    scheduler = get_scheduler(loop.schedule, optimizer, num_warmup_steps=loop.warmup_steps,
                              num_training_steps=loop.epochs * len(loader))
    labels = train_items.labels
    loss_fn = make_loss(loop.loss.name, loop.loss, class_counts=(labels.count(0), labels.count(1)))
    best_auroc, best_weights = -math.inf, None
    for epoch in range(loop.epochs):
        shuffle.manual_seed(loop.seed * 100_003 + epoch)  # ours' shuffle order
        model.train()
        for batch in loader:  # what ours does per step, less Accelerate's wrappers, dvclive and the bar
            logits = model(batch)  # (B,)
            loss = loss_fn(logits.float(), batch["labels"].float())
            loss.backward()
            if loop.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), loop.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        if score_dev:
            auroc = dev_auroc(model, dev_items, loop.eval_batch_size)
            if auroc > best_auroc:
                best_auroc = auroc
                best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_weights is not None:
        model.load_state_dict(best_weights)


def dev_auroc(model, items: MemeItems, batch_size: int) -> float:
    model.eval()
    probs, labels = [], []
    with torch.no_grad():
        for batch in DataLoader(items, batch_size=batch_size, collate_fn=model.collate):
            probs.append(torch.sigmoid(model(batch).float()))
            labels.append(batch["labels"])
    model.train()
    return auroc_or_nan(torch.cat(probs).numpy(), torch.cat(labels).numpy())


def ours(model, train_items: MemeItems, dev_items: MemeItems, loop: LoopParams) -> None:
    with tempfile.TemporaryDirectory() as out:  # its checkpoints, best weights and dvclive files
        train(model, train_items, dev_items, loop, Path(out))


def run(name: str, initial, train_items: MemeItems, dev_items: MemeItems, loop: LoopParams) -> tuple[dict, object]:
    """({"wall": seconds, "cpu": this process's CPU seconds}, the trained model) of one loop on a fresh copy of
    `initial`."""
    model = copy.deepcopy(initial)
    wall, cpu = time.perf_counter(), time.process_time()
    if name == "ours":
        ours(model, train_items, dev_items, loop)
    else:
        bare(model, train_items, dev_items, loop, score_dev=name == "bare+dev")
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}, model


def head(items: MemeItems, count: int) -> MemeItems:
    return MemeItems(items.memes_dir, items.memes[:count], {k: v[:count] for k, v in items.features.items()},
                     items.with_images)


def setup(model_name: str, args, params: dict) -> tuple:
    model_class = get_model_class(model_name)
    config = P.section(params, f"train.{model_name}.model", model_class.Config)
    loop = P.section(params, f"train.{model_name}.loop", LoopParams)
    if loop.grad_accum != 1 or loop.mixed_precision != "no":
        raise SystemExit(f"{model_name}: the bare loop has no accumulation or mixed precision; "
                         "benchmark it with grad_accum 1 and mixed_precision 'no'")
    epochs = args.epochs or DEFAULTS.get(model_name, {}).get("epochs", 1)
    loop = dataclasses.replace(loop, epochs=epochs, patience=epochs)
    meta = {p.parent.name: read_json(p) for p in args.features.glob("*/meta.json")}
    torch.manual_seed(0)
    model = model_class.build(config, BuildContext(meta, tuple(m.text for m in read_split(args.memes, "train"))))
    features = {name: args.features / name for name in model.inputs if name != "image"}
    train_items = load_items(args.memes, features, "train", model.inputs)
    dev_items = load_items(args.memes, features, "dev_seen", model.inputs)
    return model, train_items, dev_items, loop


def max_difference(a, b) -> float:
    other = b.state_dict()
    return max((v.float() - other[k].float()).abs().max().item() for k, v in a.state_dict().items())


def benchmark(model_name: str, args, params: dict) -> dict:
    initial, train_items, dev_items, loop = setup(model_name, args, params)
    warm = dataclasses.replace(loop, epochs=1, patience=1)
    for name in LOOPS:
        run(name, initial, head(train_items, 2 * loop.batch_size), head(dev_items, loop.eval_batch_size), warm)
    seconds, trained = {clock: {name: [] for name in LOOPS} for clock in CLOCKS}, {}
    for round_ in range(args.rounds or DEFAULTS.get(model_name, {}).get("rounds", 3)):
        order = LOOPS[round_ % 3:] + LOOPS[:round_ % 3]
        for name in order:
            elapsed, trained[name] = run(name, initial, train_items, dev_items, loop)  # the last round's kept
            for clock in CLOCKS:
                seconds[clock][name].append(elapsed[clock])
        print(f"  {model_name} round {round_ + 1}: " + ", ".join(
            f"{n} {seconds['wall'][n][-1]:.2f} s ({seconds['cpu'][n][-1]:.2f} cpu)" for n in order), flush=True)
    return {"model": model_name, "loop": loop, "samples": loop.epochs * len(train_items), "seconds": seconds,
            "parity": max_difference(trained["ours"], trained["bare+dev"])}


def import_seconds() -> float:
    """What importing accelerate and dvclive costs a fresh process that has imported torch and transformers."""
    code = ("import time, torch, transformers; start = time.perf_counter(); import accelerate, dvclive; "
            "print(time.perf_counter() - start)")
    return statistics.median(float(subprocess.check_output([sys.executable, "-c", code])) for _ in range(3))


def spread(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def row(result: dict, clock: str) -> str:
    seconds, samples = result["seconds"][clock], result["samples"]
    rate = {name: samples / statistics.median(values) for name, values in seconds.items()}
    pairs = {name: list(zip(seconds[name], seconds["ours"], strict=True)) for name in LOOPS[1:]}
    ratio = {name: [b / o for b, o in pairs[name]] for name in LOOPS[1:]}
    extra = {name: [o - b for b, o in pairs[name]] for name in LOOPS[1:]}
    return (f"{result['model']:12s} {result['loop'].epochs:6d} {len(seconds['ours']):6d} {clock:>5s} "
            f"{rate['ours']:14.1f} {rate['bare']:7.1f} {rate['bare+dev']:8.1f}  {spread(ratio['bare'], 3):22s} "
            f"{spread(ratio['bare+dev'], 3):22s} {spread(extra['bare'], 2):22s} {spread(extra['bare+dev'], 2)}")


def report(results: list[dict], imports: float) -> None:
    print(f"\n{'model':12s} {'epochs':>6s} {'rounds':>6s} {'clock':>5s} {'samples/s ours':>14s} {'bare':>7s} "
          f"{'bare+dev':>8s}  {'ours/bare':22s} {'ours/(bare+dev)':22s} {'ours-bare s':22s} ours-(bare+dev) s")
    for result in results:
        for clock in CLOCKS:
            print(row(result, clock))
    print(f"\n{torch.get_num_threads()} torch threads. Ratios: ours' samples/s over the other's, "
          "paired within a round; median [min, max] over the rounds. wall: elapsed seconds; cpu: this process's "
          "CPU seconds (less noisy on a shared machine; misses waits on the disk).")
    print("parity, max |weight difference| of ours and bare+dev after training: "
          + ", ".join(f"{result['model']} {result['parity']:.1e}" for result in results))
    print(f"imports only ours pays, once per process (accelerate, dvclive; median of 3 fresh processes): "
          f"{imports:.2f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--models", nargs="+", default=list(DEFAULTS))
    parser.add_argument("--epochs", type=int, default=0, help="for every model (default: clip_fusion 3, mmbt 1)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="rounds of ours, bare and bare+dev, for every model (default: clip_fusion 10, mmbt 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1; see above)")
    parser.add_argument("--memes", type=Path, default=Path("data/memes"))
    parser.add_argument("--features", type=Path, default=Path("data/features"))
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    params = P.from_arguments(args)
    torch.set_num_threads(args.threads)
    results = [benchmark(name, args, params) for name in args.models]
    report(results, import_seconds())


if __name__ == "__main__":
    main()
