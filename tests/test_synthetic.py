"""The demo world: splits, labels, confounders, oracles, determinism and the pretraining corpus."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hatememes.data import synthetic as S
from hatememes.data.memes import SPLITS, read_split

SMALL = S.SyntheticConfig(seed=3, scale=0.0, image_size=64, pretrain_pairs=40)  # K*K = 64 memes a split


@pytest.fixture(scope="module")
def default_memes() -> dict[str, list[S.SyntheticMeme]]:
    return S.sample_memes(S.SyntheticConfig())  # sampling only, no rendering: fast


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("memes")
    return root, S.generate_memes(root, SMALL)


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def test_same_seed_gives_identical_files_and_another_seed_does_not(small_world, tmp_path):
    root, _ = small_world
    S.generate_memes(tmp_path / "again", SMALL)
    assert tree_hash(tmp_path / "again") == tree_hash(root)
    other = S.sample_memes(S.SyntheticConfig(seed=4, scale=0.0))
    assert [m.meme.text for m in other["train"]] != [m.meme.text for m in S.sample_memes(SMALL)["train"]]


def test_drawing_on_every_core_writes_what_one_core_writes(small_world, tmp_path, monkeypatch):
    """The memes and the corpus are drawn in forked processes (`hatememes.parallel`); on one core, in this
    process, one after another, the same files come out, byte for byte."""
    root, _ = small_world
    S.generate_pretrain_corpus(tmp_path / "corpus", SMALL)
    monkeypatch.setattr(S, "available_cores", lambda: 1)
    S.generate_memes(tmp_path / "one", SMALL)
    S.generate_pretrain_corpus(tmp_path / "corpus_one", SMALL)
    assert tree_hash(tmp_path / "one") == tree_hash(root)
    assert tree_hash(tmp_path / "corpus_one") == tree_hash(tmp_path / "corpus")


def test_splits_have_official_names_and_ratios(small_world):
    root, _ = small_world
    assert S.split_sizes(1.0) == {"train": 8500, "dev_seen": 500, "dev_unseen": 540, "test_seen": 1000,
                                  "test_unseen": 2000}
    assert S.split_sizes(0.25) == {"train": 2125, "dev_seen": 125, "dev_unseen": 135, "test_seen": 250,
                                   "test_unseen": 500}
    ids = []
    for split in SPLITS:
        memes = read_split(root, split)
        assert len(memes) == S.split_sizes(SMALL.scale)[split]
        for meme in memes:
            assert meme.img == f"img/{meme.id:05d}.png" and meme.label in (0, 1)
            with Image.open(root / meme.img) as image:
                assert image.size == (SMALL.image_size, SMALL.image_size) and image.mode == "RGB"
        ids += [m.id for m in memes]
    assert len(ids) == len(set(ids))


def test_label_rule_is_balanced_over_each_modality():
    k = len(S.OBJECTS)
    table = np.array([[S.is_hateful(t, i) for i in range(k)] for t in range(k)])
    assert (table.sum(0) == len(S.HATEFUL_OFFSETS)).all() and (table.sum(1) == len(S.HATEFUL_OFFSETS)).all()


def test_labels_follow_the_rule_and_every_concept_is_hateful_at_the_base_rate(default_memes):
    rate = len(S.HATEFUL_OFFSETS) / len(S.OBJECTS)
    for split, memes in default_memes.items():
        assert all(m.meme.label == int(S.is_hateful(m.text_concept, m.image_concept)) for m in memes)
        share = np.mean([m.meme.label for m in memes])
        assert abs(share - rate) <= 0.03, (split, share)
        for concept in range(len(S.OBJECTS)):  # each concept, in text or in image, is hateful at the base rate
            for key in ("text_concept", "image_concept"):
                rows = [m.meme.label for m in memes if getattr(m, key) == concept]
                assert abs(np.mean(rows) - rate) < 0.1, (split, key, concept)


@pytest.mark.parametrize("config", [S.SyntheticConfig(), SMALL, S.SyntheticConfig(seed=7, scale=0.05)])
def test_every_hateful_meme_has_both_benign_confounders_in_its_split(config):
    for split, memes in S.sample_memes(config).items():
        by_text, by_scene = defaultdict(list), defaultdict(list)
        for m in memes:
            by_text[m.meme.text].append(m)
            by_scene[m.scene].append(m)
        for m in (m for m in memes if m.meme.label == 1):
            assert any(o.meme.label == 0 and o.image_concept != m.image_concept for o in by_text[m.meme.text]), split
            assert any(o.meme.label == 0 and o.meme.text != m.meme.text for o in by_scene[m.scene]), split


def test_a_shared_scene_gives_the_same_picture_under_another_caption(default_memes):
    by_scene = defaultdict(list)
    for m in default_memes["dev_seen"]:
        by_scene[m.scene].append(m)
    first, second = next(v for v in by_scene.values() if len(v) == 2)
    a, b = (np.asarray(S.render_meme(m.scene, m.meme.text, 96)) for m in (first, second))
    band = round(96 * S.BAND_FRACTION)
    rows = slice(band, None) if first.scene.band == "top" else slice(0, 96 - band)
    assert (a[rows] == b[rows]).all() and not (a == b).all()


def test_oracles_stay_near_chance_for_one_modality_and_perfect_for_the_pair(small_world, default_memes):
    _, result = small_world
    for oracles in (result["oracles"], S.oracles(default_memes)):
        for split in ("dev_seen", "dev_unseen", "test_seen", "test_unseen"):
            assert oracles[split]["text_only"] <= 0.60 and oracles[split]["image_only"] <= 0.60, oracles[split]
            assert oracles[split]["pair"] == 1.0


def test_unseen_splits_use_unseen_templates_and_styles(default_memes):
    seen = {S.caption(t, k) for t in S.SEEN_TEMPLATES for k in range(len(S.OBJECTS))}
    unseen = {S.caption(t, k) for t in S.UNSEEN_TEMPLATES for k in range(len(S.OBJECTS))}
    for split, memes in default_memes.items():
        texts, styles = {m.meme.text for m in memes}, {m.scene.style for m in memes}
        expected_texts, expected_styles = (unseen, S.UNSEEN_STYLES) if split.endswith("unseen") else (
            seen, S.SEEN_STYLES)
        assert texts <= expected_texts and styles <= set(expected_styles), split
    assert not seen & unseen and not set(S.SEEN_STYLES) & set(S.UNSEEN_STYLES)
    for memes in default_memes.values():  # the caption names the object it is about, plurals spelt right
        assert all(S.OBJECTS[m.text_concept] in m.meme.text and "crosss" not in m.meme.text for m in memes)


def test_pretrain_corpus_format(tmp_path):
    summary = S.generate_pretrain_corpus(tmp_path, SMALL)
    lines = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(lines) == SMALL.pretrain_pairs and summary["pairs"] == {"heldout": 4, "train": 36}
    for n, pair in enumerate(lines, start=1):
        assert set(pair) == {"image", "text", "object", "color", "split"}
        assert pair["image"] == f"images/{n:06d}.png" and pair["split"] in ("train", "heldout")
        assert pair["object"] in S.OBJECTS and pair["color"] in S.COLORS and pair["object"] in pair["text"]
        with Image.open(tmp_path / pair["image"]) as image:
            assert image.size == (SMALL.image_size, SMALL.image_size)
    assert not set(S.FILLER) & set(S.OBJECTS)  # the overlaid filler text never names an object
    memes = {m.meme.text for split in S.sample_memes(SMALL).values() for m in split}
    assert not memes & {pair["text"] for pair in lines}  # descriptions, not meme captions


def test_rendered_object_has_its_colour():
    scene = S.Scene(obj=0, color="blue", background="white", style="plain", size="large", position="center",
                    radius=0.7, jitter=(0.0, 0.0), rotation=0.0, clutter=False, band="top", noise_seed=1)
    pixels = np.asarray(S.render_scene(scene, 64, 64), dtype=float)
    assert np.abs(pixels[32, 32] - S.COLORS["blue"]).max() < 20
    assert np.abs(pixels[2, 2] - S.BACKGROUNDS["white"]).max() < 20
