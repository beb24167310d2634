"""Progress bars: tqdm on a terminal, one line per bar in a log.

    from hatememes.progress import progress
    for batch in progress(loader, desc="epoch 0", unit="batch"):
        ...

On a terminal this is tqdm. When stderr is a file or a pipe (`dvc repro > log`, CI), tqdm would write a
line for every refresh, and a demo's log ran to megabytes; here each bar writes one line, its final state
(count, time, rate, postfix) when it closes.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


class progress(tqdm):  # noqa: N801 - used as tqdm is, a function-like name
    def __init__(self, *args, **kwargs):
        stream = kwargs.get("file") or sys.stderr
        self.one_line = not (hasattr(stream, "isatty") and stream.isatty())
        if self.one_line:
            kwargs["mininterval"] = float("inf")  # no refresh from update(); refresh() below skips the rest
        super().__init__(*args, **kwargs)

    def refresh(self, nolock: bool = False, lock_args=None) -> None:
        if not self.one_line:
            super().refresh(nolock=nolock, lock_args=lock_args)


def quiet_library_bars(stream=None) -> None:
    """The libraries' own bars (transformers' "Loading weights" and "Writing model shards", huggingface_hub's
    downloads) off when `stream` (default stderr) is a log: they would write a carriage-return update into it.
    A user's HF_HUB_DISABLE_PROGRESS_BARS wins. Modules imported later read the variable; those already
    imported are switched off here."""
    stream = stream or sys.stderr
    if (hasattr(stream, "isatty") and stream.isatty()) or "HF_HUB_DISABLE_PROGRESS_BARS" in os.environ:
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # also for the processes `accelerate launch` starts
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers.utils.logging" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()
