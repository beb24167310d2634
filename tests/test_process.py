"""exit_after: main's status, atexit handlers run, buffered output kept (it skips only the teardown)."""

from __future__ import annotations

import subprocess
import sys


def test_exit_after_keeps_status_output_and_atexit_handlers(tmp_path):
    marker = tmp_path / "atexit-ran"
    script = (
        "import atexit, pathlib\n"
        "from hatememes.process import exit_after\n"
        f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
        "print('buffered line')\n"
        "exit_after(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 3
    assert result.stdout == "buffered line\n"  # a pipe is block-buffered: flushed before os._exit
    assert marker.read_text() == "yes"


def test_exit_after_none_is_success():
    result = subprocess.run([sys.executable, "-c", "from hatememes.process import exit_after; exit_after(None)"])
    assert result.returncode == 0
