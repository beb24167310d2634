"""Progress bars: tqdm on a terminal, one line per bar in a log.

    from hatememes.progress import progress
    for batch in progress(loader, desc="epoch 0", unit="batch"):
        ...

On a terminal this is tqdm. When stderr is a file or a pipe (`dvc repro > log`, CI), tqdm would write a
line for every refresh, and a demo's log ran to megabytes; here each bar writes one line, its final state
(count, time, rate, postfix) when it closes.
"""

from __future__ import annotations

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
