"""Progress bars in a log: one line per bar, however many updates (tqdm writes one per refresh)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
from hatememes.progress import progress
bar = progress(total=2000, desc="epoch 0", unit="batch")
for step in range(2000):
    bar.update(1)
    bar.set_postfix(loss=f"{1 / (step + 1):.4f}")
bar.close()
for _ in progress(range(500), desc="dev"):
    pass
"""


def test_a_bar_writes_one_line_with_its_final_state_to_a_log():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    lines = [line.strip("\r") for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("epoch 0: 100%") and "2000/2000" in lines[0] and "loss=0.0005" in lines[0]
    assert lines[1].startswith("dev: 100%") and "500/500" in lines[1]
