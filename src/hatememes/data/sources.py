"""Where the memes come from: a local folder, the official zip, the HuggingFace Hub copy, or the generator.

Every source ends as a `RawSplits`: per official split name, the parsed lines of its jsonl and the folder
the `img` paths are relative to. `fetch()` validates them all and writes `data/memes/` + manifest.json.
With `fetch.fine_grained` (or the synthetic source, whose world writes its own), the WOAH 2021 fine-grained
annotations are validated against the accepted memes and written to `data/memes/fine_grained/`.

Layouts recognised in a folder (or one level below it, as the zip unpacks to `hateful_memes/`):
    official   train.jsonl, dev_seen.jsonl, ... + img/
    MMF        annotations/*.jsonl + images/img/
    Phase 1    dev.jsonl / test.jsonl, read as dev_seen / test_seen
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from hatememes.data.fine_grained import (
    FINE_SPLITS,
    FOLDER,
    AnnotationCheck,
    annotation_file,
    validate_annotations,
    write_annotations,
)
from hatememes.data.memes import (
    SPLITS,
    BadRecordsError,
    FirstSeen,
    SplitCheck,
    read_jsonl_rows,
    validate_split,
    write_split,
)
from hatememes.data.synthetic import SyntheticConfig, generate_memes
from hatememes.files import write_json

PHASE1_NAMES = {"dev": "dev_seen", "test": "test_seen"}
ZIP_PASSWORD_ENV = "HATEMEMES_ZIP_PASSWORD"


@dataclass(frozen=True)
class HubParams:
    repo: str = "neuralcatcher/hateful_memes"  # a dataset repo id, or a local folder laid out like it
    revision: str = "main"


@dataclass(frozen=True)
class FetchParams:
    source: Literal["synthetic", "local", "zip", "hub"] = "synthetic"
    path: str = "data/raw"  # the folder (local) or archive (zip)
    zip_sha256: str = ""  # optional pin of the archive's checksum
    on_bad_record: Literal["error", "skip"] = "error"
    fine_grained: str = ""  # the folder of the WOAH 2021 annotations (train/dev_seen/dev_unseen.json); "": none
    hub: HubParams = field(default_factory=HubParams)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class RawSplits:
    image_root: Path
    rows: dict[str, list[tuple[int, dict | str]]]  # split -> (line, parsed record or parse error)
    files: dict[str, str]  # split -> the file name shown in messages
    info: dict = field(default_factory=dict)
    oracles: dict = field(default_factory=dict)  # synthetic only: unimodal and pair oracle AUROCs per split


@dataclass
class RawAnnotations:
    source: str  # the folder, or "synthetic"
    rows: dict[str, list[tuple[int, dict | str]]]  # split -> (line, parsed record or parse error)
    files: dict[str, str]  # split -> the file name shown in messages


class UnsafeArchiveError(ValueError):
    """The archive holds members that would be written outside the target folder."""


def find_layout(folder: Path) -> tuple[Path, dict[str, Path]]:
    """(image root, {split: jsonl}) of a folder in the official, MMF or Phase-1 layout."""
    folder = Path(folder)
    candidates = [folder] + sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    for base in candidates:
        for labels_dir, images in ((base, base), (base / "annotations", base / "images")):
            files = {PHASE1_NAMES.get(p.stem, p.stem): p for p in sorted(labels_dir.glob("*.jsonl"))}
            files = {split: path for split, path in files.items() if split in SPLITS}
            if files and (images / "img").is_dir():
                return images, files
    raise FileNotFoundError(
        f"{folder}: no Hateful Memes layout found (expected <split>.jsonl + img/, or MMF's annotations/ + images/img/)"
    )


def local_splits(folder: Path) -> RawSplits:
    image_root, files = find_layout(folder)
    rows = {split: read_jsonl_rows(path) for split, path in files.items()}
    return RawSplits(image_root, rows, {s: str(p) for s, p in files.items()}, {"folder": str(folder)})


def check_archive_members(archive: zipfile.ZipFile) -> None:
    bad = []
    for member in archive.infolist():
        name = member.filename
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            bad.append(f"{name} (absolute path)")
        elif ".." in Path(name.replace("\\", "/")).parts:
            bad.append(f"{name} (escapes the target with '..')")
        elif stat.S_ISLNK(member.external_attr >> 16):
            bad.append(f"{name} (symbolic link)")
    if bad:
        raise UnsafeArchiveError(f"{archive.filename}: refusing to extract unsafe members: " + "; ".join(bad))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_zip(archive_path: Path, target: Path, expected_sha256: str = "") -> None:
    """Unpack the official archive after checking its checksum (if pinned) and every member's path."""
    archive_path = Path(archive_path)
    if not archive_path.is_file():
        raise FileNotFoundError(f"{archive_path}: archive not found")
    if expected_sha256:
        actual = sha256_file(archive_path)
        if actual != expected_sha256.lower():
            raise ValueError(f"{archive_path}: sha256 {actual} does not match the pinned {expected_sha256}")
    password = os.environ.get(ZIP_PASSWORD_ENV)
    try:
        with zipfile.ZipFile(archive_path) as archive:
            check_archive_members(archive)
            archive.extractall(target, pwd=password.encode() if password else None)
    except RuntimeError as error:
        if "password" not in str(error):
            raise
        hint = "is wrong" if password else f"is required: set {ZIP_PASSWORD_ENV}"
        raise PermissionError(f"{archive_path}: the archive is encrypted and the password {hint}") from None
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:  # not a zip, truncated, a member's CRC wrong
        hint = f" (or the password in {ZIP_PASSWORD_ENV} is wrong)" if password else ""
        raise ValueError(f"{archive_path}: damaged or not a zip archive{hint}: {error}") from None


def hub_splits(hub: HubParams) -> RawSplits:
    """The Hub copy through `datasets`' json loader, one explicit data file per split."""
    import datasets

    folder = Path(hub.repo)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(
            snapshot_download(
                repo_id=hub.repo, repo_type="dataset", revision=hub.revision, token=os.environ.get("HF_TOKEN")
            )
        )
    image_root, files = find_layout(folder)
    # One explicit file per split: given the folder alone, the library would merge dev_seen with dev_unseen.
    data_files = {split: str(path) for split, path in files.items()}
    try:
        loaded = datasets.load_dataset("json", data_files=data_files)
    except Exception as error:  # datasets wraps parse errors in several types; name the files either way
        raise ValueError(f"{hub.repo}: the datasets json loader could not read {sorted(data_files)}: {error}") from None
    rows = {}
    for split in files:
        records = [{k: v for k, v in record.items() if v is not None} for record in loaded[split]]
        for record in records:  # relative img paths become absolute, as the loader knows no dataset root
            if isinstance(record.get("img"), str):
                record["img"] = str((image_root / record["img"]).resolve())
        rows[split] = list(enumerate(records, start=1))
    info = {"repo": hub.repo, "revision": hub.revision}
    return RawSplits(image_root, rows, {s: str(p) for s, p in files.items()}, info)


def content_hash(jsonl: Path, image_paths: list[Path]) -> str:
    digest = hashlib.sha256(jsonl.read_bytes())
    for path in image_paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_memes(out: Path, raw: RawSplits, checks: dict[str, SplitCheck]) -> dict:
    """Copy (hard-link) the accepted memes into the official layout under `out`; the manifest's split part."""
    (out / "img").mkdir(parents=True)
    splits = {}
    for split, check in checks.items():
        memes, images = [], []
        for meme in check.accepted:
            source = (raw.image_root / meme.img).resolve()
            target = out / "img" / source.name
            if not target.exists():
                link_or_copy(source, target)
            memes.append(type(meme)(meme.id, f"img/{source.name}", meme.text, meme.label))
            images.append(target)
        jsonl = write_split(out, split, memes)
        splits[split] = {
            "file": raw.files[split],
            "lines_read": check.lines_read,
            "count": len(memes),
            "hateful": sum(m.label == 1 for m in memes),
            "labelled": sum(m.label != -1 for m in memes),
            "rejected": len(check.rejected),
            "sha256": content_hash(jsonl, images),
        }
    return splits


def read_source(params: FetchParams, staging: Path) -> RawSplits:
    if params.source == "local":
        return local_splits(Path(params.path))
    if params.source == "zip":
        extract_zip(Path(params.path), staging / "unzipped", params.zip_sha256)
        raw = local_splits(staging / "unzipped")
        raw.info = {"archive": params.path}
        return named_inside(raw, staging / "unzipped", params.path)  # the unzipped copy is deleted
    if params.source == "hub":
        return hub_splits(params.hub)
    info = generate_memes(staging / "synthetic", params.synthetic)
    raw = local_splits(staging / "synthetic")
    raw.info = {"synthetic": asdict(params.synthetic)}
    raw.oracles = info["oracles"]
    return named_inside(raw, staging / "synthetic", "synthetic")


def named_inside(raw: RawSplits, folder: Path, name: str) -> RawSplits:
    """Name the split files `<name>:<path inside>` (an archive member) rather than a temporary copy's path."""
    raw.files = {split: f"{name}:{Path(file).relative_to(folder).as_posix()}" for split, file in raw.files.items()}
    return raw


def read_annotations(params: FetchParams, staging: Path) -> RawAnnotations | None:
    """The fine-grained annotation files of FINE_SPLITS, or None when there are none to fetch."""
    if params.source == "synthetic":
        folder = staging / "synthetic" / FOLDER
    elif params.fine_grained:
        folder = Path(params.fine_grained)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: fetch.fine_grained names no folder (the fine-grained annotations)")
    else:
        return None
    files = {split: annotation_file(folder, split) for split in FINE_SPLITS}
    names = {split: f"synthetic:{FOLDER}/{path.name}" if params.source == "synthetic" else str(path)
             for split, path in files.items()}
    rows = {split: read_jsonl_rows(path) for split, path in files.items()}
    return RawAnnotations("synthetic" if params.source == "synthetic" else params.fine_grained, rows, names)


def validate_fine_grained(annotations: RawAnnotations, checks: dict[str, SplitCheck]) -> dict[str, AnnotationCheck]:
    """Check each split's annotations against the memes accepted in that split."""
    empty = SplitCheck(file="")
    return {split: validate_annotations(split, annotations.files[split], annotations.rows[split],
                                        checks.get(split, empty).accepted,
                                        {r.id for r in checks.get(split, empty).rejected})
            for split in FINE_SPLITS}


def fetch(params: FetchParams, out: Path) -> dict:
    """Read the source, validate every record, write `out/` (official layout) and `out/manifest.json`.

    `out` appears only when complete: it is built under a temporary name beside it, then renamed."""
    if params.source == "synthetic" and params.fine_grained:
        raise ValueError(f"fetch.fine_grained is {params.fine_grained!r}, but the synthetic source writes its own "
                         "fine-grained annotations: leave it empty")
    out = Path(out)
    staging = out.with_name(f".{out.name}.partial")  # one fixed name: a killed run's leftovers go on the rerun
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        raw = read_source(params, staging)
        annotations = read_annotations(params, staging)
        seen: dict[int, FirstSeen] = {}
        checks = {split: validate_split(split, raw.files[split], raw.rows[split], raw.image_root, seen)
                  for split in SPLITS if split in raw.rows}
        fine = validate_fine_grained(annotations, checks) if annotations else {}
        rejected = [r for check in (*checks.values(), *fine.values()) for r in check.rejected]
        if rejected and params.on_bad_record == "error":
            raise BadRecordsError(rejected)
        building = staging / "memes"
        empty = [s for s, check in checks.items() if not check.accepted]  # left out: later stages need rows
        manifest = {
            "source": params.source,
            "source_info": raw.info,
            "splits": write_memes(building, raw, {s: c for s, c in checks.items() if s not in empty}),
            "missing_splits": [s for s in SPLITS if s not in checks or s in empty],
            "rejected": [asdict(r) for r in rejected],
            "notes": [note for check in checks.values() for note in check.notes]
            + [f"{raw.files[s]}: no valid records; left out like a missing split" for s in empty],
        }
        if raw.oracles:
            manifest["oracles"] = raw.oracles
        if annotations:
            manifest["fine_grained"] = {"source": annotations.source, "splits": {
                split: write_annotations(building, split, check, checks[split].accepted if split in checks else [])
                for split, check in fine.items()}}
        write_json(building / "manifest.json", manifest)
        if out.exists():
            shutil.rmtree(out)
        building.rename(out)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
