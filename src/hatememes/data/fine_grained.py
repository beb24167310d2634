"""Fine-grained labels of the WOAH 2021 shared task (facebookresearch/fine_grained_hateful_memes): for each meme
of train, dev_seen and dev_unseen, the protected categories it attacks and the attack types, multi-label.

    labels = read_fine_labels(Path("data/memes"), "dev_unseen")   # {id: FineLabels} or None without annotations
    targets = multi_hot(labels[meme_id])                           # (len(PC_LABELS) + len(ATTACK_LABELS),)

fetch writes the validated annotations as `data/memes/fine_grained/<split>.jsonl`, one record a line in the
shared task's own format (its `data/annotations/<split>.json`):

    {"id": 83745, "img": "img/83745.png", "text": "...", "set_name": "dev_seen", "gold_hate": ["hateful"],
     "gold_pc": ["race"], "gold_attack": ["dehumanizing"], "pc": [["race"], ...], "attack": [[...], ...]}

`pc` / `attack` hold each annotator's labels, or the string "None" for a benign meme. The test splits have no
fine-grained labels (the shared task released none). `validate_annotations` checks the shared task's files
against the memes fetch accepted; `write_annotations` writes the accepted records and returns the manifest's
entry for the split.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from hatememes.data.memes import UNLABELLED, Meme, Rejected

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


# ---------------------------------------------------------------------------------------------- validation

FIELDS = ("id", "img", "text", "set_name", "gold_hate", "gold_pc", "gold_attack", "pc", "attack")  # written order
# Annotators could also name "class" (socio-economic class) in `pc`, never a gold label: the release's
# train.json has it in 16 annotator lists, which are valid records.
ANNOTATOR_PC_LABELS = (*PC_LABELS, "class")
KNOWN_LABELS = {"gold_hate": HATE_LABELS, "gold_pc": PC_LABELS, "gold_attack": ATTACK_LABELS,
                "pc": ANNOTATOR_PC_LABELS, "attack": ATTACK_LABELS}


@dataclass
class AnnotationCheck:
    """What validating one split's annotation file found: the accepted records by id, the rejected lines."""

    file: str
    lines_read: int = 0
    accepted: dict[int, dict] = field(default_factory=dict)  # id -> record, keys in FIELDS order
    rejected: list[Rejected] = field(default_factory=list)


def annotation_file(folder: Path, split: str) -> Path:
    """The shared task's `<split>.json` in `folder`, or `<split>.jsonl`; both, or neither, is an error."""
    found = [path for path in (Path(folder) / f"{split}.json", Path(folder) / f"{split}.jsonl") if path.is_file()]
    if not found:
        raise FileNotFoundError(f"{Path(folder) / f'{split}.json'}: fine-grained annotations of {split} not found "
                                f"(nor {split}.jsonl)")
    if len(found) > 1:
        raise ValueError(f"{found[0]} and {found[1]}: two annotation files for {split}; keep one")
    return found[0]


def is_label_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(label, str) for label in value)


def check_types(record: dict) -> str:
    for key in FIELDS:
        if key not in record:
            return f"missing field {key!r}"
    if not isinstance(record["id"], int) or isinstance(record["id"], bool):
        return f"field 'id' must be int, got {type(record['id']).__name__}"
    for key in ("img", "text", "set_name"):
        if not isinstance(record[key], str):
            return f"field {key!r} must be str, got {type(record[key]).__name__}"
    for key in ("gold_hate", "gold_pc", "gold_attack"):
        if not is_label_list(record[key]):
            return f"field {key!r} must be a list of labels, got {json.dumps(record[key])}"
    for key in ("pc", "attack"):
        value = record[key]
        if value != "None" and not (isinstance(value, list) and all(is_label_list(labels) for labels in value)):
            return f"field {key!r} must be \"None\" or one list of labels per annotator, got {json.dumps(value)}"
    return ""


def labels_in(record: dict, key: str) -> list[str]:
    """Every label a field names: the gold list, or all annotators' lists together ("None": none)."""
    value = record[key]
    if key.startswith("gold_"):
        return value
    return [] if value == "None" else [label for labels in value for label in labels]


def check_annotation(record: dict | str) -> str:
    """Why one parsed line is not a valid annotation record, or "" when it is (whatever meme it names)."""
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    reason = check_types(record)
    if reason:
        return reason
    for key, known in KNOWN_LABELS.items():
        unknown = [label for label in labels_in(record, key) if label not in known]
        if unknown:
            return f"unknown label {unknown[0]!r} in {key!r} (known: {', '.join(known)})"
    if len(record["gold_hate"]) != 1:
        return f"gold_hate must hold exactly one of {', '.join(HATE_LABELS)}, got {json.dumps(record['gold_hate'])}"
    for key in ("gold_pc", "gold_attack"):
        if not record[key]:
            return f"empty {key}"
    return ""


def check_meme(record: dict, split: str, memes: dict[int, Meme], rejected_memes: set[int]) -> str:
    """Why a valid record does not fit the split's accepted memes, or ""."""
    if record["set_name"] != split:
        return f"set_name {record['set_name']!r} in the annotations of {split}"
    meme = memes.get(record["id"])
    if meme is None:
        why = " (its meme was rejected)" if record["id"] in rejected_memes else ""
        return f"no accepted meme of {split} has this id{why}"
    if meme.label != UNLABELLED and record["gold_hate"] != [HATE_LABELS[meme.label]]:
        return f"gold_hate {record['gold_hate'][0]!r} disagrees with the meme's label {meme.label}"
    return ""


def validate_annotations(split: str, label: str, rows: list[tuple[int, dict | str]], memes: list[Meme],
                         rejected_memes: set[int]) -> AnnotationCheck:
    """Check every row of one split's annotation file (`label` names it) against the split's accepted
    `memes`; `rejected_memes` are the ids of its rejected meme records, named in the reason."""
    check = AnnotationCheck(file=label, lines_read=len(rows))
    by_id = {meme.id: meme for meme in memes}
    here: dict[int, str] = {}  # id -> "file:line" of the accepted record
    for number, record in rows:
        reason = check_annotation(record)
        if not reason and record["id"] in here:
            reason = f"duplicate id (first at {here[record['id']]})"
        reason = reason or check_meme(record, split, by_id, rejected_memes)
        if reason:
            record_id = record.get("id") if isinstance(record, dict) else None
            check.rejected.append(Rejected(label, number, record_id, reason))
            continue
        here[record["id"]] = f"{label}:{number}"
        check.accepted[record["id"]] = {key: record[key] for key in FIELDS}
    return check


# ---------------------------------------------------------------------------------------------- writing

def write_fine_labels(memes_dir: Path, split: str, records: list[dict]) -> Path:
    """`memes_dir/fine_grained/<split>.jsonl`, one record a line, keys in FIELDS order."""
    path = fine_labels_path(memes_dir, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({key: r[key] for key in FIELDS}, ensure_ascii=False) + "\n"
                            for r in records), encoding="utf-8")
    return path


def write_annotations(memes_dir: Path, split: str, check: AnnotationCheck, memes: list[Meme]) -> dict:
    """Write the accepted records in the order of the split's `memes`; the manifest's entry for the split."""
    records = [check.accepted[meme.id] for meme in memes if meme.id in check.accepted]
    path = write_fine_labels(memes_dir, split, records)
    return {
        "file": check.file,
        "lines_read": check.lines_read,
        "count": len(records),
        "hateful": sum(r["gold_hate"] == ["hateful"] for r in records),
        "unannotated": len(memes) - len(records),
        "rejected": len(check.rejected),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "pc": {label: sum(label in r["gold_pc"] for r in records) for label in PC_LABELS},
        "attack": {label: sum(label in r["gold_attack"] for r in records) for label in ATTACK_LABELS},
    }
