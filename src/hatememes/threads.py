"""Torch's CPU thread count, set for a block of work and restored after it.

    with cpu_threads(1):   # the pretrain stages: one thread each on a shared 2-core machine
        ...
    with cpu_threads(0):   # 0: torch's own count, unchanged
        ...
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Run with `count` torch CPU threads (0: as they are), then restore the previous count."""
    if count < 0:
        raise ValueError(f"cpu_threads({count}): a thread count is 1 or more, or 0 for torch's own")
    if count == 0:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
