"""The Hateful Memes layout (Kiela et al. 2020) as released and as MMF reads it, with validation.

    root/img/NNNNN.png
    root/{train,dev_seen,dev_unseen,test_seen,test_unseen}.jsonl   one {"id", "img", "text", "label"?} a line

`read_split` returns validated `Meme` records; `validate_split` returns the accepted ones and a
`Rejected` entry (file, line, id, reason) for every line that is not a valid meme.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from hatememes.parallel import available_cores, run_forked

SPLITS = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")
UNLABELLED = -1
MAX_IMAGE_PIXELS = 50_000_000  # the largest official meme is < 3 Mpx; beyond this is a decompression bomb


@dataclass(frozen=True)
class Meme:
    id: int
    img: str  # relative to the dataset root, e.g. "img/01235.png"
    text: str
    label: int = UNLABELLED  # 0 benign, 1 hateful, -1 unknown

    def to_json(self) -> str:
        record = asdict(self)
        if self.label == UNLABELLED:
            del record["label"]
        return json.dumps(record, ensure_ascii=False)


@dataclass(frozen=True)
class Rejected:
    file: str
    line: int
    id: int | str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} id={self.id} {self.reason}"


class BadRecordsError(ValueError):
    """One or more records failed validation; the message lists every one."""

    def __init__(self, rejected: list[Rejected]):
        self.rejected = rejected
        lines = "\n".join(f"  {r}" for r in rejected)
        super().__init__(f"{len(rejected)} bad record(s):\n{lines}")


def write_split(root: Path, split: str, memes: list[Meme]) -> Path:
    path = Path(root) / f"{split}.jsonl"
    path.write_text("".join(m.to_json() + "\n" for m in memes), encoding="utf-8")
    return path


def read_split(root: Path, split: str) -> list[Meme]:
    """The memes of an already validated split (`data/memes/<split>.jsonl`), in file order."""
    path = Path(root) / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: split {split!r} not found (did the fetch stage run?)")
    with path.open(encoding="utf-8") as lines:
        return [Meme(**json.loads(line)) for line in lines if line.strip()]


def load_rgb(path: Path) -> Image.Image:
    """Decode an image fully and return it as RGB, whatever its mode (RGBA, P, L, CMYK, ...)."""
    with Image.open(path) as image:
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{image.width}x{image.height} pixels exceeds the limit of {MAX_IMAGE_PIXELS}")
        image.load()
        if image.mode == "RGB":
            return image.copy()
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")


@dataclass
class SplitCheck:
    """What validating one split's file found: accepted memes, rejected lines, notes on kept records."""

    file: str
    lines_read: int = 0
    accepted: list[Meme] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # valid records kept with a remark (e.g. JPEG bytes in .png)


def read_jsonl_rows(path: Path) -> list[tuple[int, dict | str]]:
    """(line number, parsed object or the reason it could not be parsed) for every non-blank line."""
    rows = []
    with Path(path).open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n"))  # BOM ok
                rows.append((number, value if not isinstance(value, str) else "expected a JSON object, got str"))
            except UnicodeDecodeError as error:
                rows.append((number, f"not UTF-8 ({error.reason} at byte {error.start})"))
            except json.JSONDecodeError as error:
                rows.append((number, f"malformed JSON ({error.msg} at column {error.colno})"))
    return rows


def check_record(record: dict | str) -> tuple[Meme | None, str]:
    """A `Meme` from one parsed line, or None and the reason it is not a valid meme."""
    if isinstance(record, str):
        return None, record
    if not isinstance(record, dict):
        return None, f"expected a JSON object, got {type(record).__name__}"
    for key, kind in (("id", int), ("img", str), ("text", str)):
        if key not in record:
            return None, f"missing field {key!r}"
        if not isinstance(record[key], kind) or isinstance(record[key], bool):
            return None, f"field {key!r} must be {kind.__name__}, got {type(record[key]).__name__}"
    label = record.get("label", UNLABELLED)
    if label is None:
        label = UNLABELLED
    if isinstance(label, bool) or label not in (0, 1, UNLABELLED):
        return None, f"label must be 0 or 1 (or absent), got {label!r}"
    if not record["text"].strip():
        return None, "empty text"
    return Meme(id=record["id"], img=record["img"], text=record["text"], label=int(label)), ""  # 1.0 is written as 1


def check_image(image_root: Path, relative: str) -> tuple[str, str]:
    """('', note) when the image decodes fully under the pixel limit; else (reason, '')."""
    root = Path(image_root).resolve()
    path = (root / relative).resolve()
    if root not in path.parents:
        return f"image path {relative!r} escapes the dataset folder", ""
    if not path.is_file():
        return f"image {relative} not found", ""
    try:
        with Image.open(path) as image:
            kind = image.format
            if image.width * image.height > MAX_IMAGE_PIXELS:
                return f"image {relative} has {image.width}x{image.height} pixels (limit {MAX_IMAGE_PIXELS})", ""
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return f"image {relative} does not decode: {error}", ""
    suffix = path.suffix.lower().lstrip(".")
    named = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG"}.get(suffix, suffix.upper())
    note = f"image {relative} holds {kind} data under a .{suffix} name (kept)" if kind != named else ""
    return "", note


def check_images(image_root: Path, relatives: list[str]) -> dict[str, tuple[str, str]]:
    """`check_image` of each distinct path, decoded on every core (`hatememes.parallel.run_forked`): decoding
    every image is a quarter of the demo's fetch (3135 memes of 32 px, measured), and more of the release's."""
    distinct = sorted(set(relatives))
    workers = max(1, min(available_cores(), len(distinct) // 64))  # a worker is worth it for many images only

    def check(part: list[str]) -> list[tuple[str, str]]:
        return [check_image(image_root, relative) for relative in part]

    parts = [distinct[k::workers] for k in range(workers)]
    results = run_forked([functools.partial(check, part) for part in parts])
    return {relative: result for part, checked in zip(parts, results, strict=True)
            for relative, result in zip(part, checked, strict=True)}


# The release shares memes between the seen and unseen versions of a split (dev_unseen holds memes of
# dev_seen): the same record in both is kept in both. Any other id met twice is a bad record.
TWIN_SPLITS = ({"dev_seen", "dev_unseen"}, {"test_seen", "test_unseen"})


@dataclass(frozen=True)
class FirstSeen:
    where: str  # "file:line"
    split: str
    meme: Meme


def validate_split(
    split: str, label: str, rows: list[tuple[int, dict | str]], image_root: Path, seen: dict[int, FirstSeen]
) -> SplitCheck:
    """Check every row of one split (read from the file `label`); `seen` maps ids to where they were first
    met, across splits, and is updated."""
    check = SplitCheck(file=label, lines_read=len(rows))
    here: dict[int, str] = {}  # id -> "file:line" in this split
    parsed = [check_record(record) for _, record in rows]
    images = check_images(image_root, [meme.img for meme, _ in parsed if meme is not None])
    for (number, record), (meme, reason) in zip(rows, parsed, strict=True):
        shared = meme is not None and meme.id in seen and is_shared(seen[meme.id], split, meme)
        if meme is not None and (meme.id in here or (meme.id in seen and not shared)):
            meme, reason = None, f"duplicate id (first at {here.get(meme.id) or seen[meme.id].where})"
        if meme is not None:
            reason, note = images[meme.img]
            if note:
                check.notes.append(f"{label}:{number} id={meme.id} {note}")
        if reason:
            record_id = record.get("id") if isinstance(record, dict) else None
            check.rejected.append(Rejected(label, number, record_id, reason))
            continue
        here[meme.id] = f"{label}:{number}"
        if shared:
            check.notes.append(f"{label}:{number} id={meme.id} is also {seen[meme.id].where}, the same record: "
                               f"kept in both splits (the release shares memes between seen and unseen splits)")
        else:
            seen[meme.id] = FirstSeen(f"{label}:{number}", split, meme)
        check.accepted.append(meme)
    return check


def is_shared(first: FirstSeen, split: str, meme: Meme) -> bool:
    """The same meme in the seen and the unseen version of a split (not twice in one, not train and test)."""
    return {first.split, split} in TWIN_SPLITS and first.meme == meme
