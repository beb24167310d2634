"""The report's section on the WOAH 2021 fine-grained labels, on a hand-built eval/ of two models (clip_fusion
with fine-grained heads, mmbt without) over 24 annotated memes of dev_seen and dev_unseen: every number in its
tables recomputed here with scikit-learn; and the one sentence it says when data/memes has no such labels."""

import json
import re
import zlib

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from hatememes.data.fine_grained import ATTACK_LABELS, NUM_FINE, PC_LABELS
from hatememes.metrics import Predictions, write_predictions
from hatememes.report import ReportParams, build_report
from hatememes.shared_task import CATEGORIES, write_submission

SPLITS = ("dev_seen", "dev_unseen")
IDS = list(range(1, 25))
# the hateful memes' (gold_pc, gold_attack): every third meme; "sex" attacked by none, "slurs" never a first label
FINE = {3: (["race"], ["mocking"]), 6: (["religion"], ["dehumanizing", "slurs"]), 9: (["nationality", "race"],
        ["contempt"]), 12: (["disability"], ["attack_empty"]), 15: (["race"], ["exclusion", "mocking"]),
        18: (["religion", "disability"], ["inferiority"]), 21: (["nationality"], ["mocking"]),
        24: (["race"], ["dehumanizing"])}
SIGNAL = {"clip_fusion": 2.0, "mmbt": 0.7}
MODELS = tuple(SIGNAL)
PARAMS = ReportParams(n_boot=50, gallery_splits=())


def annotation(meme_id: int, split: str) -> dict:
    pc, attack = FINE.get(meme_id, (["pc_empty"], ["attack_empty"]))
    return {"id": meme_id, "set_name": split, "img": f"img/{meme_id:05d}.png", "text": f"meme {meme_id}",
            "gold_hate": ["hateful" if meme_id in FINE else "not_hateful"], "gold_pc": pc, "gold_attack": attack,
            "pc": [pc] if meme_id in FINE else "None", "attack": [attack] if meme_id in FINE else "None"}


def outputs(model: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(P(hateful) (N,), fine-grained probabilities (N, NUM_FINE)) of a model on a split, over IDS."""
    rng = np.random.default_rng(zlib.crc32(f"{model}/{split}".encode()))
    labels = np.array([meme_id in FINE for meme_id in IDS], dtype=float)
    hate = 1 / (1 + np.exp(-(SIGNAL[model] * (labels - 0.5) + rng.normal(size=len(IDS)))))
    return hate, rng.uniform(size=(len(IDS), NUM_FINE))


def write_eval(eval_dir):
    truth = {}
    for model in MODELS:
        for split in SPLITS:
            hate, fine = outputs(model, split)
            labels = np.array([int(meme_id in FINE) for meme_id in IDS])
            predictions = Predictions(np.array(IDS), hate, labels)
            write_predictions(eval_dir / model / "predictions" / f"{split}.csv", predictions)
            if model == "clip_fusion":
                write_submission(eval_dir / model / "predictions" / "fine_grained" / f"{split}.jsonl", split, IDS,
                                 hate, fine)
            truth[model, split] = hate, fine
    return truth


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    root = tmp_path_factory.mktemp("fine_grained_report")
    truth = write_eval(root / "eval")
    for split in SPLITS:
        path = root / "memes" / "fine_grained" / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(annotation(i, split)) + "\n" for i in IDS))
    summary = build_report(root / "eval", root / "memes", root / "out", PARAMS, {"fetch": {"source": "hub"}})
    return root, summary, truth


def section(markdown: str) -> str:
    return markdown.split("## Fine-grained labels (WOAH 2021)\n", 1)[1].split("\n## ", 1)[0]


def table_after(text: str, heading: str) -> list[list[str]]:
    """The cells of the first markdown table after `heading`, its header row first."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def category_auroc(hate: np.ndarray, category: str) -> float:
    attacked = np.array([meme_id in FINE and category in FINE[meme_id][0] for meme_id in IDS])
    benign = np.array([meme_id not in FINE for meme_id in IDS])
    return roc_auc_score(attacked[attacked | benign], hate[attacked | benign])


def scorer_task(gold: list[list[str]], scores: np.ndarray, labels: list[str]) -> tuple[float, float]:
    """(roc_auc, f1_micro) as the shared task's scorer: columns of the first gold labels, micro-averaged."""
    classes = list(dict.fromkeys(g[0] for g in gold))
    targets = np.array([[c in g for c in classes] for g in gold], dtype=int)
    columns = scores[:, [labels.index(c) for c in classes]]
    return (roc_auc_score(targets, columns, average="micro"),
            f1_score(targets, (columns > 0.5).astype(int), average="micro"))


def test_the_category_table_holds_each_model_s_auroc_per_protected_category_on_dev_unseen(annotated):
    root, _, truth = annotated
    text = section((root / "out" / "report.md").read_text())
    header, *rows = table_after(text, "### Hate AUROC per protected category, dev_unseen")
    counts = {c: sum(c in pc for pc, _ in FINE.values()) for c in CATEGORIES}
    assert header == ["model"] + [f"{c} (n={counts[c]})" for c in CATEGORIES] + ["weakest (lowest first)"]
    assert [row[0] for row in rows] == ["clip_fusion", "mmbt"]  # the report's order, best first
    for row in rows:
        hate, _ = truth[row[0], "dev_unseen"]
        expected = {c: category_auroc(hate, c) for c in CATEGORIES if counts[c]}
        assert row[1:-1] == [f"{expected[c]:.3f}" if c in expected else "—" for c in CATEGORIES]
        lowest = sorted(expected, key=expected.get)[:2]
        assert row[-1] == ", ".join(f"{c} {expected[c]:.3f}" for c in lowest)
    assert "against all 16 benign memes" in text
    assert ("The test splits have no fine-grained labels, so per-group results are on dev_unseen (early stopping "
            "reads dev_seen).") in text


def test_the_shared_task_table_holds_the_scorer_s_numbers_and_the_published_baseline(annotated):
    root, _, truth = annotated
    text = section((root / "out" / "report.md").read_text())
    header, *rows = table_after(text, "### The shared task's scores")
    assert header[:4] == ["model", "split", "hate roc_auc (scorer)", "hate f1_micro"]
    gold = {task: [annotation(i, "dev_seen")[f"gold_{task}"] for i in IDS] for task in ("hate", "pc", "attack")}
    for model, split in [(m, s) for m in MODELS for s in SPLITS]:
        hate, fine = truth[model, split]
        expected = list(scorer_task(gold["hate"], np.c_[1 - hate, hate], ["not_hateful", "hateful"]))
        if model == "clip_fusion":
            expected += [*scorer_task(gold["pc"], fine[:, :len(PC_LABELS)], list(PC_LABELS)),
                         *scorer_task(gold["attack"], fine[:, len(PC_LABELS):], list(ATTACK_LABELS))]
        cells = [f"{value:.4f}" for value in expected] + ["—"] * (6 - len(expected))
        assert [model, split, *cells] in rows
    assert rows[-1] == ["published baseline (independent)", "dev_seen", "0.7032", "0.6468", "0.8512", "0.6210",
                        "0.8709", "0.6128"]
    assert len(rows) == 2 * len(MODELS) + 1
    baseline_note = text.split("| published baseline (independent) |", 1)[1]
    assert "micro-AUROC over the two binarised columns" in baseline_note
    assert "'hate roc_auc (scorer)' column, not with our binary AUROC" in baseline_note
    assert "facebookresearch/fine_grained_hateful_memes" in baseline_note


def test_summary_json_holds_every_model_s_fine_grained_results(annotated):
    root, summary, truth = annotated
    written = json.loads((root / "out" / "summary.json").read_text())["fine_grained"]
    assert written == json.loads(json.dumps(summary["fine_grained"]))
    assert written["annotations"] and set(written["models"]) == set(MODELS)
    assert written["models"]["clip_fusion"]["heads"] and not written["models"]["mmbt"]["heads"]
    entry = written["models"]["mmbt"]["splits"]["dev_unseen"]
    assert entry["per_category"]["race"]["auroc"] == pytest.approx(category_auroc(truth["mmbt", "dev_unseen"][0],
                                                                                  "race"))
    assert entry["shared_task"]["pc"] is None and entry["per_category"]["sex"]["auroc"] is None


def test_the_html_has_the_section_and_its_two_tables(annotated):
    root, _, _ = annotated
    page = (root / "out" / "report.html").read_text()
    assert '<h2 id="fine-grained">Fine-grained labels (WOAH 2021)</h2>' in page
    for table_id in ("fine-grained-categories", "shared-task"):
        assert f'<table id="{table_id}">' in page
    shared = re.search(r'<table id="shared-task">.*?</table>', page).group(0)
    assert "<td>published baseline (independent)</td><td>dev_seen</td><td>0.7032</td>" in shared


def test_without_annotations_the_section_says_so_in_one_sentence(annotated, tmp_path):
    root, _, _ = annotated
    (tmp_path / "memes").mkdir()
    summary = build_report(root / "eval", tmp_path / "memes", tmp_path / "out", PARAMS, {})
    assert summary["fine_grained"]["annotations"] is False
    assert all(model["splits"] == {} for model in summary["fine_grained"]["models"].values())
    text = section((tmp_path / "out" / "report.md").read_text()).strip()
    assert text == ("This run's memes have no fine-grained labels: to add them, set params `fetch.fine_grained` to "
                    "the folder of the shared task's annotations (its data/annotations/) and rerun fetch.")
    assert "<code>fetch.fine_grained</code>" in (tmp_path / "out" / "report.html").read_text()


def test_the_per_label_table_and_the_category_heatmap(annotated, tmp_path):
    root, _, truth = annotated
    text = section((root / "out" / "report.md").read_text())
    header, *rows = table_after(text, "### Each label on its own")
    assert header == ["model", "split", "pc mean per-label AUROC", "attack mean per-label AUROC"]
    assert [row[:2] for row in rows] == [["clip_fusion", split] for split in SPLITS]  # the model with heads only
    for row in rows:
        _, fine = truth["clip_fusion", row[1]]
        expected = []
        for names, columns in ((PC_LABELS, fine[:, :len(PC_LABELS)]), (ATTACK_LABELS, fine[:, len(PC_LABELS):])):
            gold = [annotation(i, row[1])["gold_pc" if names is PC_LABELS else "gold_attack"] for i in IDS]
            aurocs = [roc_auc_score([name in g for g in gold], columns[:, k]) for k, name in enumerate(names)
                      if 0 < sum(name in g for g in gold) < len(gold)]
            expected.append(f"{np.mean(aurocs):.4f}")
        assert row[2:] == expected
    assert (root / "out" / "plots" / "fine_grained_categories.png").stat().st_size > 1000
    assert "fine_grained_categories.png" in (root / "out" / "report.md").read_text()
    (tmp_path / "memes").mkdir()  # no labels: no heatmap
    build_report(root / "eval", tmp_path / "memes", tmp_path / "out", PARAMS, {})
    assert not (tmp_path / "out" / "plots" / "fine_grained_categories.png").exists()
