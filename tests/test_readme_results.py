"""The README's results block: generated from eval/*/metrics.json, current, and those files are dvc.lock's.

(a) `results_markdown` on a small eval/ tree; (b) README.md's block is what `python -m
hatememes.readme_results` makes from the repository's eval/*/metrics.json; (c) each of those files has the
md5 the committed dvc.lock records for it, so the README shows the locked run's numbers; (d) `--check` fails
on a stale block and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hatememes.params import read_yaml
from hatememes.readme_results import END, SECOND_END, SECOND_START, START, block_span, main
from hatememes.report import NO_RUN, results_markdown

ROOT = Path(__file__).parents[1]
PARAMS = "report:\n  models: []\n  dev_split: dev_seen\n  threshold_criterion: accuracy\n  n_boot: 10\n  seed: 0\n" \
         "  gallery_splits: []\n  gallery_size: 1\n  thumbnail_px: 32\n  calibration_bins: 10\n"


def entry(auroc: float | None, lo: float = 0.0, hi: float = 1.0) -> dict:
    return {"n": 100, "auroc": auroc, "auroc_ci95": None if auroc is None else [lo, hi], "accuracy": 0.5}


def write_metrics(eval_dir: Path, name: str, metrics: dict) -> None:
    (eval_dir / name).mkdir(parents=True)
    (eval_dir / name / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


@pytest.fixture
def eval_tree(tmp_path: Path) -> Path:
    eval_dir = tmp_path / "eval"
    splits = {"dev_seen": entry(0.97132, 0.94669, 0.99107), "dev_unseen": entry(0.9, 0.85, 0.95),
              "test_seen": entry(0.5), "test_unseen": entry(0.9996, 0.999, 1.0)}
    write_metrics(eval_dir, "mmbt", {"train": entry(1.0), **splits})
    missing_split = {k: v for k, v in splits.items() if k != "test_seen"}  # e.g. never scored on test_seen
    write_metrics(eval_dir, "clip_fusion", {**missing_split, "dev_unseen": {**entry(None), "note": "one class"}})
    (eval_dir / "mmbt" / "predictions").mkdir()  # ignored: the table needs metrics.json only
    (eval_dir / "plots").mkdir()
    return eval_dir


def test_table_values_intervals_order_and_gaps(eval_tree):
    assert results_markdown(eval_tree).splitlines() == [
        "| model | dev_seen | dev_unseen | test_seen | test_unseen |",
        "|---|---|---|---|---|",
        "| `clip_fusion` | 0.971 | — (one class) | — | 1.000 [0.999, 1.000] |",
        "| `mmbt` | 0.971 | 0.900 | 0.500 | 1.000 [0.999, 1.000] |",
    ]
    every = results_markdown(eval_tree, intervals=("dev_seen", "dev_unseen", "test_seen", "test_unseen"))
    assert every.splitlines()[3] == ("| `mmbt` | 0.971 [0.947, 0.991] | 0.900 [0.850, 0.950] | 0.500 [0.000, 1.000] "
                                     "| 1.000 [0.999, 1.000] |")
    chosen = results_markdown(eval_tree, ("mmbt", "visualbert")).splitlines()
    assert [row.split(" | ")[0] for row in chosen[2:]] == ["| `mmbt`"]  # visualbert has no metrics: left out
    assert results_markdown(eval_tree.parent / "nothing") == NO_RUN + "\n"


def test_rows_are_grouped_by_family_best_first_on_the_headline_split(tmp_path):
    """As the report's tables: families ordered by their best model's test_unseen AUROC, models within one by
    theirs, models without one last."""
    for name, value in {"a": 0.6, "b": 0.9, "c": 0.95, "d": None}.items():
        write_metrics(tmp_path, name, {"test_unseen": entry(value)} if value else {"dev_seen": entry(0.7)})
    table = results_markdown(tmp_path, families={"a": "X", "c": "X", "b": "Y", "d": "Y"}).splitlines()
    assert [row.split(" | ")[0] for row in table[2:]] == ["| `c`", "| `a`", "| `b`", "| `d`"]


def readme_block(text: str, start_marker: str = START, end_marker: str = END) -> str:
    start, end = block_span(text, start_marker, end_marker)
    return text[start:end]


def committed_metrics() -> list[Path]:
    return sorted((ROOT / "eval").glob("*/metrics.json"))


def test_readme_block_is_the_scripts_output_for_the_committed_metrics():
    """The literal command, in the repository: without metrics it must show the "no committed run" note."""
    run = subprocess.run([sys.executable, "-m", "hatememes.readme_results", "--check"], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    if not committed_metrics():
        assert readme_block((ROOT / "README.md").read_text(encoding="utf-8")) == NO_RUN + "\n"


def locked_md5s() -> dict[str, str]:
    """{path: md5} of every output dvc.lock records, across all stages."""
    lock = read_yaml(ROOT / "dvc.lock")
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def test_committed_metrics_are_the_ones_dvc_lock_records():
    files = committed_metrics()
    if not files:
        pytest.skip("no eval/*/metrics.json committed yet: the README shows the 'no committed run' note; after a "
                    "demo run commit eval/*/metrics.json, eval/summary.md, dvc.lock and README.md together")
    locked = {path: md5 for path, md5 in locked_md5s().items()
              if path.startswith("eval/") and path.endswith("/metrics.json") and path.count("/") == 2}
    present = {str(p.relative_to(ROOT)) for p in files}
    assert present == set(locked), (f"eval/*/metrics.json and dvc.lock disagree: only in dvc.lock "
                                    f"{sorted(set(locked) - present)}, only in eval/ {sorted(present - set(locked))}")
    stale = [p for p in present if hashlib.md5((ROOT / p).read_bytes()).hexdigest() != locked[p]]
    assert not stale, f"{stale} differ from the md5 dvc.lock records: commit the files of the same run"


def test_committed_summary_is_the_locked_table():
    summary = ROOT / "eval" / "summary.md"
    if not summary.exists():
        pytest.skip("no eval/summary.md committed yet (the report stage writes it)")
    locked = locked_md5s()
    assert locked.get("eval/summary.md") == hashlib.md5(summary.read_bytes()).hexdigest(), \
        "eval/summary.md is not the one dvc.lock records"
    assert readme_block((ROOT / "README.md").read_text(encoding="utf-8")) == summary.read_text(encoding="utf-8")


def test_check_fails_on_a_stale_block_and_the_script_fixes_it(eval_tree, capsys):
    readme = eval_tree.parent / "README.md"
    stale = f"# title\n\n{START}\n| model | dev_seen |\n|---|---|\n| `mmbt` | 0.123 |\n{END}\n\nafter\n"
    readme.write_text(stale)
    (eval_tree.parent / "params.yaml").write_text(PARAMS)
    args = ["--readme", str(readme), "--eval", str(eval_tree), "--params", str(eval_tree.parent / "params.yaml"),
            "--record", str(eval_tree.parent / "no-second-world.json")]
    assert main([*args, "--check"]) == 1
    assert "a results block differs" in capsys.readouterr().err and readme.read_text() == stale
    assert main(args) == 0
    assert readme.read_text() == f"# title\n\n{START}\n{results_markdown(eval_tree)}{END}\n\nafter\n"
    assert main([*args, "--check"]) == 0
    readme.write_text("# no markers\n")
    assert main([*args, "--check"]) == 2 and START in capsys.readouterr().err


def test_the_second_world_is_recorded_and_its_block_checked(eval_tree, capsys):
    """`--second-world REPOSITORY` records that repository's seeds and metrics; the block shows them and
    `--check` fails once the record changes."""
    world = eval_tree.parent / "world"
    shutil.copytree(eval_tree, world / "eval")
    (world / "params.yaml").write_text(PARAMS + "fetch:\n  synthetic: {seed: 7}\npretrain: {seed: 7}\n"
                                       "pretrain_llava:\n  tiny: {seed: 7}\n")
    (eval_tree.parent / "params.yaml").write_text(PARAMS)
    readme, record = eval_tree.parent / "README.md", eval_tree.parent / "second-world.json"
    readme.write_text(f"{START}\n{END}\n\n{SECOND_START}\n{SECOND_END}\n")
    args = ["--readme", str(readme), "--eval", str(eval_tree), "--params", str(eval_tree.parent / "params.yaml"),
            "--record", str(record)]
    assert main([*args, "--second-world", str(world)]) == 0
    block = readme_block(readme.read_text(), SECOND_START, SECOND_END)
    assert block.startswith("Second world (`fetch.synthetic.seed=7`, `pretrain.seed=7`, `pretrain_llava.tiny.seed=7`)")
    assert "mmbt 1.000" in block  # test_unseen, the bars' split
    assert "clip_fusion 1.000" in block
    assert main([*args, "--check"]) == 0
    saved = json.loads(record.read_text())
    saved["metrics"]["mmbt"]["test_unseen"]["auroc"] = 0.5
    record.write_text(json.dumps(saved))
    assert main([*args, "--check"]) == 1
    capsys.readouterr()
