"""Run a pipeline script and SIGKILL it at a chosen point: the interruption tests' fault injector.

    python tests/reliability/kill_at.py WHEN PATTERN N pipelines/SCRIPT.py [ARGS...]

The process kills itself with SIGKILL (no handler, no cleanup can run), so what is left on disk is what a
power cut or an OOM kill at that instant would leave. PATTERN is an fnmatch pattern on the full path.

    rename   just before the N-th os.rename/os.replace whose target matches: a regular source file is first
             cut to half its size, i.e. the file is caught mid-write under its temporary name
    write    right after the N-th safetensors `save_file` to a matching path, cut to half its size: a file
             written in place, caught mid-write
    open     at the N-th open for writing of a matching path, after writing half a line into it
"""

from __future__ import annotations

import builtins
import fnmatch
import io
import os
import runpy
import signal
import sys

WHEN, PATTERN, COUNT = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = 0


def matches(path) -> bool:
    """Whether this call is the N-th one on a path matching PATTERN (counting every match)."""
    global seen
    if not fnmatch.fnmatch(os.path.abspath(os.fspath(path)), PATTERN):
        return False
    seen += 1
    return seen == COUNT


def die(half_of: str | None = None) -> None:
    if half_of is not None and os.path.isfile(half_of):
        os.truncate(half_of, os.path.getsize(half_of) // 2)
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def patch_renames() -> None:
    for name in ("rename", "replace"):
        original = getattr(os, name)

        def patched(source, target, *args, _original=original, **kwargs):
            if matches(target):
                die(half_of=os.fspath(source))
            return _original(source, target, *args, **kwargs)

        setattr(os, name, patched)


def patch_safetensors() -> None:
    import safetensors.torch

    original = safetensors.torch.save_file

    def patched(tensors, filename, *args, **kwargs):
        result = original(tensors, filename, *args, **kwargs)
        if matches(filename):
            die(half_of=os.fspath(filename))
        return result

    safetensors.torch.save_file = patched


def patch_open() -> None:
    original = builtins.open

    def patched(file, mode="r", *args, **kwargs):
        stream = original(file, mode, *args, **kwargs)
        if isinstance(file, str | os.PathLike) and any(c in mode for c in "wax") and matches(file):
            stream.write("1234," if "b" not in mode else b"1234,")
            stream.flush()
            die()
        return stream

    builtins.open = io.open = patched


if __name__ == "__main__":
    {"rename": patch_renames, "write": patch_safetensors, "open": patch_open}[WHEN]()
    script = sys.argv[4]
    sys.argv = sys.argv[4:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        print("kill_at.py: the script ended without reaching the kill point", file=sys.stderr)
