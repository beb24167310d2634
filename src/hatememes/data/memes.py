"""The Hateful Memes layout (Kiela et al. 2020) as released and as MMF reads it, with validation.

    root/img/NNNNN.png
    root/{train,dev_seen,dev_unseen,test_seen,test_unseen}.jsonl   one {"id", "img", "text", "label"?} a line

`read_split` returns validated `Meme` records; `validate_split` returns the accepted ones and a
`Rejected` entry (file, line, id, reason) for every line that is not a valid meme.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

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
