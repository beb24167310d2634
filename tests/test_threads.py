"""Torch's CPU thread count for a block of work (`hatememes.threads.cpu_threads`), and `train.<model>.loop.threads`
as the train stage applies it: the model trains and scores with that many threads, and the count is restored.
(course_lstm sets 1: with 2, its predictions came out one of two ways between processes; docs/measurements.md.)"""

from __future__ import annotations

import copy
import runpy
from pathlib import Path

import pytest
import torch

from hatememes.params import ParamsError, load_params
from hatememes.threads import cpu_threads

ROOT = Path(__file__).parents[1]


def test_cpu_threads_sets_and_restores_and_zero_leaves_the_count():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with cpu_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with cpu_threads(0):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="cpu_threads"):
        with cpu_threads(-1):
            pass


@pytest.fixture
def train_main(monkeypatch):
    """pipelines/train.py's main with fit and score replaced by recorders of the thread count they ran with."""
    stage = runpy.run_path(str(ROOT / "pipelines" / "train.py"), run_name="stage")["main"].__globals__  # live
    seen = []
    stage["fit_and_save"] = lambda name, *args, **kwargs: seen.append(("fit", torch.get_num_threads()))
    stage["score_and_save"] = lambda model, name, *args: seen.append(("score", torch.get_num_threads()))
    stage["relaunch"] = lambda *args: None
    return stage, seen


@pytest.mark.parametrize("threads", [1, 0])
def test_the_train_stage_runs_the_model_with_its_loop_threads(train_main, threads, tmp_path, monkeypatch):
    stage, seen = train_main
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["train"]["course_lstm"]["loop"]["threads"] = threads
    monkeypatch.setattr(stage["P"], "from_arguments", lambda args: params)
    before = torch.get_num_threads()
    if before == 1 and threads == 1:
        pytest.skip("torch runs one thread here already: nothing to tell apart")
    assert stage["main"](["course_lstm", "--out", str(tmp_path / "m"), "--predictions", str(tmp_path / "p")]) == 0
    expected = threads or before
    assert seen == [("fit", expected), ("score", expected)]
    assert torch.get_num_threads() == before


def test_negative_loop_threads_are_refused_with_the_key(train_main):
    stage, _ = train_main
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["train"]["course_lstm"]["loop"]["threads"] = -2
    with pytest.raises(ParamsError, match=r"train\.course_lstm\.loop\.threads = -2"):
        stage["loop_threads"](params, "course_lstm")
