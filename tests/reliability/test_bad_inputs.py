"""Every kind of bad input, one table: how each case is made, and the exact thing the user sees.

Each case starts from a valid official-layout folder (tests/conftest.py `write_official`), breaks it one
way, and runs the real stage `main([...])`:
    Rejects   fetch fails listing exactly these `file:line id=… reason` lines (error mode), and with
              `on_bad_record: skip` they are exactly the manifest's `rejected` entries while every other
              record is kept (accepted + rejected = lines read, per file)
    Kept      nothing is rejected: every record survives, with exactly these manifest notes
    Raises    the stage stops with this exception type and exactly this message, and writes nothing
Expected texts are literal; `…` stands for a library's own words, `{raw}` `{root}` for the test's folders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
from dvc.utils.serialize import dumps_yaml
from PIL import Image
from stage_runs import PARAMS, fetch_stage, fetched, train_args, train_stage, write_clip_features

from conftest import save_png, write_lines, write_official
from hatememes.data.memes import load_rgb, read_split
from hatememes.data.sources import UnsafeArchiveError
from hatememes.features.store import StaleFeaturesError
from hatememes.files import read_json
from hatememes.params import ParamsError, read_yaml
from test_fetch import encrypted_zip, make_zip

PASSWORD = "c0rrect-horse"


@dataclass(frozen=True)
class Rejects:
    entries: tuple[tuple[str, int, int | str | None, str], ...]  # (split, line, id, reason)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Kept:
    notes: tuple[str, ...] = ()
    check: Callable[[Path], None] | None = None  # on the fetched folder


@dataclass(frozen=True)
class Raises:
    error: type
    message: str


@dataclass(frozen=True)
class Run:
    """What a Raises case runs: a stage's main with these arguments and environment variables."""

    stage: str
    argv: list[str]
    env: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], Run | None]  # breaks tmp/raw (or builds what it needs under tmp)
    expect: Rejects | Kept | Raises


# ---- how cases are made -------------------------------------------------------------------------------

def append(split: str, *lines: bytes) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        path = tmp / "raw" / f"{split}.jsonl"
        write_lines(path, path.read_bytes().splitlines() + list(lines))
    return make


def record(**fields) -> bytes:
    return json.dumps({"id": 100, "img": "img/00001.png", "text": "a valid meme", "label": 0, **fields}).encode()


def without(key: str) -> bytes:
    data = json.loads(record())
    del data[key]
    return json.dumps(data).encode()


def edit_image(name: str, how: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        how(tmp / "raw" / "img" / name)
    return make


def truncate_png(path: Path) -> None:
    save_png(path, 2, size=(64, 48))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def replace_with_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def link_outside(path: Path) -> None:
    outside = path.parents[2] / "elsewhere.png"
    save_png(outside, 6)
    path.unlink()
    path.symlink_to(outside)


def bomb(tmp: Path) -> None:
    Image.new("1", (8000, 7000)).save(tmp / "raw" / "img" / "bomb.png")  # 56 Mpx in a few KB
    append("train", record(id=103, img="img/bomb.png"))(tmp)


def outside_file(tmp: Path) -> None:
    save_png(tmp / "outside.png", 1)
    append("train", record(id=106, img="../outside.png"))(tmp)


def rewrite(split: str, change: Callable[[list[bytes]], list[bytes]]) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        path = tmp / "raw" / f"{split}.jsonl"
        path.write_bytes(b"".join(change(path.read_bytes().splitlines(keepends=True))))
    return make


def as_mode(mode: str) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        path = tmp / "raw" / "img" / "00002.png"
        if mode == "RGBA":  # left half transparent: composited on white
            image = Image.new("RGBA", (24, 20), (200, 10, 10, 255))
            image.paste((0, 0, 0, 0), (0, 0, 12, 20))
            image.save(path)
        elif mode == "P+transparency":
            image = Image.new("P", (24, 20), 1)
            image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
            image.paste(0, (0, 0, 12, 20))
            image.save(path, transparency=0)
        else:
            save_png(path, 2, mode=mode)
    return make


def rgb_check(white_left: bool = False) -> Callable[[Path], None]:
    def check(memes: Path) -> None:
        meme = read_split(memes, "train")[1]
        image = load_rgb(memes / meme.img)
        assert (image.mode, image.size) == ("RGB", (24, 20))
        if white_left:
            assert image.getpixel((2, 2)) == (255, 255, 255) and image.getpixel((20, 2)) == (200, 10, 10)
    return check


def label_is_int(memes: Path) -> None:
    first = (memes / "train.jsonl").read_text().splitlines()[0]
    assert first == '{"id": 1, "img": "img/00001.png", "text": "meme number 1", "label": 1}'


def archive(kind: str, env: dict[str, str | None] | None = None, sha: str = "") -> Callable[[Path], Run]:
    def make(tmp: Path) -> Run:
        path = tmp / "hateful_memes.zip"
        if kind == "encrypted":
            with mock.patch("os.urandom", lambda n: bytes(n)):  # fixed headers: the wrong password fails the check
                encrypted_zip(path, tmp / "raw", PASSWORD.encode())
        elif kind == "not a zip":
            path.write_bytes(b"PK\x03\x04 this is not really an archive")
        else:
            extra, symlink = {"dotdot": ({"../evil.txt": b"x"}, ""), "absolute": ({"/abs/evil.txt": b"x"}, ""),
                              "symlink": ({}, "hateful_memes/link"), "plain": ({}, ""), "truncated": ({}, "")}[kind]
            make_zip(path, tmp / "raw", extra, symlink)
            if kind == "truncated":
                path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
        argv = ["--out", str(tmp / "memes"), "--source", "zip", "--path", str(path)]
        return Run("fetch", argv + (["--set", f"fetch.zip_sha256='{sha}'"] if sha else []), env or {})
    return make


def features(how: str) -> Callable[[Path], Run]:
    def make(tmp: Path) -> Run:
        memes = fetched(tmp / "data", {"train": 4, "dev_seen": 2})
        clip = tmp / "features" / "clip"
        if how != "missing":
            write_clip_features(memes, clip)
        if how == "corrupt":
            (clip / "train.safetensors").write_bytes(b"\x00" * 20)
        elif how == "stale":
            meta = read_json(clip / "meta.json")
            meta["data_sha256"]["train"] = "0" * 64
            (clip / "meta.json").write_text(json.dumps(meta))
        elif how == "reordered":
            from safetensors.torch import load_file

            from hatememes.features.store import save_split

            rows = load_file(str(clip / "train.safetensors"))
            save_split(clip, "train", rows["ids"].flip(0).tolist(), {k: v for k, v in rows.items() if k != "ids"})
        elif how == "meta not JSON":
            (clip / "meta.json").write_text('{"dim": 8,')
        return Run("train", train_args(memes, tmp / "features", tmp / "model"))
    return make


def params_file(change: Callable[[dict], None], stage: str = "fetch") -> Callable[[Path], Run]:
    def make(tmp: Path) -> Run:
        params = read_yaml(PARAMS)
        change(params)
        path = tmp / "params.yaml"
        path.write_text(dumps_yaml(params))  # as DVC writes it: the string '1e-4' quoted
        if stage == "train":
            return Run("train", ["clip_fusion", "--params", str(path)])
        return Run("fetch", ["--params", str(path), "--out", str(tmp / "memes"), "--source", "local",
                             "--path", str(tmp / "raw")])
    return make


def broken_yaml(tmp: Path) -> Run:
    (tmp / "params.yaml").write_text("fetch:\n  source: [local\n")
    return Run("fetch", ["--params", str(tmp / "params.yaml"), "--out", str(tmp / "memes")])


def override(item: str) -> Callable[[Path], Run]:
    return lambda tmp: Run("fetch", ["--out", str(tmp / "memes"), "--set", item])


def setting(path: str, value) -> Callable[[dict], None]:
    def change(params: dict) -> None:
        *parents, key = path.split(".")
        node = params
        for parent in parents:
            node = node[parent]
        node[key] = value
    return change


CASES = [
    # -- records: every bad line is named (file:line id=… reason), every valid one is kept
    Case("malformed JSON line", append("train", b'{"id": 100, "img": "img/00001.png", "text": "no closing brace"'),
         Rejects((("train", 7, None, "malformed JSON (Expecting ',' delimiter at column 63)"),))),
    Case("non-UTF-8 bytes", append("train", b'{"id": 105, "img": "img/00001.png", "text": "caf\xe9 au lait"}'),
         Rejects((("train", 7, None, "not UTF-8 (invalid continuation byte at byte 48)"),))),
    Case("a JSON list, not an object", append("train", b"[1, 2, 3]"),
         Rejects((("train", 7, None, "expected a JSON object, got list"),))),
    Case("a JSON string, not an object", append("train", b'"just a caption"'),
         Rejects((("train", 7, None, "expected a JSON object, got str"),))),
    Case("missing field id", append("train", without("id")), Rejects((("train", 7, None, "missing field 'id'"),))),
    Case("missing field img", append("train", without("img")), Rejects((("train", 7, 100, "missing field 'img'"),))),
    Case("missing field text", append("train", without("text")),
         Rejects((("train", 7, 100, "missing field 'text'"),))),
    Case("id is a string", append("train", record(id="101")),
         Rejects((("train", 7, "101", "field 'id' must be int, got str"),))),
    Case("id is a boolean", append("train", record(id=True)),
         Rejects((("train", 7, True, "field 'id' must be int, got bool"),))),
    Case("id is a float", append("train", record(id=101.0)),
         Rejects((("train", 7, 101.0, "field 'id' must be int, got float"),))),
    Case("text is a number", append("train", record(text=5)),
         Rejects((("train", 7, 100, "field 'text' must be str, got int"),))),
    Case("img is null", append("train", record(img=None)),
         Rejects((("train", 7, 100, "field 'img' must be str, got NoneType"),))),
    Case("label 2", append("train", record(label=2)),
         Rejects((("train", 7, 100, "label must be 0 or 1 (or absent), got 2"),))),
    Case("label '1' (a string)", append("train", record(label="1")),
         Rejects((("train", 7, 100, "label must be 0 or 1 (or absent), got '1'"),))),
    Case("label true", append("train", record(label=True)),
         Rejects((("train", 7, 100, "label must be 0 or 1 (or absent), got True"),))),
    Case("label NaN", append("train", b'{"id": 100, "img": "img/00001.png", "text": "t", "label": NaN}'),
         Rejects((("train", 7, 100, "label must be 0 or 1 (or absent), got nan"),))),
    Case("empty text", append("train", record(text="")), Rejects((("train", 7, 100, "empty text"),))),
    Case("whitespace-only text", append("train", record(text=" \t ")), Rejects((("train", 7, 100, "empty text"),))),
    Case("duplicate id within a split", append("train", record(id=1)),
         Rejects((("train", 7, 1, "duplicate id (first at {raw}/train.jsonl:1)"),))),
    Case("duplicate id across splits", append("dev_seen", record(id=5)),
         Rejects((("dev_seen", 4, 5, "duplicate id (first at {raw}/train.jsonl:5)"),))),
    Case("bad line after blank lines", append("train", b"", b"   ", without("id")),
         Rejects((("train", 9, None, "missing field 'id'"),))),
    Case("missing image", edit_image("00003.png", Path.unlink),
         Rejects((("train", 3, 3, "image img/00003.png not found"),))),
    Case("image path is a folder", edit_image("00003.png", replace_with_folder),
         Rejects((("train", 3, 3, "image img/00003.png not found"),))),
    Case("truncated PNG", edit_image("00002.png", truncate_png),
         Rejects((("train", 2, 2, "image img/00002.png does not decode: image file is truncated"),))),
    Case("zero-byte image", edit_image("00002.png", lambda p: p.write_bytes(b"")), Rejects((("train", 2, 2,
         "image img/00002.png does not decode: cannot identify image file '{raw}/img/00002.png'"),))),
    Case("text file named .png", edit_image("00002.png", lambda p: p.write_text("not an image")), Rejects((("train",
         2, 2, "image img/00002.png does not decode: cannot identify image file '{raw}/img/00002.png'"),))),
    Case("decompression-bomb-sized image", bomb,
         Rejects((("train", 7, 103, "image img/bomb.png has 8000x7000 pixels (limit 50000000)"),))),
    Case("img path escapes with ..", outside_file,
         Rejects((("train", 7, 106, "image path '../outside.png' escapes the dataset folder"),))),
    Case("absolute img path", append("train", record(id=107, img="/etc/hostname")),
         Rejects((("train", 7, 107, "image path '/etc/hostname' escapes the dataset folder"),))),
    Case("image symlinked outside the folder", edit_image("00006.png", link_outside),
         Rejects((("train", 6, 6, "image path 'img/00006.png' escapes the dataset folder"),))),
    Case("a split with no valid record", rewrite("dev_unseen", lambda lines: [b"[]\n"] * 3),
         Rejects(tuple(("dev_unseen", line, None, "expected a JSON object, got list") for line in (1, 2, 3)),
                 notes=("{raw}/dev_unseen.jsonl: no valid records; left out like a missing split",))),
    # -- valid but unusual: kept, read as RGB, noted where the name lies about the format
    Case("JPEG bytes named .png", edit_image("00004.png", lambda p: Image.new("RGB", (24, 20)).save(p, "JPEG")),
         Kept(notes=("{raw}/train.jsonl:4 id=4 image img/00004.png holds JPEG data under a .png name (kept)",))),
    Case("RGBA image (transparent half)", as_mode("RGBA"), Kept(check=rgb_check(white_left=True))),
    Case("P image with a transparent colour", as_mode("P+transparency"), Kept(check=rgb_check(white_left=True))),
    Case("L (grey) image", as_mode("L"), Kept(check=rgb_check())),
    Case("LA image", as_mode("LA"), Kept(check=rgb_check())),
    Case("1-bit image", as_mode("1"), Kept(check=rgb_check())),
    Case("I;16 image", as_mode("I;16"), Kept(check=rgb_check())),
    Case("CMYK JPEG named .png", as_mode("CMYK"),
         Kept(notes=("{raw}/train.jsonl:2 id=2 image img/00002.png holds JPEG data under a .png name (kept)",),
              check=rgb_check())),
    Case("label written 1.0", rewrite("train", lambda lines: [lines[0].replace(b'"label": 1', b'"label": 1.0'),
                                                              *lines[1:]]), Kept(check=label_is_int)),
    Case("UTF-8 byte-order mark", rewrite("train", lambda lines: [b"\xef\xbb\xbf" + lines[0], *lines[1:]]), Kept()),
    Case("CRLF line ends", rewrite("train", lambda lines: [line.replace(b"\n", b"\r\n") for line in lines]), Kept()),
    Case("no labels (a test split)", rewrite("test_seen", lambda lines: [
        json.dumps({k: v for k, v in json.loads(line).items() if k != "label"}).encode() + b"\n" for line in lines]),
         Kept()),
    # -- archives: refused before anything is extracted
    Case("zip member escaping with ..", archive("dotdot"), Raises(UnsafeArchiveError,
         "{root}/hateful_memes.zip: refusing to extract unsafe members: ../evil.txt (escapes the target with '..')")),
    Case("zip member with an absolute path", archive("absolute"), Raises(UnsafeArchiveError,
         "{root}/hateful_memes.zip: refusing to extract unsafe members: /abs/evil.txt (absolute path)")),
    Case("zip symlink member", archive("symlink"), Raises(UnsafeArchiveError,
         "{root}/hateful_memes.zip: refusing to extract unsafe members: hateful_memes/link (symbolic link)")),
    Case("zip with a wrong password", archive("encrypted", {"HATEMEMES_ZIP_PASSWORD": "not-it"}), Raises(
         PermissionError, "{root}/hateful_memes.zip: the archive is encrypted and the password is wrong")),
    Case("zip password not set", archive("encrypted", {"HATEMEMES_ZIP_PASSWORD": None}), Raises(PermissionError,
         "{root}/hateful_memes.zip: the archive is encrypted and the password is required: "
         "set HATEMEMES_ZIP_PASSWORD")),
    Case("not a zip archive", archive("not a zip"), Raises(ValueError,
         "{root}/hateful_memes.zip: damaged or not a zip archive: File is not a zip file")),
    Case("truncated zip archive", archive("truncated"), Raises(ValueError,
         "{root}/hateful_memes.zip: damaged or not a zip archive: …")),
    Case("zip checksum mismatch", archive("plain", sha="0" * 64), Raises(ValueError,
         "{root}/hateful_memes.zip: sha256 … does not match the pinned " + "0" * 64)),
    # -- feature caches: a stale or damaged cache is never used
    Case("corrupted features file", features("corrupt"), Raises(StaleFeaturesError,
         "{root}/features/clip/train.safetensors: unreadable features file (…); rerun the features stage")),
    Case("features of another data version", features("stale"), Raises(StaleFeaturesError,
         "{root}/features/clip/train.safetensors: computed from another version of {root}/data/memes/train.jsonl "
         "(data hash " + "0" * 64 + " != …); rerun the features stage")),
    Case("feature rows in another order", features("reordered"), Raises(StaleFeaturesError,
         "{root}/features/clip/train.safetensors: ids do not match the order of {root}/data/memes/train.jsonl")),
    Case("no feature cache", features("missing"), Raises(FileNotFoundError,
         "{root}/features/clip/meta.json: not found; clip_fusion needs the 'clip' features "
         "(run: python pipelines/features.py clip ...)")),
    Case("features meta.json not JSON", features("meta not JSON"), Raises(ValueError,
         "{root}/features/clip/meta.json: not valid JSON (…)")),
    # -- params: named key, named file
    Case("params: unknown key", params_file(setting("fetch.colour", "red")), Raises(ParamsError,
         "{root}/params.yaml: unknown key fetch.colour (valid keys: source, path, zip_sha256, on_bad_record, "
         "fine_grained, hub, synthetic)")),
    Case("params: value not among the choices", params_file(setting("fetch.on_bad_record", "ignore")), Raises(
         ParamsError, "{root}/params.yaml: fetch.on_bad_record must be one of 'error', 'skip', got 'ignore'")),
    Case("params: float for an integer", params_file(setting("fetch.synthetic.seed", 0.5)), Raises(ParamsError,
         "{root}/params.yaml: fetch.synthetic.seed must be an integer, got 0.5")),
    Case("params: a number written as a string", params_file(setting("train.clip_fusion.loop.lr", "1e-4"), "train"),
         Raises(ParamsError, "{root}/params.yaml: train.clip_fusion.loop.lr must be a number, got '1e-4'")),
    Case("params: not YAML", broken_yaml, Raises(ParamsError, "{root}/params.yaml: not valid YAML: …")),
    Case("override of an unknown key", override("fetch.colour=red"), Raises(ParamsError,
         "override 'fetch.colour=red': unknown key 'fetch.colour' (not in params.yaml)")),
]


# ---- the one test ---------------------------------------------------------------------------------------

def pattern(text: str, tmp: Path) -> re.Pattern:
    """A literal expected text as a regex: `…` matches a library's words, {raw}/{root} the test's folders."""
    text = text.replace("{raw}", str(tmp / "raw")).replace("{root}", str(tmp))
    return re.compile(".+".join(re.escape(part) for part in text.split("…")), re.DOTALL)


def fetch_local(tmp: Path, *extra: str) -> int:
    return fetch_stage.main(["--params", str(PARAMS), "--out", str(tmp / "memes"), "--source", "local",
                             "--path", str(tmp / "raw"), *extra])


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case: Case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # stages resolve default paths against the working folder: keep them here
    records = write_official(tmp_path / "raw")
    run = case.make(tmp_path)
    if isinstance(case.expect, Raises):
        check_raises(case.expect, run, tmp_path, monkeypatch)
    elif isinstance(case.expect, Rejects):
        check_rejects(case.expect, records, tmp_path, capsys)
    else:
        check_kept(case.expect, records, tmp_path)


def check_raises(expect: Raises, run: Run, tmp: Path, monkeypatch) -> None:
    for name, value in run.env.items():
        monkeypatch.setenv(name, value) if value is not None else monkeypatch.delenv(name, raising=False)
    if run.stage == "fetch" and "--params" not in run.argv:
        run.argv[:0] = ["--params", str(PARAMS)]
    main = {"fetch": fetch_stage.main, "train": train_stage.main}[run.stage]
    with pytest.raises(expect.error) as raised:
        main(run.argv)
    assert type(raised.value) is expect.error
    assert pattern(expect.message, tmp).fullmatch(str(raised.value)), str(raised.value)
    leftovers = {p.name for p in tmp.iterdir()} - {"raw", "data", "features", "hateful_memes.zip", "params.yaml"}
    assert not leftovers, f"written despite the error: {leftovers}"  # no memes, no staging, no escaped file
    assert not (tmp.parent / "evil.txt").exists() and not Path("/abs/evil.txt").exists()


def survivors(records: dict[str, list[dict]], lost: set[tuple[str, int]]) -> dict[str, list[int]]:
    kept = {split: [r["id"] for line, r in enumerate(rows, start=1) if (split, line) not in lost]
            for split, rows in records.items()}
    return {split: ids for split, ids in kept.items() if ids}


def check_rejects(expect: Rejects, records: dict, tmp: Path, capsys) -> None:
    capsys.readouterr()
    assert fetch_local(tmp) == 1
    shown = capsys.readouterr().err.splitlines()
    assert shown[0] == f"fetch: {len(expect.entries)} bad record(s):"
    assert shown[-1].startswith("(set fetch.on_bad_record: skip")
    assert len(shown) == len(expect.entries) + 2
    for line, (split, number, meme_id, reason) in zip(shown[1:-1], expect.entries, strict=True):
        where = f"  {tmp / 'raw' / split}.jsonl:{number} id={meme_id} "
        assert line.startswith(where) and pattern(reason, tmp).fullmatch(line[len(where):]), line
    assert not (tmp / "memes").exists() and not (tmp / ".memes.partial").exists()

    assert fetch_local(tmp, "--set", "fetch.on_bad_record=skip") == 0
    manifest = read_json(tmp / "memes" / "manifest.json")
    assert len(manifest["rejected"]) == len(expect.entries)
    for entry, (split, number, meme_id, reason) in zip(manifest["rejected"], expect.entries, strict=True):
        assert (entry["file"], entry["line"], entry["id"]) == (f"{tmp / 'raw' / split}.jsonl", number, meme_id)
        assert pattern(reason, tmp).fullmatch(entry["reason"]), entry["reason"]
    lost = {(split, number) for split, number, _, _ in expect.entries}
    check_kept_records(manifest, survivors(records, lost), tmp)
    assert manifest["notes"] == [note.replace("{raw}", str(tmp / "raw")) for note in expect.notes]


def check_kept(expect: Kept, records: dict, tmp: Path) -> None:
    assert fetch_local(tmp) == 0
    manifest = read_json(tmp / "memes" / "manifest.json")
    assert manifest["rejected"] == []
    assert manifest["notes"] == [note.replace("{raw}", str(tmp / "raw")) for note in expect.notes]
    check_kept_records(manifest, survivors(records, set()), tmp)
    if expect.check is not None:
        expect.check(tmp / "memes")


def check_kept_records(manifest: dict, expected: dict[str, list[int]], tmp: Path) -> None:
    """Every valid record survives, in file order; per file accepted + rejected = lines read."""
    assert sorted(manifest["splits"]) == sorted(expected)
    assert manifest["missing_splits"] == [s for s in ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")
                                          if s not in expected]
    for split, ids in expected.items():
        assert [m.id for m in read_split(tmp / "memes", split)] == ids
        info = manifest["splits"][split]
        assert info["count"] + info["rejected"] == info["lines_read"]


def test_every_case_kind_is_in_the_table():
    """The brief's list of bad inputs, each present by name (so the table cannot silently shrink)."""
    names = " | ".join(case.name for case in CASES)
    for kind in ("malformed JSON", "missing field", "id is a string", "label 2", "duplicate id within",
                 "duplicate id across", "missing image", "truncated PNG", "JPEG bytes named .png", "RGBA", "P image",
                 "L (grey)", "CMYK", "decompression-bomb", "empty text", "non-UTF-8", "zip member escaping",
                 "zip symlink", "wrong password", "corrupted features", "another data version", "unknown key",
                 "float for an integer"):
        assert kind in names, kind
