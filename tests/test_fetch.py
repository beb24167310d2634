"""The fetch stage: every source, every kind of bad record, in error and skip mode; nothing valid is lost."""

from __future__ import annotations

import dataclasses
import io
import json
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import SIZES, save_png, write_lines, write_official
from hatememes.data.memes import SPLITS, BadRecordsError, load_rgb, read_split
from hatememes.data.sources import FetchParams, HubParams, UnsafeArchiveError, fetch
from hatememes.files import read_json


def local(path: Path, **changes) -> FetchParams:
    return dataclasses.replace(FetchParams(source="local", path=str(path)), **changes)


def test_local_official_layout_reproduces_counts(official, tmp_path):
    manifest = fetch(local(official), tmp_path / "memes")
    for split, count in SIZES.items():
        assert manifest["splits"][split]["count"] == count
        assert manifest["splits"][split]["lines_read"] == count
        source = [json.loads(line) for line in (official / f"{split}.jsonl").read_text().splitlines()]
        assert [m.id for m in read_split(tmp_path / "memes", split)] == [r["id"] for r in source]
    assert manifest["rejected"] == []
    assert read_json(tmp_path / "memes" / "manifest.json") == manifest
    first = read_split(tmp_path / "memes", "train")[0]
    assert (tmp_path / "memes" / first.img).read_bytes() == (official / first.img).read_bytes()


def test_source_folder_is_never_modified(official, tmp_path):
    before = {p: p.read_bytes() for p in official.rglob("*") if p.is_file()}
    fetch(local(official), tmp_path / "memes")
    assert {p: p.read_bytes() for p in official.rglob("*") if p.is_file()} == before


def test_mmf_layout_and_phase1_names(tmp_path):
    flat = tmp_path / "flat"
    write_official(flat, {"train": 4, "dev": 2, "test": 2})
    mmf = tmp_path / "mmf" / "defaults"
    (mmf / "annotations").mkdir(parents=True)
    for name in ("train", "dev", "test"):
        (flat / f"{name}.jsonl").rename(mmf / "annotations" / f"{name}.jsonl")
    (mmf / "images").mkdir()
    (flat / "img").rename(mmf / "images" / "img")
    manifest = fetch(local(tmp_path / "mmf"), tmp_path / "memes")
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 4, "dev_seen": 2, "test_seen": 2}
    assert manifest["missing_splits"] == ["dev_unseen", "test_unseen"]


def test_seen_and_unseen_twins_may_share_a_meme_but_nothing_else_may(official, tmp_path):
    """The release puts memes of dev_seen into dev_unseen too: the same record is kept in both splits; a
    conflicting record under a shared id, a second copy within one split, or train/test overlap is rejected."""
    dev_seen = [json.loads(line) for line in (official / "dev_seen.jsonl").read_text().splitlines()]
    test_seen = [json.loads(line) for line in (official / "test_seen.jsonl").read_text().splitlines()]
    train = [json.loads(line) for line in (official / "train.jsonl").read_text().splitlines()]
    with (official / "dev_unseen.jsonl").open("a") as file:
        file.write(json.dumps(dev_seen[0]) + "\n")  # the same meme: kept
        file.write(json.dumps(dev_seen[0]) + "\n")  # ...but only once in dev_unseen
    with (official / "test_unseen.jsonl").open("a") as file:
        file.write(json.dumps({**test_seen[0], "text": "another caption"}) + "\n")  # same id, other meme
        file.write(json.dumps(train[0]) + "\n")  # a training meme in a test split
    unseen = {split: len((official / f"{split}.jsonl").read_text().splitlines()) for split in ("dev_unseen",
                                                                                            "test_unseen")}
    with pytest.raises(BadRecordsError) as error:
        fetch(local(official), tmp_path / "strict")
    rejected = {(r.file.rsplit("/", 1)[-1], r.line): r.reason for r in error.value.rejected}
    assert rejected == {
        ("dev_unseen.jsonl", unseen["dev_unseen"]): f"duplicate id (first at {official}/dev_unseen.jsonl:"
                                                    f"{unseen['dev_unseen'] - 1})",
        ("test_unseen.jsonl", unseen["test_unseen"] - 1): f"duplicate id (first at {official}/test_seen.jsonl:1)",
        ("test_unseen.jsonl", unseen["test_unseen"]): f"duplicate id (first at {official}/train.jsonl:1)",
    }
    manifest = fetch(local(official, on_bad_record="skip"), tmp_path / "memes")
    assert dev_seen[0]["id"] in [m.id for m in read_split(tmp_path / "memes", "dev_unseen")]
    assert dev_seen[0]["id"] in [m.id for m in read_split(tmp_path / "memes", "dev_seen")]
    assert manifest["splits"]["dev_unseen"]["count"] == SIZES["dev_unseen"] + 1
    assert any(f"id={dev_seen[0]['id']} is also" in note for note in manifest["notes"])


def corrupt(root: Path) -> dict[str, str]:
    """Break the folder in every way fetch must catch; returns {expected 'file:line' suffix: reason part}."""
    train = root / "train.jsonl"
    lines = train.read_bytes().splitlines()
    (root / "img" / "00002.png").write_bytes((root / "img" / "00002.png").read_bytes()[:40])  # truncated
    (root / "img" / "00003.png").unlink()  # missing image
    bomb = root / "img" / "bomb.png"
    Image.new("1", (8000, 7000)).save(bomb)  # 56 Mpx, a few KB on disk
    lines += [
        b'{"id": 100, "img": "img/00001.png", "text": "no closing brace"',
        b'{"img": "img/00001.png", "text": "no id", "label": 0}',
        b'{"id": "101", "img": "img/00001.png", "text": "id is a string", "label": 0}',
        b'{"id": 102, "img": "img/00001.png", "text": "label two", "label": 2}',
        b'{"id": 1, "img": "img/00001.png", "text": "duplicate within the split", "label": 0}',
        b'{"id": 103, "img": "img/bomb.png", "text": "decompression bomb", "label": 0}',
        b'{"id": 104, "img": "img/00001.png", "text": "  ", "label": 0}',
        b'{"id": 105, "img": "img/00001.png", "text": "caf\xe9 latin-1", "label": 0}',
        b'{"id": 106, "img": "../outside.png", "text": "escapes", "label": 1}',
        b'[1, 2, 3]',
    ]
    write_lines(train, lines)
    with (root / "dev_seen.jsonl").open("ab") as dev:
        dev.write(b'{"id": 5, "img": "img/00005.png", "text": "duplicate across splits", "label": 1}\n')
    return {
        "train.jsonl:2": "image img/00002.png does not decode",
        "train.jsonl:3": "image img/00003.png not found",
        "train.jsonl:7": "malformed JSON",
        "train.jsonl:8": "missing field 'id'",
        "train.jsonl:9": "field 'id' must be int",
        "train.jsonl:10": "label must be 0 or 1",
        "train.jsonl:11": "duplicate id (first at",
        "train.jsonl:12": "pixels (limit",
        "train.jsonl:13": "empty text",
        "train.jsonl:14": "not UTF-8",
        "train.jsonl:15": "escapes the dataset folder",
        "train.jsonl:16": "expected a JSON object",
        "dev_seen.jsonl:4": "duplicate id (first at",
    }


def test_error_mode_lists_every_bad_record(official, tmp_path):
    expected = corrupt(official)
    with pytest.raises(BadRecordsError) as error:
        fetch(local(official), tmp_path / "memes")
    message = str(error.value)
    assert f"{len(expected)} bad record(s)" in message
    for where, reason in expected.items():
        line = next(row for row in message.splitlines() if row.strip().split(" ")[0].endswith(where))
        assert reason in line, line
    assert not (tmp_path / "memes").exists()


def test_skip_mode_records_every_bad_record_and_keeps_every_valid_one(official, tmp_path):
    expected = corrupt(official)
    manifest = fetch(local(official, on_bad_record="skip"), tmp_path / "memes")
    rejected = {f"{Path(r['file']).name}:{r['line']}": r["reason"] for r in manifest["rejected"]}
    assert set(rejected) == set(expected)
    for where, reason in expected.items():
        assert reason in rejected[where]
    for info in manifest["splits"].values():
        assert info["count"] + info["rejected"] == info["lines_read"]
    assert [m.id for m in read_split(tmp_path / "memes", "train")] == [1, 4, 5, 6]
    assert manifest["splits"]["dev_seen"]["count"] == SIZES["dev_seen"]


def test_any_image_mode_is_read_as_rgb_and_odd_formats_are_noted(official, tmp_path):
    for number, mode in zip((1, 2, 3, 4), ("RGBA", "P", "L", "CMYK"), strict=True):
        save_png(official / "img" / f"{number:05d}.png", number, mode=mode)
    manifest = fetch(local(official), tmp_path / "memes")
    assert manifest["splits"]["train"]["count"] == SIZES["train"]
    assert manifest["notes"] == ["train.jsonl:4 id=4 image img/00004.png holds JPEG data under a .png name (kept)"
                                 .replace("train.jsonl", str(official / "train.jsonl"))]
    for meme in read_split(tmp_path / "memes", "train")[:4]:
        assert load_rgb(tmp_path / "memes" / meme.img).mode == "RGB"


def make_zip(path: Path, source: Path, extra: dict[str, bytes] | None = None, symlink: str = "") -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(source.rglob("*")):
            if file.is_file():
                archive.write(file, "hateful_memes/" + file.relative_to(source).as_posix())
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")


def test_zip_source_with_checksum(official, tmp_path):
    archive = tmp_path / "hateful_memes.zip"
    make_zip(archive, official)
    from hatememes.data.sources import sha256_file

    params = FetchParams(source="zip", path=str(archive), zip_sha256=sha256_file(archive))
    manifest = fetch(params, tmp_path / "memes")
    assert manifest["splits"]["train"]["count"] == SIZES["train"]
    assert manifest["splits"]["train"]["file"] == f"{archive}:hateful_memes/train.jsonl"  # the member, not a temp
    with pytest.raises(ValueError, match="does not match the pinned"):
        fetch(dataclasses.replace(params, zip_sha256="0" * 64), tmp_path / "again")


@pytest.mark.parametrize(
    "extra, symlink, reason",
    [({"../evil.txt": b"x"}, "", "escapes the target"), ({"/abs/evil.txt": b"x"}, "", "absolute path"),
     ({}, "hateful_memes/link", "symbolic link")],
)
def test_zip_refuses_escaping_members(official, tmp_path, extra, symlink, reason):
    archive = tmp_path / "evil.zip"
    make_zip(archive, official, extra, symlink)
    with pytest.raises(UnsafeArchiveError, match=reason):
        fetch(FetchParams(source="zip", path=str(archive)), tmp_path / "memes")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "memes").exists()


def encrypted_zip(path: Path, source: Path, password: bytes) -> None:
    """A ZipCrypto archive (zipfile reads but cannot write them), written with the `zip` format by hand."""
    import struct
    import zlib

    def keys_update(keys, byte):
        k0, k1, k2 = keys
        k0 = (zlib.crc32(bytes([byte]), k0 ^ 0xFFFFFFFF) ^ 0xFFFFFFFF) & 0xFFFFFFFF
        k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k2 = (zlib.crc32(bytes([(k1 >> 24) & 0xFF]), k2 ^ 0xFFFFFFFF) ^ 0xFFFFFFFF) & 0xFFFFFFFF
        return k0, k1, k2

    def encrypt(data: bytes) -> bytes:
        keys = (0x12345678, 0x23456789, 0x34567890)
        for byte in password:
            keys = keys_update(keys, byte)
        out = bytearray()
        for byte in data:
            temp = (keys[2] | 2) & 0xFFFF
            out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
            keys = keys_update(keys, byte)
        return bytes(out)

    stream, central = io.BytesIO(), io.BytesIO()
    files = [f for f in sorted(source.rglob("*")) if f.is_file()]
    for file in files:
        data, name = file.read_bytes(), ("hateful_memes/" + file.relative_to(source).as_posix()).encode()
        crc = zlib.crc32(data)
        header = bytes(range(11)) + bytes([(crc >> 24) & 0xFF])  # fixed, so a wrong password fails alike
        payload = encrypt(header + data)
        offset = stream.tell()
        stream.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 1, 0, 0, 0, crc, len(payload), len(data),
                                 len(name), 0) + name + payload)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 1, 0, 0, 0, crc, len(payload),
                                  len(data), len(name), 0, 0, 0, 0, 0, offset) + name)
    start = stream.tell()
    stream.write(central.getvalue())
    stream.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(files), len(files), len(central.getvalue()),
                             start, 0))
    path.write_bytes(stream.getvalue())


def test_zip_with_password(official, tmp_path, monkeypatch, capsys):
    archive = tmp_path / "hateful_memes.zip"
    encrypted_zip(archive, official, b"s3cret-pw")
    params = FetchParams(source="zip", path=str(archive))
    monkeypatch.delenv("HATEMEMES_ZIP_PASSWORD", raising=False)
    with pytest.raises(PermissionError, match="password is required: set HATEMEMES_ZIP_PASSWORD"):
        fetch(params, tmp_path / "memes")
    monkeypatch.setenv("HATEMEMES_ZIP_PASSWORD", "wrong")
    with pytest.raises(PermissionError, match="password is wrong") as error:
        fetch(params, tmp_path / "memes")
    assert "wrong" not in str(error.value).replace("password is wrong", "")
    monkeypatch.setenv("HATEMEMES_ZIP_PASSWORD", "s3cret-pw")
    assert fetch(params, tmp_path / "memes")["splits"]["test_unseen"]["count"] == SIZES["test_unseen"]
    assert "s3cret-pw" not in (tmp_path / "memes" / "manifest.json").read_text() + capsys.readouterr().out


def test_hub_layout_through_datasets_json_loader(tmp_path, monkeypatch):
    repo = tmp_path / "hub_snapshot"  # laid out like neuralcatcher/hateful_memes: jsonl files + img/
    records = write_official(repo)
    for record in records["test_seen"]:  # some copies drop the label of test files
        record.pop("label")
    write_lines(repo / "test_seen.jsonl", [json.dumps(r) for r in records["test_seen"]])
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    manifest = fetch(FetchParams(source="hub", hub=HubParams(repo=str(repo))), tmp_path / "memes")
    assert {s: v["count"] for s, v in manifest["splits"].items()} == SIZES  # dev_seen, dev_unseen not merged
    assert manifest["splits"]["test_seen"]["labelled"] == 0
    assert [m.img for m in read_split(tmp_path / "memes", "dev_unseen")] == [r["img"] for r in records["dev_unseen"]]
    assert "hf_secret_token_value" not in (tmp_path / "memes" / "manifest.json").read_text()


def test_all_official_split_names_are_known():
    assert SPLITS == ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")
