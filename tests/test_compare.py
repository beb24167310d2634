"""pipelines/compare.py on `dvc exp show --json` in DVC 3's layout (tests/test_dvc_experiments.py runs it on
real experiments): every run with metrics is a row, every model a column, only the params that differ are
shown, dev splits before test splits, and failed runs are left out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hatememes.compare import compare, read_shown

ROOT = Path(__file__).parents[1]


def run_data(lr: float, width: int, aurocs: dict[str, dict[str, float]], status: str = "Success") -> dict:
    params = {"train": {"clip_fusion": {"loop": {"lr": lr, "epochs": 3}, "model": {"projection_dim": width}}},
              "fetch": {"source": "synthetic"}}
    metrics = {f"eval/{model}/metrics.json": {"data": {split: {"auroc": value, "n": 50}
                                                       for split, value in splits.items()}}
               for model, splits in aurocs.items()}
    return {"rev": "x", "params": {"params.yaml": {"data": params}}, "metrics": metrics, "status": status}


def shown() -> list[dict]:
    base = {"clip_fusion": {"dev_seen": 0.81, "test_unseen": 0.79}, "mmbt": {"dev_seen": 0.70, "test_unseen": 0.69}}
    wide = {"clip_fusion": {"dev_seen": 0.86, "test_unseen": 0.83}, "mmbt": {"dev_seen": 0.70, "test_unseen": 0.69}}
    return [
        {"rev": "workspace", "name": None, "error": None, "experiments": None, "data": run_data(1e-3, 32, base)},
        {"rev": "f4313f57347e6c0d", "name": "main", "error": None, "data": run_data(1e-3, 32, base),
         "experiments": [
             {"revs": [{"rev": "aaaa1111", "name": "wide", "data": run_data(2e-3, 48, wide)}]},
             {"revs": [{"rev": "bbbb2222", "name": "broken", "data": run_data(9.0, 32, {}, status="Failed")}]},
         ]},
    ]


def test_every_run_a_row_every_model_a_column_and_only_the_params_that_differ(tmp_path):
    experiments = read_shown(shown())
    assert [e.name for e in experiments] == ["workspace", "main", "wide"]  # the failed run left out
    result = compare(experiments, tmp_path)
    assert result["params"] == ["train.clip_fusion.loop.lr", "train.clip_fusion.model.projection_dim"]
    assert result["splits"] == ["dev_seen", "test_unseen"]
    markdown = (tmp_path / "compare.md").read_text()
    header = "| experiment | clip_fusion | mmbt | train.clip_fusion.loop.lr | train.clip_fusion.model.projection_dim |"
    assert header in markdown
    assert "| wide | 0.860 | 0.700 | 0.002 | 48 |" in markdown and "| main | 0.810 | 0.700 | 0.001 | 32 |" in markdown
    assert markdown.index("dev_seen (choose settings here)") < markdown.index("test_unseen (read only to report")
    assert "epochs" not in markdown  # the same in every run
    page = (tmp_path / "compare.html").read_text()
    assert '<table id="compare-dev_seen">' in page and len(re.findall(r'src="data:image/png;base64,', page)) == 2
    assert (tmp_path / "compare" / "dev_seen.png").stat().st_size > 5000


def test_the_script_reads_a_saved_json_and_fails_clearly_without_metrics(tmp_path):
    saved = tmp_path / "shown.json"
    saved.write_text(json.dumps(shown()))
    done = subprocess.run([sys.executable, str(ROOT / "pipelines" / "compare.py"), "--json", str(saved), "--out",
                           str(tmp_path / "eval")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "compare: 3 runs, 2 models" in done.stdout and (tmp_path / "eval" / "compare.html").is_file()
    with pytest.raises(ValueError, match="no experiment with metrics"):
        compare(read_shown([{"rev": "workspace", "name": None, "data": run_data(1e-3, 32, {})}]), tmp_path)
