"""Fine-grained labels of the WOAH 2021 shared task (facebookresearch/fine_grained_hateful_memes): for each meme
of train, dev_seen and dev_unseen, the protected categories it attacks and the attack types, multi-label.

    labels = read_fine_labels(Path("data/memes"), "dev_unseen")   # {id: FineLabels} or None without annotations
    targets = multi_hot(labels[meme_id])                           # (len(PC_LABELS) + len(ATTACK_LABELS),)

fetch writes the validated annotations as `data/memes/fine_grained/<split>.jsonl`, one record a line in the
shared task's own format (its `data/annotations/<split>.json`):

    {"id": 83745, "img": "img/83745.png", "text": "...", "set_name": "dev_seen", "gold_hate": ["hateful"],
     "gold_pc": ["race"], "gold_attack": ["dehumanizing"], "pc": [["race"], ...], "attack": [[...], ...]}

`pc` / `attack` hold each annotator's labels, or the string "None" for a benign meme. The test splits have no
fine-grained labels (the shared task released none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HATE_LABELS = ("not_hateful", "hateful")
PC_LABELS = ("pc_empty", "disability", "nationality", "race", "religion", "sex")
ATTACK_LABELS = ("attack_empty", "contempt", "dehumanizing", "exclusion", "inciting_violence", "inferiority",
                 "mocking", "slurs")
FINE_SPLITS = ("train", "dev_seen", "dev_unseen")
FOLDER = "fine_grained"  # under data/memes
NUM_FINE = len(PC_LABELS) + len(ATTACK_LABELS)  # a head's outputs: pc columns, then attack columns


@dataclass(frozen=True)
class FineLabels:
    gold_hate: tuple[str, ...]
    gold_pc: tuple[str, ...]
    gold_attack: tuple[str, ...]


def fine_labels_path(memes_dir: Path, split: str) -> Path:
    return Path(memes_dir) / FOLDER / f"{split}.jsonl"


def read_fine_labels(memes_dir: Path, split: str) -> dict[int, FineLabels] | None:
    """{id: FineLabels} of a split fetch has validated, or None when the split has no fine-grained labels."""
    path = fine_labels_path(memes_dir, split)
    if not path.is_file():
        return None
    labels = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                labels[record["id"]] = FineLabels(tuple(record["gold_hate"]), tuple(record["gold_pc"]),
                                                  tuple(record["gold_attack"]))
    return labels


def multi_hot(labels: FineLabels) -> list[float]:
    """The head's targets: one column per PC_LABELS entry, then one per ATTACK_LABELS entry."""
    return ([float(name in labels.gold_pc) for name in PC_LABELS]
            + [float(name in labels.gold_attack) for name in ATTACK_LABELS])
