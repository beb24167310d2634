"""Progress bars in a log: one line per bar, however many updates (tqdm writes one per refresh)."""

from __future__ import annotations

import os
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


LIBRARY_BARS = """
import sys
from hatememes.progress import quiet_library_bars
import huggingface_hub  # imported before the call, as accelerate imports it at a stage's start
quiet_library_bars()
from transformers import BertConfig, BertModel
model = BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                             vocab_size=16))
model.save_pretrained(sys.argv[1])
BertModel.from_pretrained(sys.argv[1])
print(huggingface_hub.utils.are_progress_bars_disabled())
"""


def test_the_libraries_bars_stay_out_of_a_log(tmp_path):
    """transformers' "Writing model shards" and "Loading weights" bars: a carriage-return update each in a log,
    nothing after quiet_library_bars; a user who sets HF_HUB_DISABLE_PROGRESS_BARS=0 keeps them."""
    environment = {key: value for key, value in os.environ.items() if key != "HF_HUB_DISABLE_PROGRESS_BARS"}
    quiet = subprocess.run([sys.executable, "-c", LIBRARY_BARS, str(tmp_path / "a")], capture_output=True,
                           text=True, check=True, env=environment)
    assert quiet.stdout.strip() == "True"
    assert "\r" not in quiet.stderr and "Loading weights" not in quiet.stderr, quiet.stderr
    kept = subprocess.run([sys.executable, "-c", LIBRARY_BARS, str(tmp_path / "b")], capture_output=True,
                          text=True, check=True, env={**environment, "HF_HUB_DISABLE_PROGRESS_BARS": "0"})
    assert kept.stdout.strip() == "False"
    assert "Loading weights" in kept.stderr  # the control: the bars are there to be switched off
