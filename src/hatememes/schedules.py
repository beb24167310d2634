"""Learning-rate schedules: transformers' `get_scheduler("linear" | "cosine" | "constant")`, without its import.

`from transformers import get_scheduler` imports transformers' Trainer utilities and, through them, peft:
2 s of every training stage's start-up (measured on the 2-core machine), paid also by the models that never
touch transformers (clip_fusion, the course networks). The three schedules are transcribed from
transformers/optimization.py (`_get_linear_schedule_with_warmup_lr_lambda`,
`_get_cosine_schedule_with_warmup_lr_lambda` with one half-cycle, `_get_constant_lambda`), operation for
operation, so the learning rates are the same floats; tests/test_schedules.py checks every step against
transformers. As there, "constant" has no warmup: a warmup with it is refused (training.check_loop_params).
"""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("linear", "cosine", "constant")


def linear_with_warmup(current_step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    return max(0.0, float(num_training_steps - current_step) / float(max(1, num_training_steps - num_warmup_steps)))


def cosine_with_warmup(current_step: int, *, num_warmup_steps: int, num_training_steps: int,
                       num_cycles: float = 0.5) -> float:
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    return max(0, factor)  # transformers' `factor * (1 - min_lr_rate) + min_lr_rate` at its default 0: the same


def constant(_: int | None = None) -> int:
    return 1


def lr_schedule(name: str, optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int) -> LambdaLR:
    """What `transformers.get_scheduler(name, optimizer, num_warmup_steps, num_training_steps)` returns."""
    if name == "constant":
        return LambdaLR(optimizer, constant)
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r} (one of {', '.join(SCHEDULES)})")
    factor = linear_with_warmup if name == "linear" else cosine_with_warmup
    return LambdaLR(optimizer, partial(factor, num_warmup_steps=num_warmup_steps,
                                       num_training_steps=num_training_steps))
