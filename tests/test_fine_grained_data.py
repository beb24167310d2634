"""fetch and the WOAH 2021 fine-grained annotations: read, validated against the accepted memes, written beside
them in the memes' order, summed up in the manifest; every bad record named, nothing valid lost."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from conftest import SIZES, annotation, write_annotations, write_lines, write_official
from hatememes.data import synthetic as S
from hatememes.data.fine_grained import (
    ATTACK_LABELS,
    FIELDS,
    FINE_SPLITS,
    PC_LABELS,
    FineLabels,
    fine_labels_path,
    read_fine_labels,
)
from hatememes.data.memes import SPLITS, BadRecordsError, read_split
from hatememes.data.sources import FetchParams, fetch
from test_fetch import corrupt, local

ROOT = Path(__file__).parents[1]
UNANNOTATED = (3, 8)  # a hateful meme of train, a benign one of dev_seen: no record in `annotated`
SMALL = S.SyntheticConfig(seed=3, scale=0.0, image_size=32)  # K*K = 64 memes a split, as in test_synthetic


@pytest.fixture
def annotated(tmp_path: Path) -> tuple[Path, Path, dict[str, list[dict]]]:
    """(memes folder, annotations folder, the annotation records); the UNANNOTATED memes have none."""
    memes = write_official(tmp_path / "hateful_memes")
    return tmp_path / "hateful_memes", tmp_path / "annotations", write_annotations(tmp_path / "annotations",
                                                                                    memes, skip=UNANNOTATED)


@pytest.fixture(scope="module")
def synthetic_fetch(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthetic") / "memes"
    return out, fetch(FetchParams(synthetic=SMALL), out)


def test_synthetic_fetch_writes_the_worlds_labels_for_train_and_dev(synthetic_fetch):
    out, manifest = synthetic_fetch
    worlds = S.sample_memes(SMALL)
    assert manifest["fine_grained"]["source"] == "synthetic"
    assert list(manifest["fine_grained"]["splits"]) == list(FINE_SPLITS)
    for split in FINE_SPLITS:
        expected = {m.meme.id: S.fine_labels(m.text_concept, m.image_concept) for m in worlds[split]}
        info = manifest["fine_grained"]["splits"][split]
        assert info["file"] == f"synthetic:fine_grained/{split}.json"
        assert (info["count"], info["unannotated"], info["rejected"]) == (len(worlds[split]), 0, 0)
        assert info["hateful"] == manifest["splits"][split]["hateful"]
        assert info["pc"] == {label: sum(label in pc for pc, _ in expected.values()) for label in PC_LABELS}
        assert info["attack"] == {label: sum(label in attack for _, attack in expected.values())
                                  for label in ATTACK_LABELS}
        labels = read_fine_labels(out, split)
        assert [json.loads(line)["id"] for line in fine_labels_path(out, split).read_text().splitlines()] == [
            m.id for m in read_split(out, split)]
        assert {i: (fine.gold_pc, fine.gold_attack) for i, fine in labels.items()} == expected
    for split in set(SPLITS) - set(FINE_SPLITS):
        assert read_fine_labels(out, split) is None and not fine_labels_path(out, split).exists()
    assert manifest["rejected"] == []


def test_local_folder_with_annotations_round_trips(annotated, tmp_path):
    memes, folder, records = annotated
    manifest = fetch(local(memes, fine_grained=str(folder)), tmp_path / "memes")
    out = tmp_path / "memes"
    assert manifest["fine_grained"]["source"] == str(folder)
    for split in FINE_SPLITS:
        written = fine_labels_path(out, split).read_text(encoding="utf-8").splitlines()
        by_id = {r["id"]: r for r in records[split]}
        order = [m.id for m in read_split(out, split) if m.id in by_id]  # the memes' order, not the file's
        assert [json.loads(line) for line in written] == [by_id[i] for i in order]
        assert all(list(json.loads(line)) == list(FIELDS) for line in written)
        assert read_fine_labels(out, split) == {i: FineLabels(tuple(r["gold_hate"]), tuple(r["gold_pc"]),
                                                              tuple(r["gold_attack"])) for i, r in by_id.items()}
        info = manifest["fine_grained"]["splits"][split]
        name = f"{split}.jsonl" if split == "dev_unseen" else f"{split}.json"
        assert info["file"] == str(folder / name)
        assert (info["lines_read"], info["count"], info["rejected"]) == (len(by_id), len(by_id), 0)
        assert info["unannotated"] == SIZES[split] - len(by_id)
        assert info["hateful"] == sum(r["gold_hate"] == ["hateful"] for r in by_id.values())
        assert info["pc"]["race"] == info["pc"]["sex"] == sum(r["gold_pc"] == ["race", "sex"] for r in by_id.values())
        assert info["sha256"] == hashlib.sha256(fine_labels_path(out, split).read_bytes()).hexdigest()
    train = manifest["fine_grained"]["splits"]["train"]
    assert (train["unannotated"], train["attack"]["attack_empty"], train["pc"]["religion"]) == (1, 4, 1)
    assert read_fine_labels(out, "train")[5] == FineLabels(("hateful",), ("religion",), ("attack_empty",))
    assert not (out / "fine_grained" / "test_seen.jsonl").exists()


def spoil(folder: Path, records: dict[str, list[dict]]) -> dict[str, tuple[int | str | None, str]]:
    """Append every kind of bad record to the annotation files; {'file:line': (id, reason part)}."""
    hateful = next(r for r in records["train"] if r["gold_hate"] == ["hateful"] and r["id"] != 5)
    meme_3 = annotation({"id": 3, "img": "img/00003.png", "text": "meme number 3", "label": 1}, "train")
    meme_8 = annotation({"id": 8, "img": "img/00008.png", "text": "meme number 8", "label": 0}, "dev_seen")
    first = records["train"][0]
    with_id = hateful["id"]
    train = [
        ('{"id": 1, "set_name": "train"', None, "malformed JSON"),
        ("[1, 2]", None, "expected a JSON object, got list"),
        *[(json.dumps({k: v for k, v in hateful.items() if k != key}), None if key == "id" else with_id,
           f"missing field {key!r}") for key in FIELDS],
        (json.dumps({**hateful, "id": str(with_id)}), str(with_id), "field 'id' must be int"),
        (json.dumps({**hateful, "text": None}), with_id, "field 'text' must be str"),
        (json.dumps({**hateful, "gold_pc": "race"}), with_id, "field 'gold_pc' must be a list of labels"),
        (json.dumps({**hateful, "pc": "none"}), with_id, 'field \'pc\' must be "None" or one list'),
        (json.dumps({**hateful, "attack": [["mocking"], "slurs"]}), with_id, "field 'attack' must be"),
        (json.dumps({**hateful, "gold_hate": ["hate"]}), with_id, "unknown label 'hate' in 'gold_hate'"),
        (json.dumps({**hateful, "gold_pc": ["racism"]}), with_id, "unknown label 'racism' in 'gold_pc'"),
        (json.dumps({**hateful, "gold_pc": ["class"]}), with_id, "unknown label 'class' in 'gold_pc'"),
        (json.dumps({**hateful, "gold_attack": ["slur"]}), with_id, "unknown label 'slur' in 'gold_attack'"),
        (json.dumps({**hateful, "pc": [["race"], ["sexx"]]}), with_id, "unknown label 'sexx' in 'pc'"),
        (json.dumps({**hateful, "attack": [["slur"]]}), with_id, "unknown label 'slur' in 'attack'"),
        (json.dumps({**hateful, "gold_hate": ["hateful", "not_hateful"]}), with_id,
         "gold_hate must hold exactly one of not_hateful, hateful"),
        (json.dumps({**hateful, "gold_hate": []}), with_id, "gold_hate must hold exactly one"),
        (json.dumps({**hateful, "gold_pc": []}), with_id, "empty gold_pc"),
        (json.dumps({**hateful, "gold_attack": []}), with_id, "empty gold_attack"),
        (json.dumps({**hateful, "id": 999}), 999, "no accepted meme of train has this id"),
        (json.dumps({**meme_3, "set_name": "dev_seen"}), 3, "set_name 'dev_seen' in the annotations of train"),
        (json.dumps(hateful), with_id, "duplicate id (first at"),
    ]
    dev_seen = [
        (json.dumps({**first, "set_name": "dev_seen"}), first["id"], "no accepted meme of dev_seen has this id"),
        (json.dumps({**meme_8, "gold_hate": ["hateful"]}), 8, "gold_hate 'hateful' disagrees with the meme's label 0"),
    ]
    expected = {}
    for split, lines in (("train", train), ("dev_seen", dev_seen)):
        own = records[split]
        write_lines(folder / f"{split}.json", [json.dumps(r) for r in own] + [line for line, _, _ in lines])
        for number, (_, record_id, reason) in enumerate(lines, start=len(own) + 1):
            expected[f"{split}.json:{number}"] = (record_id, reason)
    return expected


def test_error_mode_names_every_bad_annotation_with_file_line_id_and_reason(annotated, tmp_path):
    memes, folder, records = annotated
    expected = spoil(folder, records)
    with pytest.raises(BadRecordsError) as error:
        fetch(local(memes, fine_grained=str(folder)), tmp_path / "memes")
    found = {f"{Path(r.file).name}:{r.line}": r for r in error.value.rejected}
    assert set(found) == set(expected)
    for where, (record_id, reason) in expected.items():
        assert found[where].id == record_id and reason in found[where].reason, (where, found[where])
        assert f"{folder / where.split(':')[0]}:{where.split(':')[1]} id={record_id} " in str(error.value)
    assert not (tmp_path / "memes").exists()


def test_skip_mode_keeps_every_valid_annotation_and_lists_the_bad_ones(annotated, tmp_path):
    memes, folder, records = annotated
    expected = spoil(folder, records)
    manifest = fetch(local(memes, fine_grained=str(folder), on_bad_record="skip"), tmp_path / "memes")
    listed = {f"{Path(r['file']).name}:{r['line']}": (r["id"], r["reason"]) for r in manifest["rejected"]}
    assert set(listed) == set(expected)
    for where, (record_id, reason) in expected.items():
        assert listed[where][0] == record_id and reason in listed[where][1]
    for split in FINE_SPLITS:
        info = manifest["fine_grained"]["splits"][split]
        assert set(read_fine_labels(tmp_path / "memes", split)) == {r["id"] for r in records[split]}
        assert info["count"] == len(records[split]) and info["count"] + info["rejected"] == info["lines_read"]
    assert manifest["fine_grained"]["splits"]["train"]["rejected"] == sum(k.startswith("train") for k in expected)


def test_bad_memes_and_bad_annotations_fail_together(annotated, tmp_path):
    """One error lists both; the annotation of a rejected meme says why it has no meme."""
    memes, folder, records = annotated
    bad_memes = corrupt(memes)  # rejects train memes 2 and 3 (3 has no annotation) among others
    records["dev_seen"].append({**records["dev_seen"][0], "gold_pc": ["racism"]})
    write_lines(folder / "dev_seen.json", [json.dumps(r) for r in records["dev_seen"]])
    with pytest.raises(BadRecordsError) as error:
        fetch(local(memes, fine_grained=str(folder)), tmp_path / "memes")
    meme_2 = 1 + [r["id"] for r in records["train"]].index(2)
    assert {f"{Path(r.file).name}:{r.line}": (r.id, r.reason) for r in error.value.rejected
            if r.file.startswith(str(folder))} == {
        f"train.json:{meme_2}": (2, "no accepted meme of train has this id (its meme was rejected)"),
        f"dev_seen.json:{len(records['dev_seen'])}": (
            records["dev_seen"][0]["id"], f"unknown label 'racism' in 'gold_pc' (known: {', '.join(PC_LABELS)})"),
    }
    assert len(error.value.rejected) == len(bad_memes) + 2


def test_gold_hate_is_checked_against_labelled_memes_only(tmp_path):
    memes = write_official(tmp_path / "hateful_memes", labelled=False)
    for rows in memes.values():
        for row in rows:
            row["label"] = 1 - row["id"] % 2  # the annotations say the opposite of write_official's labels
    write_annotations(tmp_path / "annotations", memes)
    manifest = fetch(local(tmp_path / "hateful_memes", fine_grained=str(tmp_path / "annotations")), tmp_path / "memes")
    assert manifest["rejected"] == []
    assert {s: v["count"] for s, v in manifest["fine_grained"]["splits"].items()} == {s: SIZES[s] for s in FINE_SPLITS}


def test_without_annotations_fetch_writes_what_it_wrote_before(official, tmp_path):
    manifest = fetch(local(official), tmp_path / "memes")
    assert list(manifest) == ["source", "source_info", "splits", "missing_splits", "rejected", "notes"]
    assert not (tmp_path / "memes" / "fine_grained").exists()
    assert all(read_fine_labels(tmp_path / "memes", split) is None for split in FINE_SPLITS)


def test_missing_folder_missing_split_and_synthetic_with_a_folder_are_named(annotated, tmp_path):
    memes, folder, _ = annotated
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'}: fetch.fine_grained names no folder"):
        fetch(local(memes, fine_grained=str(tmp_path / "nowhere")), tmp_path / "memes")
    (folder / "dev_unseen.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=f"{folder / 'dev_unseen.json'}: fine-grained annotations of "
                                                "dev_unseen not found"):
        fetch(local(memes, fine_grained=str(folder)), tmp_path / "memes")
    (folder / "train.jsonl").write_bytes((folder / "train.json").read_bytes())
    with pytest.raises(ValueError, match="two annotation files for train"):
        fetch(local(memes, fine_grained=str(folder)), tmp_path / "memes")
    with pytest.raises(ValueError, match="the synthetic source writes its own fine-grained annotations"):
        fetch(FetchParams(synthetic=SMALL, fine_grained=str(folder)), tmp_path / "memes")
    assert not (tmp_path / "memes").exists()


def test_a_changed_annotation_changes_the_manifest(annotated, tmp_path):
    """Every stage depends on manifest.json alone: its sha256 must follow the annotations."""
    memes, folder, records = annotated
    before = fetch(local(memes, fine_grained=str(folder)), tmp_path / "before")
    changed = [{**r, "gold_attack": ["dehumanizing"]} if r["gold_attack"] == ["mocking"] else r
               for r in records["dev_seen"]]
    assert changed != records["dev_seen"]
    write_lines(folder / "dev_seen.json", [json.dumps(r) for r in changed])
    after = fetch(local(memes, fine_grained=str(folder)), tmp_path / "after")
    sha = {name: {s: v["sha256"] for s, v in m["fine_grained"]["splits"].items()} for name, m in
           (("before", before), ("after", after))}
    assert sha["before"]["dev_seen"] != sha["after"]["dev_seen"]
    assert {s: v for s, v in sha["before"].items() if s != "dev_seen"} == {
        s: v for s, v in sha["after"].items() if s != "dev_seen"}
    assert before["splits"] == after["splits"]


def test_fetch_stage_prints_each_splits_annotations(annotated, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "pipelines"))
    import fetch as fetch_stage

    memes, folder, _ = annotated
    code = fetch_stage.main(["--params", str(ROOT / "params.yaml"), "--out", str(tmp_path / "memes"), "--source",
                             "local", "--path", str(memes), "--set", f"fetch.fine_grained={folder}"])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    train = next(line for line in printed if line.startswith("train") and "annotated" in line)
    assert train.split()[:3] == ["train", "5", "annotated"]
    assert "pc_empty 3" in train and "race 1" in train and "religion 1" in train and "nationality 0" in train
