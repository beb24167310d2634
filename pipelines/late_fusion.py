"""Stage `late_fusion`: the benchmark paper's Late Fusion (Kiela et al. 2020), the mean of text_bert's and
image_grid's P(hateful), combined and evaluated as the `ensemble` stage combines its members.

    python pipelines/late_fusion.py --eval eval --out eval/late_fusion --model-out models/late_fusion

Members and method come from params.yaml `late_fusion`.
"""

from __future__ import annotations

import sys

from ensemble import main  # pipelines/, this script's folder
from hatememes.process import exit_after

if __name__ == "__main__":
    exit_after(main(["late_fusion", *sys.argv[1:]]))  # without the interpreter's teardown (hatememes.process)
