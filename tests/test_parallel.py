"""`run_forked`: the results in the calls' order, closures over unpicklable state, errors raised in the caller,
and the work really shared among processes."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

from hatememes.parallel import available_cores, run_forked


def test_results_come_back_in_order_from_closures_over_unpicklable_state():
    lock = threading.Lock()  # cannot be pickled: the calls reach it through the fork, not through a pipe

    def call(k: int):
        with lock:
            return k * k, os.getpid()

    results = run_forked([lambda k=k: call(k) for k in range(7)], workers=2)
    assert [value for value, _ in results] == [k * k for k in range(7)]
    assert os.getpid() not in {pid for _, pid in results}  # run in forked workers, not here


def test_two_workers_run_at_the_same_time():
    barrier = multiprocessing.get_context("fork").Barrier(2)  # passes only when both calls wait at it together

    def call() -> int:
        barrier.wait(timeout=30)
        return os.getpid()

    assert len(set(run_forked([call, call], workers=2))) == 2


def test_one_worker_runs_the_calls_here_in_order():
    seen = []
    assert run_forked([lambda k=k: seen.append(k) or k for k in range(4)], workers=1) == [0, 1, 2, 3]
    assert seen == [0, 1, 2, 3]  # in this process: its memory changed
    assert run_forked([]) == []


def test_an_error_in_a_worker_is_raised_in_the_caller():
    def fails():
        raise ValueError("meme 00042.png: bad caption")

    with pytest.raises(ValueError, match="00042.png"):
        run_forked([lambda: 1, fails, lambda: 3], workers=2)


def test_available_cores_is_this_process_affinity():
    assert available_cores() == len(os.sched_getaffinity(0)) >= 1
