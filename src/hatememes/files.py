"""Small file helpers every stage uses: JSON written atomically, so no half-written file looks complete,
and one clear line instead of a traceback when a stage's output cannot be written (disk full, read-only).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

NEARLY_FULL_BYTES = 1 << 20  # below this much free space, a failed write is put down to the full disk


def write_json(path: Path, data: object) -> None:
    """Write `data` as indented JSON to a temporary name beside `path`, then rename it into place."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> object:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def report_write_error(stage: str, out: Path, error: BaseException) -> int:
    """For a stage's `main`: print `stage: cannot write OUT: disk full (...)` and return 1 when `error`
    comes from a full or unwritable disk under `out`; print `stage: <message>` and return 1 when weights that a
    param names cannot be loaded (the message says what to do); re-raise any other error.

        try:
            return run(args)
        except Exception as error:
            return report_write_error("features", args.out, error)
    """
    from hatememes.pretrained import PretrainedLoadError

    if isinstance(error, PretrainedLoadError):
        print(f"{stage}: {error}", file=sys.stderr)
        return 1
    reason = write_failure(error, Path(out))
    if reason is None:
        raise error
    print(f"{stage}: cannot write {out}: {reason} ({type(error).__name__}: {error})", file=sys.stderr)
    return 1


def write_failure(error: BaseException, out: Path) -> str | None:
    """Why writing under `out` failed, if `error` says so in any of the forms libraries use (OSError errno,
    safetensors' "os error 28" text, torch's bare RuntimeError on a full disk); else None."""
    code, text = getattr(error, "errno", None), str(error)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in text:
        return "disk full"
    if code == errno.EROFS or "Read-only file system" in text:
        return "read-only file system"
    if not isinstance(error, OSError | RuntimeError):
        return None
    filename = getattr(error, "filename", None)
    target = Path(filename) if filename and is_output_path(Path(filename), out) else out
    existing = nearest_existing(target)
    folder_expected = existing != target.absolute() or existing == Path(out).absolute()
    if isinstance(error, OSError) and existing.is_file() and folder_expected:
        return f"{existing} is a file, not a folder"
    if code in (errno.EACCES, errno.EPERM) and not os.access(existing, os.W_OK):
        return f"permission denied ({existing} is not writable)"
    if code is None and shutil.disk_usage(existing).free < NEARLY_FULL_BYTES:  # torch.save hides the errno
        return "disk full"
    return None


def is_output_path(path: Path, out: Path) -> bool:
    """Whether a stage writing `out` writes `path`: `out` and what is inside it, or its temporary
    siblings `.<out name>*` (the partial folders renamed into place when complete)."""
    path, out = Path(path).absolute(), Path(out).absolute()
    return any(p == out or (p.parent == out.parent and p.name.startswith(f".{out.name}"))
               for p in (path, *path.parents))


def nearest_existing(path: Path) -> Path:
    """`path` itself if it exists, else its closest existing parent."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
