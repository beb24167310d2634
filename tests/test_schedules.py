"""Our learning-rate schedules give transformers' `get_scheduler` learning rates, float for float, at every
step: the shared loop dropped that import (2 s of every training stage) without moving a number."""

from __future__ import annotations

import pytest
import torch
from transformers import get_scheduler

from hatememes.schedules import lr_schedule


def learning_rates(make, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=3.0e-4)
    scheduler = make(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
@pytest.mark.parametrize(("warmup", "total"), [(0, 50), (20, 335), (7, 7), (30, 10), (1, 1)])
def test_each_step_s_learning_rate_equals_transformers(name, warmup, total):
    warmup = 0 if name == "constant" else warmup
    ours = learning_rates(lambda optimizer: lr_schedule(name, optimizer, warmup, total), total + 5)
    theirs = learning_rates(lambda optimizer: get_scheduler(name, optimizer, num_warmup_steps=warmup,
                                                            num_training_steps=total), total + 5)
    assert ours == theirs  # exact: the same operations in the same order


def test_a_resumed_schedule_continues_where_it_stopped():
    """A checkpoint holds the scheduler's state_dict (Accelerate's save_state); loading it goes on in step."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    first = lr_schedule("cosine", optimizer, 3, 20)
    for _ in range(8):
        optimizer.step()
        first.step()
    resumed_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    resumed = lr_schedule("cosine", resumed_optimizer, 3, 20)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(first.state_dict())
    for _ in range(5):
        optimizer.step(), first.step(), resumed_optimizer.step(), resumed.step()
        assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_an_unknown_schedule_is_named():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_schedule("step", optimizer, 0, 10)


def test_a_warmup_that_constant_would_ignore_is_refused():
    """transformers' "constant" has no warmup; a warmup set with it would silently not happen."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "helpers"))
    from toy_training import toy_model

    from hatememes.training import LoopParams, check_loop_params

    check_loop_params(LoopParams(schedule="constant", warmup_steps=0), 1, toy_model())
    with pytest.raises(ValueError, match=r"loop.warmup_steps = 20 with schedule constant"):
        check_loop_params(LoopParams(schedule="constant", warmup_steps=20), 1, toy_model())
