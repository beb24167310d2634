"""The numpy Conv2D (im2col + one matmul, hand-written backward) against torch's conv2d with autograd.

    python benchmarks/course.py                 # 2 threads, float32, best of 20 timed runs per case
    python benchmarks/course.py --threads 1 --repeats 50

Each case times forward + backward (gradients for input, weight and bias) on the same input and
weights; the ratio is numpy ms / torch ms (the course goal: within 5x). The two take turns and the
fastest run of each counts: on a shared machine the minimum is the steadiest estimate of the cost.
Both sides are first checked to give the same output and gradients, so the race is between two
correct implementations.
"""

from __future__ import annotations

import argparse
import os
import time


def set_threads(threads: int) -> None:
    """Before numpy and torch load: their BLAS / OpenMP pools read these once."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


CASES = [  # (batch, in channels, out channels, size, kernel, stride, padding)
    (32, 3, 16, 32, 3, 1, 1),
    (32, 3, 16, 32, 3, 2, 1),
    (32, 16, 32, 16, 3, 1, 1),
    (32, 3, 16, 48, 5, 2, 2),
]


def best_ms(steps: tuple, repeats: int) -> list[float]:
    """The fastest of `repeats` runs of each step, taking turns so both see the same machine load."""
    times = [[] for _ in steps]
    for _ in range(repeats + 1):  # the first round is a warm-up
        for step, step_times in zip(steps, times, strict=True):
            start = time.perf_counter()
            step()
            step_times.append(time.perf_counter() - start)
    return [min(step_times[1:]) * 1e3 for step_times in times]


def run_case(case: tuple[int, ...], repeats: int) -> tuple[float, float]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from hatememes.models.course.numpy_cnn import Conv2D

    batch, channels, out_channels, size, kernel, stride, padding = case
    x = np.random.default_rng(0).standard_normal((batch, channels, size, size)).astype(np.float32)
    conv = Conv2D(channels, out_channels, kernel, stride, padding)
    x_t = torch.from_numpy(x).requires_grad_(True)
    weight_t = torch.from_numpy(conv.params["weight"].copy()).requires_grad_(True)
    bias_t = torch.from_numpy(conv.params["bias"].copy()).requires_grad_(True)

    def numpy_step():
        out = conv.forward(x)
        return out, conv.backward(np.ones_like(out))

    def torch_step():
        x_t.grad = weight_t.grad = bias_t.grad = None
        out = F.conv2d(x_t, weight_t, bias_t, stride=stride, padding=padding)
        out.backward(torch.ones_like(out))
        return out

    out, dx = numpy_step()
    out_t = torch_step()
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv.grads["weight"], weight_t.grad.numpy(), rtol=1e-3, atol=1e-2)
    numpy_ms, torch_ms = best_ms((numpy_step, torch_step), repeats)
    return numpy_ms, torch_ms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    print(f"Conv2D forward+backward, float32, {args.threads} threads, best of {args.repeats} runs")
    print(f"| {'input (B,C,H,W)':<18} | {'out':>3} | k | s | p | {'numpy ms':>8} | {'torch ms':>8} | ratio |")
    print(f"|{'-' * 20}|-----|---|---|---|{'-' * 10}|{'-' * 10}|-------|")
    for case in CASES:
        batch, channels, out_channels, size, kernel, stride, padding = case
        numpy_ms, torch_ms = run_case(case, args.repeats)
        shape = f"({batch},{channels},{size},{size})"
        print(
            f"| {shape:<18} | {out_channels:>3} | {kernel} | {stride} | {padding} "
            f"| {numpy_ms:>8.2f} | {torch_ms:>8.2f} | {numpy_ms / torch_ms:>4.1f}x |"
        )


if __name__ == "__main__":
    main()
