"""The one training loop: Accelerate, AdamW, warmup + decay, early stopping on dev AUROC, resumable.

    result = train(model, train_items, dev_items, loop_params, out_dir)     # fits in place, best weights loaded
    ids, probs = predict(model, items, batch_size=64)                      # P(hateful), every id exactly once

The same code runs on CPU, one GPU, several GPUs (DDP), DeepSpeed or FSDP: start it with
`accelerate launch --config_file configs/accelerate/<setup>.yaml`. Checkpoints (`save_state`) are written
every `checkpoint_every` optimizer steps and at each epoch's end under `out_dir/checkpoints/`; a rerun
resumes from the newest complete one, mid-epoch through `skip_first_batches`, and ends with the same
weights as an uninterrupted run (the shuffle order is a function of seed and epoch alone).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from hatememes.data.readers import MemeItems
from hatememes.losses import LossConfig, make_loss
from hatememes.progress import progress


@dataclass(frozen=True)
class LoopParams:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1.0e-4
    weight_decay: float = 1.0e-4
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off
    grad_accum: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    patience: int = 5  # epochs without a better dev AUROC before stopping
    checkpoint_every: int = 100  # optimizer steps
    num_workers: int = 0
    seed: int = 0
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass
class LoopState:
    """Where training stands; saved as JSON beside every checkpoint."""

    epoch: int = 0
    batches_done: int = 0  # in the current epoch
    step: int = 0  # optimizer steps
    best_auroc: float = -math.inf
    best_epoch: int = -1
    epochs_without_gain: int = 0
    history: list = field(default_factory=list)


@dataclass(frozen=True)
class TrainResult:
    best_auroc: float
    best_epoch: int
    epochs_run: int
    history: list


def train(model, train_items: MemeItems, dev_items: MemeItems, params: LoopParams, out_dir: Path) -> TrainResult:
    """Fit a torch classifier (see `hatememes.models`) and load its best-on-dev weights into it."""
    out_dir = Path(out_dir)
    accelerator = Accelerator(mixed_precision=params.mixed_precision, gradient_accumulation_steps=params.grad_accum)
    if params.mixed_precision == "fp16" and accelerator.device.type == "cpu":  # Accelerate ignores it silently
        accelerator.print("train: mixed_precision fp16 needs a GPU; on CPU this run trains in fp32 "
                          "(bf16 is the mixed precision CPUs support)")
    set_seed(params.seed)
    shuffle = torch.Generator()  # the loader draws only from this, so a resumed run sees the same batches
    train_loader = DataLoader(train_items, batch_size=params.batch_size, shuffle=True, generator=shuffle,
                              collate_fn=model.collate, num_workers=params.num_workers)
    dev_loader = DataLoader(dev_items, batch_size=params.batch_size, collate_fn=model.collate)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=params.lr,
                                  weight_decay=params.weight_decay, fused=True)  # one kernel: 5x faster on CPU
    total_steps = params.epochs * math.ceil(len(train_loader) / params.grad_accum)
    from transformers import get_scheduler  # transformers' import (seconds) is paid by the runs that train

    scheduler = get_scheduler(params.schedule, optimizer, num_warmup_steps=params.warmup_steps,
                              num_training_steps=total_steps)
    labels = train_items.labels
    loss_fn = make_loss(params.loss.name, params.loss, class_counts=(labels.count(0), labels.count(1)))
    prepared = accelerator.prepare(model, optimizer, train_loader, dev_loader, scheduler)
    model, optimizer, train_loader, dev_loader, scheduler = prepared
    checkpoints = out_dir / "checkpoints"
    state = resume(accelerator, checkpoints)
    live = make_live(out_dir, resume=state.step > 0, enabled=accelerator.is_main_process)
    while state.epoch < params.epochs and state.epochs_without_gain < params.patience:
        shuffle.manual_seed(params.seed * 100_003 + state.epoch)
        loader = accelerator.skip_first_batches(train_loader, state.batches_done)
        run_epoch(model, loader, optimizer, scheduler, loss_fn, accelerator, params, state, checkpoints, live)
        dev_auroc = auroc_or_nan(*predict_loader(model, dev_loader, accelerator)[1:])
        improved = dev_auroc > state.best_auroc
        if improved:
            state.best_auroc, state.best_epoch, state.epochs_without_gain = dev_auroc, state.epoch, 0
            save_best(accelerator, model, checkpoints)
        else:
            state.epochs_without_gain += 1
        state.history.append({"epoch": state.epoch, "step": state.step, "dev_auroc": dev_auroc})
        log_epoch(live, accelerator, state, dev_auroc, improved)
        state.epoch, state.batches_done = state.epoch + 1, 0
        save_checkpoint(accelerator, state, checkpoints)
    if live is not None:
        live.end()
    load_best(accelerator, model, checkpoints)
    return TrainResult(state.best_auroc, state.best_epoch, state.epoch, state.history)


def run_epoch(model, loader, optimizer, scheduler, loss_fn, accelerator, params, state, checkpoints, live) -> None:
    model.train()
    bar = progress(loader, desc=f"epoch {state.epoch}", unit="batch", disable=not accelerator.is_local_main_process)
    for batch in bar:
        with accelerator.accumulate(model):
            logits = model(batch)  # (B,)
            loss = loss_fn(logits.float(), batch["labels"].float())
            accelerator.backward(loss)
            if accelerator.sync_gradients and params.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), params.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        state.batches_done += 1
        if accelerator.sync_gradients:
            state.step += 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if live is not None:
                live.log_metric("train/loss", loss.item(), plot=False)
            if state.step % params.checkpoint_every == 0:
                save_checkpoint(accelerator, state, checkpoints)


def predict_loader(model, loader, accelerator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, probs, labels) of every item of a prepared loader, gathered from all processes."""
    model.eval()
    ids, probs, labels = [], [], []
    with torch.no_grad():
        for batch in loader:
            logits = model(batch)
            gathered = accelerator.gather_for_metrics((batch["ids"], torch.sigmoid(logits.float()), batch["labels"]))
            for store, values in zip((ids, probs, labels), gathered, strict=True):
                store.append(values.cpu())
    model.train()
    return tuple(torch.cat(values).numpy() for values in (ids, probs, labels))


def predict(model, items: MemeItems, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(ids, P(hateful)) of `items` in their order, on every process; fails unless each id comes back once."""
    accelerator = Accelerator()
    loader = accelerator.prepare(DataLoader(items, batch_size=batch_size, collate_fn=model.collate))
    model = accelerator.prepare(model)
    ids, probs, _ = predict_loader(model, loader, accelerator)
    expected = items.ids
    if sorted(ids.tolist()) != sorted(expected):
        raise RuntimeError(f"predict: scored {len(ids)} rows for {len(expected)} memes; ids were lost or doubled")
    order = {meme_id: row for row, meme_id in enumerate(ids.tolist())}
    return np.asarray(expected), probs[[order[meme_id] for meme_id in expected]]


def auroc_or_nan(probs: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of the labelled rows (labels >= 0) as the Mann-Whitney U over midranks (ties count half), NaN
    for one class; numpy only, so that a stage that trains does not pay scikit-learn's import (2 s)."""
    known = labels >= 0
    labels, probs = labels[known], probs[known]
    positives = int((labels == 1).sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(probs, return_inverse=True, return_counts=True)
    midranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based, the mean rank of each tie group
    return float((midranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def save_checkpoint(accelerator: Accelerator, state: LoopState, checkpoints: Path) -> None:
    """`save_state` into a temporary folder, then rename: a killed run never leaves a half checkpoint."""
    final = checkpoints / f"step-{state.step:08d}-batch-{state.batches_done:06d}-epoch-{state.epoch:04d}"
    partial = final.with_name(final.name + ".partial")
    accelerator.save_state(str(partial), safe_serialization=True)
    if accelerator.is_main_process:
        (partial / "loop_state.json").write_text(json.dumps(dataclasses.asdict(state)))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in sorted(checkpoints.glob("step-*")):
            if old != final and not old.name.endswith(".partial"):
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def resume(accelerator: Accelerator, checkpoints: Path) -> LoopState:
    complete = sorted(p for p in checkpoints.glob("step-*") if (p / "loop_state.json").is_file()
                      and not p.name.endswith(".partial"))
    if not complete:
        return LoopState()
    accelerator.load_state(str(complete[-1]))
    state = LoopState(**json.loads((complete[-1] / "loop_state.json").read_text()))
    accelerator.print(f"resuming from {complete[-1].name} (epoch {state.epoch}, batch {state.batches_done})")
    return state


def save_best(accelerator: Accelerator, model, checkpoints: Path) -> None:
    """`best.safetensors`: what training changes (trainable parameters and buffers), not a frozen base —
    for LoRA on a 7B model that is megabytes instead of 14 GB per improvement."""
    state = accelerator.get_state_dict(model)  # gathers sharded (FSDP/DeepSpeed) weights; on every rank
    if accelerator.is_main_process:
        checkpoints.mkdir(parents=True, exist_ok=True)
        frozen = frozen_parameter_names(accelerator.unwrap_model(model))
        weights = {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in frozen}
        temporary = checkpoints / ".best.safetensors.partial"
        save_file(weights, str(temporary))
        temporary.replace(checkpoints / "best.safetensors")
    accelerator.wait_for_everyone()


def load_best(accelerator: Accelerator, model, checkpoints: Path) -> None:
    best = checkpoints / "best.safetensors"
    if not best.is_file():
        return
    model = accelerator.unwrap_model(model)
    missing, unexpected = model.load_state_dict(load_file(str(best)), strict=False)
    not_frozen = set(missing) - frozen_parameter_names(model)
    if unexpected or not_frozen:
        raise RuntimeError(f"{best}: does not match the model (missing trainable weights: {sorted(not_frozen)[:5]}, "
                           f"unexpected: {sorted(unexpected)[:5]})")


def frozen_parameter_names(model) -> set[str]:
    return {name for name, parameter in model.named_parameters(remove_duplicate=False) if not parameter.requires_grad}


def make_live(out_dir: Path, resume: bool, enabled: bool):
    if not enabled:
        return None
    from dvclive import Live

    return Live(dir=str(out_dir / "dvclive"), dvcyaml=None, save_dvc_exp=False, resume=resume, report=None)


def log_epoch(live, accelerator: Accelerator, state: LoopState, dev_auroc: float, improved: bool) -> None:
    mark = " (best)" if improved else ""
    accelerator.print(f"epoch {state.epoch}: dev AUROC {dev_auroc:.4f}{mark}")
    if live is not None:
        live.log_metric("dev/auroc", dev_auroc)
        live.next_step()


@dataclass(frozen=True)
class TrainParams:
    dev_split: str = "dev_seen"


def train_params(params: dict, check: tuple[str, ...] | None = None) -> TrainParams:
    """The `train` section: `dev_split` and one `{model:, loop:}` section per model name.

    Torch models need `loop` (LoopParams), fitted ones must not have it. Every section's name is checked;
    its keys and values for the models in `check` (default: all, which imports every model's module)."""
    from torch import nn

    from hatememes.models import MODELS, get_model_class
    from hatememes.params import ParamsError, from_dict, section

    where = " + ".join(params.get("_sources", ["params"]))
    raw = params.get("train", {})
    config = from_dict(TrainParams, {k: v for k, v in raw.items() if k == "dev_split"}, where, "train.")
    for name in set(raw) - {"dev_split"}:
        if name not in MODELS:
            raise ParamsError(f"{where}: unknown key train.{name} (models: {', '.join(sorted(MODELS))})")
        if check is not None and name not in check:
            continue
        model_class = get_model_class(name)
        needs_loop = issubclass(model_class, nn.Module)
        allowed = {"model", "loop"} if needs_loop else {"model"}
        if set(raw[name]) != allowed:
            raise ParamsError(f"{where}: train.{name} must have exactly the keys {sorted(allowed)}")
        section(params, f"train.{name}.model", model_class.Config)
        if needs_loop:
            section(params, f"train.{name}.loop", LoopParams)
    return config
