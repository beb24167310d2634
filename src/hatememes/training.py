"""The one training loop: Accelerate, AdamW, warmup + decay, early stopping on dev AUROC, resumable.

    result = train(model, train_items, dev_items, loop_params, out_dir)     # fits in place, best weights loaded
    ids, probs = predict(model, items, batch_size=64)                      # P(hateful), every id exactly once
    ids, probs, fine = predict_all(model, items)           # + the fine-grained heads' probabilities, or None

The same code runs on CPU, one GPU, several GPUs (DDP), DeepSpeed or FSDP: start it with
`accelerate launch --config_file configs/accelerate/<setup>.yaml`. `loop.batch_size` is the global batch
(the papers' sizes), split between the processes; `loop.grad_accum` and `loop.grad_clip` hold under DeepSpeed
too. Checkpoints (`save_state`, holding what training changes: trainable parameters, buffers, optimizer,
scheduler and RNG states) are written every `checkpoint_every` optimizer steps and at each epoch's end under
`out_dir/checkpoints/`, the newest `keep_checkpoints` kept; a rerun resumes from the newest complete one,
mid-epoch through `skip_first_batches`, and ends with the same weights as an uninterrupted run (the shuffle
order is a function of seed and epoch alone). Out of memory on one process, training starts over with half the
micro-batch and twice the accumulation (the same effective batch), and scoring halves its batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import (
    SAFE_MODEL_NAME,
    DataLoaderConfiguration,
    DeepSpeedPlugin,
    DistributedType,
    GradientAccumulationPlugin,
    set_seed,
)
from accelerate.utils.memory import clear_device_cache
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from hatememes.data.readers import MemeItems
from hatememes.losses import LossConfig, make_loss
from hatememes.metrics import auroc
from hatememes.params import TrainParams, dev_split
from hatememes.progress import progress
from hatememes.schedules import lr_schedule


@dataclass(frozen=True)
class LoopParams:
    epochs: int = 20
    batch_size: int = 64  # the global batch, split between the processes
    eval_batch_size: int = 64  # scoring: dev while training, every split after it (global too)
    lr: float = 1.0e-4
    weight_decay: float = 1.0e-4  # AdamW's, on every weight but biases and norms (decay_parameter_names)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off
    grad_accum: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    patience: int = 5  # epochs without a better dev AUROC before stopping
    checkpoint_every: int = 100  # optimizer steps
    keep_checkpoints: int = 1  # the newest complete checkpoints kept
    num_workers: int = 0
    # torch CPU threads while the model trains and scores (0: torch's own count, every core). 1 makes a
    # model of many small matrix products reproducible on CPU where 2 MKL threads were not (course_lstm)
    threads: int = 0
    seed: int = 0
    # more seeds to train the same model with, from scratch (initial weights and batches follow the seed):
    # their predictions go beside the model's (predictions/seeds/<seed>/), for the report's mean ± sd; the
    # model saved is `seed`'s. Empty: one seed
    seeds: tuple[int, ...] = ()
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
    batch_size: int = 0  # the micro-batch and accumulation the run trains with (0: not recorded)
    grad_accum: int = 0


@dataclass(frozen=True)
class TrainResult:
    best_auroc: float
    best_epoch: int
    epochs_run: int
    history: list
    batch_size: int  # the micro-batch it trained with: loop.batch_size, or less after running out of memory
    grad_accum: int  # batch_size * grad_accum is the effective batch of the params


def train(model, train_items: MemeItems, dev_items: MemeItems, params: LoopParams, out_dir: Path) -> TrainResult:
    """Fit a torch classifier (see `hatememes.models`) and load its best-on-dev weights into it. Out of
    memory (one process), start over with half the micro-batch and twice the accumulation."""
    checkpoints, key = Path(out_dir) / "checkpoints", params_key(model, "batch_size")
    start = changed_state(model)  # what a retry starts from
    params = resumed_batch(params, checkpoints, key)
    while True:
        try:
            return fit(model, train_items, dev_items, params, Path(out_dir))
        except RuntimeError as error:  # torch.OutOfMemoryError is one
            if not is_out_of_memory(error):
                raise
            smaller = halved_batch(params, key, error)
        # out of the except block: the failed attempt's frames, and the tensors they held, are gone
        start_over(model, start, checkpoints)
        print(f"train: out of memory at {key} = {params.batch_size} (grad_accum "
              f"{params.grad_accum}); starting over with batch_size {smaller.batch_size}, grad_accum "
              f"{smaller.grad_accum} (effective batch {smaller.batch_size * smaller.grad_accum} unchanged); "
              "this attempt's checkpoints are discarded", flush=True)
        params = smaller


def fit(model, train_items: MemeItems, dev_items: MemeItems, params: LoopParams, out_dir: Path) -> TrainResult:
    """One attempt at the run, resumed from the newest checkpoint."""
    accelerator = make_accelerator(params)
    check_loop_params(params, accelerator.num_processes, model)
    if params.mixed_precision == "fp16" and accelerator.device.type == "cpu":  # Accelerate ignores it silently
        accelerator.print("train: mixed_precision fp16 needs a GPU; on CPU this run trains in fp32 "
                          "(bf16 is the mixed precision CPUs support)")
    set_seed(params.seed)
    shuffle = torch.Generator()  # the loader draws only from this, so a resumed run sees the same batches
    train_loader = DataLoader(train_items, batch_size=params.batch_size, shuffle=True, generator=shuffle,
                              collate_fn=model.collate, num_workers=params.num_workers)
    optimizer = torch.optim.AdamW(parameter_groups(model, params.weight_decay), lr=params.lr,
                                  fused=True)  # one kernel: 5x faster on CPU
    total_steps = params.epochs * math.ceil(len(train_loader) / params.grad_accum)
    scheduler = lr_schedule(params.schedule, optimizer, num_warmup_steps=params.warmup_steps,
                            num_training_steps=total_steps)
    labels = train_items.labels
    if hasattr(model, "set_training_items"):  # a retrieval-guided model indexes the training memes (rgcl)
        model.set_training_items(train_items)
    loss_fn = make_loss(params.loss.name, params.loss, class_counts=(labels.count(0), labels.count(1)))
    scoring_key = params_key(model, "eval_batch_size")
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    checkpoints = out_dir / "checkpoints"
    state = resume(accelerator, checkpoints)
    state.batch_size, state.grad_accum = params.batch_size, params.grad_accum
    live = make_live(out_dir, resume=state.step > 0, enabled=accelerator.is_main_process)
    dev_batch = params.eval_batch_size
    while state.epoch < params.epochs and state.epochs_without_gain < params.patience:
        shuffle.manual_seed(params.seed * 100_003 + state.epoch)
        loader = accelerator.skip_first_batches(train_loader, state.batches_done)
        run_epoch(model, loader, optimizer, scheduler, loss_fn, accelerator, params, state, checkpoints, live)
        (_, dev_probs, dev_labels, _), dev_batch = predict_items(model, dev_items, dev_batch, accelerator,
                                                                 scoring_key)
        dev_auroc = auroc_or_nan(dev_probs, dev_labels)
        improved = dev_auroc > state.best_auroc
        if improved:
            state.best_auroc, state.best_epoch, state.epochs_without_gain = dev_auroc, state.epoch, 0
            save_best(accelerator, model, checkpoints)
        else:
            state.epochs_without_gain += 1
        state.history.append({"epoch": state.epoch, "step": state.step, "dev_auroc": dev_auroc})
        log_epoch(live, accelerator, state, dev_auroc, improved)
        state.epoch, state.batches_done = state.epoch + 1, 0
        save_checkpoint(accelerator, state, checkpoints, params.keep_checkpoints)
    if live is not None:
        live.end()
    load_best(accelerator, model, checkpoints)
    return TrainResult(state.best_auroc, state.best_epoch, state.epoch, state.history, params.batch_size,
                       params.grad_accum)


# no weight decay (HF Trainer's `get_decay_parameter_names`, MMF's `no_decay` lists): biases and norm layers
NO_DECAY_NAMES = tuple(re.compile(pattern) for pattern in
                       (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"))
NORM_LAYERS = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm, torch.nn.modules.batchnorm._NormBase)


def decay_parameter_names(model: torch.nn.Module) -> set[str]:
    """The parameters weight decay applies to: every one except biases and the weights of normalisation layers,
    found by layer type (torch's LayerNorm, GroupNorm, RMSNorm, BatchNorm) and by name as HF's Trainer does
    (`bias`, `layernorm`, `rmsnorm`, `norm`, `*_norm`: its RMSNorm classes are not torch's). For a
    transformers model the same set as `Trainer.get_decay_parameter_names` (tests/test_training.py)."""
    excluded = {f"{prefix}.{name}" if prefix else name for prefix, module in model.named_modules()
                if isinstance(module, NORM_LAYERS) for name, _ in module.named_parameters(recurse=False)}
    return {name for name, _ in model.named_parameters()
            if name not in excluded and not any(pattern.search(name.lower()) for pattern in NO_DECAY_NAMES)}


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW's two groups over the trainable parameters: with `weight_decay`, and without (biases, norms)."""
    decay = decay_parameter_names(model)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for name, p in trainable if name in decay], "weight_decay": weight_decay},
              {"params": [p for name, p in trainable if name not in decay], "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def run_epoch(model, loader, optimizer, scheduler, loss_fn, accelerator, params, state, checkpoints, live) -> None:
    model.train()
    bar = progress(loader, desc=f"epoch {state.epoch}", unit="batch", disable=not accelerator.is_local_main_process)
    for batch in bar:
        with accelerator.accumulate(model):
            logits, aux_loss, loss_weight = model_outputs(model(batch))  # logits (B,)
            memes_left = len(loader.dataset) - state.batches_done * params.batch_size  # from this global batch on
            loss = loss_weight * batch_loss(loss_fn, logits, batch["labels"], accelerator, memes_left) + aux_loss
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
                save_checkpoint(accelerator, state, checkpoints, params.keep_checkpoints)


def model_outputs(outputs) -> tuple[torch.Tensor, torch.Tensor | float, float]:
    """(logits, aux_loss, loss_weight) of a model's forward: logits (B,) alone (loss = loop.loss), or a dict with
    "logits" and optionally "aux_loss" (a term the model computes itself, weighted: rgcl's retrieval-guided
    loss, the fine-grained heads' loss), "loss_weight" (the factor on loop.loss) and "fine_logits" (B, C), the
    fine-grained heads' logits, which scoring keeps. Under several processes the epoch's padded last batch
    counts its padding in aux_loss (loop.loss leaves it out)."""
    if isinstance(outputs, torch.Tensor):
        return outputs, 0.0, 1.0
    unknown = set(outputs) - {"logits", "aux_loss", "loss_weight", "fine_logits"}
    if unknown:
        raise ValueError(f"a model's forward returned keys {sorted(unknown)}; the loop reads logits, aux_loss, "
                         "loss_weight, fine_logits")
    return outputs["logits"], outputs.get("aux_loss", 0.0), outputs.get("loss_weight", 1.0)


def batch_loss(loss_fn, logits: torch.Tensor, labels: torch.Tensor, accelerator, memes_left: int) -> torch.Tensor:
    """The mean loss over this process's memes, weighted so that DDP's mean over the processes is the mean over
    the global batch. Several processes pad the epoch's last, short batch to full size with its first memes
    (Accelerate's even batches): the padding does not train."""
    processes, rows = accelerator.num_processes, len(logits)
    if processes == 1 or memes_left >= rows * processes:
        return loss_fn(logits.float(), labels.float())
    real = min(max(memes_left - accelerator.process_index * rows, 0), rows)  # the padding comes last
    if real == 0:  # only padding here: no loss, but DDP still waits for a gradient of every parameter
        return logits.sum() * 0.0
    return loss_fn(logits[:real].float(), labels[:real].float()) * (real * processes / memes_left)


def make_accelerator(params: LoopParams) -> Accelerator:
    accelerator = Accelerator(**accelerator_settings(params))
    accelerator.register_save_state_pre_hook(drop_frozen_weights)
    accelerator.register_load_state_pre_hook(load_changed_weights)
    return accelerator


def accelerator_settings(params: LoopParams) -> dict:
    """`Accelerator`'s arguments: batches split between the processes (`batch_size` is the global batch), and
    the loop's accumulation whatever the launch environment says (ACCELERATE_GRADIENT_ACCUMULATION_STEPS
    would win over `gradient_accumulation_steps`)."""
    return {"mixed_precision": params.mixed_precision,
            "dataloader_config": DataLoaderConfiguration(split_batches=True),
            "gradient_accumulation_plugin": GradientAccumulationPlugin(num_steps=params.grad_accum),
            "deepspeed_plugin": deepspeed_plugin(params)}


def deepspeed_plugin(params: LoopParams) -> DeepSpeedPlugin | None:
    """The plugin `accelerate launch` configured (None without DeepSpeed), as Accelerate would build it from the
    environment, with the loop's accumulation and clipping."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return None
    return with_loop_values(DeepSpeedPlugin(), params)


def with_loop_values(plugin: DeepSpeedPlugin, params: LoopParams) -> DeepSpeedPlugin:
    """DeepSpeed's `gradient_accumulation_steps` would override `loop.grad_accum` ("Using DeepSpeed's value"),
    and Accelerate fills an "auto" `gradient_clipping` with 1.0: both come from the params instead."""
    plugin.gradient_accumulation_steps = params.grad_accum
    plugin.gradient_clipping = params.grad_clip
    plugin.deepspeed_config["gradient_accumulation_steps"] = params.grad_accum
    plugin.deepspeed_config["gradient_clipping"] = params.grad_clip  # 0.0: DeepSpeed does not clip
    return plugin


def check_loop_params(params: LoopParams, num_processes: int, model) -> None:
    if params.schedule == "constant" and params.warmup_steps:
        raise ValueError(f"{params_key(model, 'warmup_steps')} = {params.warmup_steps} with schedule constant: "
                         f"that schedule has no warmup (as transformers'); set warmup_steps 0, or schedule linear "
                         f"or cosine")
    if params.keep_checkpoints < 1:
        raise ValueError(f"{params_key(model, 'keep_checkpoints')} = {params.keep_checkpoints}: keep at least 1")
    for name in ("batch_size", "eval_batch_size"):
        value = getattr(params, name)
        if value % num_processes:
            raise ValueError(f"{params_key(model, name)} = {value} is the global batch, split between the "
                             f"{num_processes} processes: it must be divisible by {num_processes}")


def params_key(model, name: str) -> str:
    """`train.<model>.loop.<name>`: the entry of params.yaml a message should point to."""
    from hatememes.models import MODELS

    model = getattr(model, "module", model)  # a DDP wrapper
    targets = {f"{cls.__module__}:{cls.__name__}" for cls in type(model).__mro__}
    names = [key for key, target in MODELS.items() if target in targets]
    return f"train.{names[0] if names else '<model>'}.loop.{name}"


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error))


def check_retry_possible(what: str, key: str, value: int, error: BaseException) -> None:
    """Only a single process retries: elsewhere the other processes wait for it in a collective, and DeepSpeed
    or FSDP have sharded the model in place."""
    state = PartialState()
    if state.distributed_type != DistributedType.NO:
        raise MemoryError(f"{what}: out of memory at {key} = {value} on {state.num_processes} processes "
                          f"({state.distributed_type}); set a smaller {key}") from error


def halved_batch(params: LoopParams, key: str, error: BaseException) -> LoopParams:
    """Half the micro-batch, twice the accumulation: the same effective batch, less memory."""
    check_retry_possible("train", key, params.batch_size, error)
    if params.batch_size == 1:
        raise MemoryError(f"train: out of memory at {key} = 1 (grad_accum {params.grad_accum}): one example "
                          "does not fit; try gradient checkpointing, a smaller model or a larger device") from error
    if params.batch_size % 2:
        raise MemoryError(f"train: out of memory at {key} = {params.batch_size}, which cannot be halved keeping "
                          f"the effective batch (x grad_accum {params.grad_accum}); set a smaller or even "
                          f"{key}") from error
    return dataclasses.replace(params, batch_size=params.batch_size // 2, grad_accum=params.grad_accum * 2)


def changed_state(model) -> dict[str, torch.Tensor]:
    """A CPU copy of what training changes (trainable parameters and buffers)."""
    frozen = frozen_parameter_names(model)
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if k not in frozen}


def start_over(model, start: dict[str, torch.Tensor], checkpoints: Path) -> None:
    """After running out of memory: free it, restore the weights training started from, discard the checkpoints."""
    for parameter in model.parameters():
        parameter.grad = None
    clear_device_cache(garbage_collection=True)
    model.load_state_dict(start, strict=False)
    if PartialState().is_main_process:
        for checkpoint in checkpoints.glob("step-*"):
            shutil.rmtree(checkpoint)
        (checkpoints / "best.safetensors").unlink(missing_ok=True)


def resumed_batch(params: LoopParams, checkpoints: Path, key: str) -> LoopParams:
    """The micro-batch the newest checkpoint trained with: after running out of memory a run halved it (the
    effective batch unchanged), and its rerun continues with it rather than run out of memory again."""
    newest = (complete_checkpoints(checkpoints) or [None])[-1]
    if newest is None:
        return params
    saved = LoopState(**json.loads((newest / "loop_state.json").read_text()))
    if saved.batch_size in (0, params.batch_size) and saved.grad_accum in (0, params.grad_accum):
        return params
    if saved.batch_size * saved.grad_accum != params.batch_size * params.grad_accum:
        raise ValueError(f"{newest}: trained with batch_size {saved.batch_size} x grad_accum {saved.grad_accum}, "
                         f"not the effective batch of {key} = {params.batch_size} x grad_accum "
                         f"{params.grad_accum}; delete {checkpoints} to start afresh")
    PartialState().print(f"train: resuming with batch_size {saved.batch_size}, grad_accum {saved.grad_accum} "
                         f"(halved from {key} = {params.batch_size} after running out of memory)")
    return dataclasses.replace(params, batch_size=saved.batch_size, grad_accum=saved.grad_accum)


def predict_loader(model, loader, accelerator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(ids, probs, labels, fine) of every item of a prepared loader, gathered from all processes; fine is the
    fine-grained heads' probabilities (N, C), None for a model without them."""
    model.eval()
    ids, probs, labels, fine = [], [], [], []
    with torch.no_grad():
        for batch in loader:
            outputs = model(batch)
            logits = model_outputs(outputs)[0]
            columns = [batch["ids"], torch.sigmoid(logits.float()), batch["labels"]]
            if isinstance(outputs, dict) and "fine_logits" in outputs:
                columns.append(torch.sigmoid(outputs["fine_logits"].float()))
            gathered = accelerator.gather_for_metrics(tuple(columns))
            for store, values in zip((ids, probs, labels, fine), gathered, strict=False):
                store.append(values.cpu())
    model.train()
    ids, probs, labels = (torch.cat(values).numpy() for values in (ids, probs, labels))
    return ids, probs, labels, torch.cat(fine).numpy() if fine else None


def predict_items(model, items, batch_size: int, accelerator, key: str) -> tuple[tuple, int]:
    """((ids, probs, labels), the batch size that fitted): out of memory (one process), half the batch, again."""
    collate = accelerator.unwrap_model(model).collate
    rng = torch.get_rng_state()  # iterating a loader draws its base seed: a retry draws what the first one did
    while True:
        torch.set_rng_state(rng)
        loader = accelerator.prepare_data_loader(DataLoader(items, batch_size=batch_size, collate_fn=collate))
        try:
            return predict_loader(model, loader, accelerator), batch_size
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            check_retry_possible("scoring", key, batch_size, error)
            if batch_size == 1:
                raise MemoryError(f"scoring: out of memory at {key} = 1: one meme does not fit") from error
        clear_device_cache(garbage_collection=True)
        print(f"scoring: out of memory at {key} = {batch_size}; retrying with {batch_size // 2}", flush=True)
        batch_size //= 2


def predict(model, items: MemeItems, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(ids, P(hateful)) of `items` in their order, on every process; fails unless each id comes back once.
    `batch_size` is global (split between the processes), and halves while it runs out of memory."""
    ids, probs, _ = predict_all(model, items, batch_size)
    return ids, probs


def predict_all(model, items: MemeItems, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`predict`'s (ids, P(hateful)) and the fine-grained heads' probabilities (N, C) in the same order, or None
    for a model without them."""
    accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(split_batches=True))
    key = params_key(model, "eval_batch_size")
    if batch_size % accelerator.num_processes:
        raise ValueError(f"{key} = {batch_size} is the global batch, split between the "
                         f"{accelerator.num_processes} processes: it must be divisible by them")
    model = accelerator.prepare(model)
    (ids, probs, _, fine), _ = predict_items(model, items, batch_size, accelerator, key)
    expected = items.ids
    if sorted(ids.tolist()) != sorted(expected):
        raise RuntimeError(f"predict: scored {len(ids)} rows for {len(expected)} memes; ids were lost or doubled")
    order = {meme_id: row for row, meme_id in enumerate(ids.tolist())}
    rows = [order[meme_id] for meme_id in expected]
    return np.asarray(expected), probs[rows], None if fine is None else fine[rows]


def auroc_or_nan(probs: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of the labelled rows (labels >= 0), NaN for one class; numpy only (hatememes.metrics), so that a
    stage that trains does not pay scikit-learn's import (2 s)."""
    known = labels >= 0
    value = auroc(labels[known], probs[known])
    return float("nan") if value is None else value


def save_checkpoint(accelerator: Accelerator, state: LoopState, checkpoints: Path, keep: int) -> None:
    """`save_state` into a temporary folder, then rename: a killed run never leaves a half checkpoint. The
    newest `keep` complete ones stay."""
    final = checkpoints / f"step-{state.step:08d}-batch-{state.batches_done:06d}-epoch-{state.epoch:04d}"
    partial = final.with_name(final.name + ".partial")
    accelerator.save_state(str(partial), safe_serialization=True, **engine_checkpoint_args(accelerator, "save"))
    accelerator.wait_for_everyone()  # every process has written its part (its RNG state) before the rename
    if accelerator.is_main_process:
        (partial / "loop_state.json").write_text(json.dumps(dataclasses.asdict(state)))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in complete_checkpoints(checkpoints)[:-keep]:
            shutil.rmtree(old)
        for leftover in checkpoints.glob("step-*.partial"):  # a killed run's
            shutil.rmtree(leftover)
    accelerator.wait_for_everyone()


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """Oldest first, by (step, epoch, batch): the epoch's end comes after a checkpoint of its last step."""
    found = {}
    for path in checkpoints.glob("step-*"):
        match = re.fullmatch(r"step-(\d+)-batch-(\d+)-epoch-(\d+)", path.name)
        if match and (path / "loop_state.json").is_file():
            step, batch, epoch = map(int, match.groups())
            found[(step, epoch, batch)] = path
    return [found[position] for position in sorted(found)]


def resume(accelerator: Accelerator, checkpoints: Path) -> LoopState:
    complete = complete_checkpoints(checkpoints)
    if not complete:
        return LoopState()
    accelerator.load_state(str(complete[-1]), **engine_checkpoint_args(accelerator, "load"))
    state = LoopState(**json.loads((complete[-1] / "loop_state.json").read_text()))
    accelerator.print(f"resuming from {complete[-1].name} (epoch {state.epoch}, batch {state.batches_done})")
    return state


def engine_checkpoint_args(accelerator: Accelerator, direction: Literal["save", "load"]) -> dict:
    """DeepSpeed writes the model's states itself, past the pre-hooks below: its engine leaves the frozen base
    out when asked (`exclude_frozen_parameters`), and then loads the rest non-strictly. FSDP's sharded states
    still hold the whole model (docs/full-benchmark.md)."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return {}
    return {"exclude_frozen_parameters": True} if direction == "save" else {"load_module_strict": False}


def drop_frozen_weights(models: list, weights: list[dict], output_dir: str) -> None:
    """`save_state` pre-hook: a checkpoint holds what training changes, not a frozen base (for LoRA on a 7B
    model, megabytes instead of 13.5 GB). `weights` is empty under DeepSpeed and FSDP, which save their own way."""
    for model, state in zip(models, weights, strict=False):
        for name in frozen_parameter_names(model) & set(state):
            del state[name]


def load_changed_weights(models: list, input_dir: str) -> None:
    """`load_state` pre-hook: load each model's checkpoint, whose frozen weights are left out on purpose, and
    take it off the list so that Accelerate does not load it again, strictly."""
    for index, model in enumerate(models):
        load_trained_weights(model, Path(input_dir) / f"{SAFE_MODEL_NAME}{f'_{index}' if index else ''}.safetensors")
    models.clear()


def load_trained_weights(model, path: Path) -> None:
    """Fails unless `path` holds every trainable parameter (frozen ones may be missing) and nothing else."""
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    not_frozen = set(missing) - frozen_parameter_names(model)
    if unexpected or not_frozen:
        raise RuntimeError(f"{path}: does not match the model (missing trainable weights: {sorted(not_frozen)[:5]}, "
                           f"unexpected: {sorted(unexpected)[:5]})")


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
    if best.is_file():
        load_trained_weights(accelerator.unwrap_model(model), best)


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


def train_params(params: dict, check: tuple[str, ...] | None = None) -> TrainParams:
    """The `train` section: `dev_split` and one `{model:, loop:}` section per model name.

    Torch models need `loop` (LoopParams), fitted ones must not have it. Every section's name is checked;
    its keys and values for the models in `check` (default: all, which imports every model's module)."""
    from torch import nn

    from hatememes.models import MODELS, get_model_class
    from hatememes.params import ParamsError, section

    where = " + ".join(params.get("_sources", ["params"]))
    raw = params.get("train", {})
    config = TrainParams(dev_split(params))
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
