"""DVC's experiment workflow end to end, on a fresh copy of the repository with a cheap setup: the demo
world at its smallest scale, one pretraining epoch, the LLaVA base skipped, and one cheap model, whose
pipeline is dvc.yaml without the other models and the stages that read every model (explain, ensemble, report).

`dvc exp run -S` composes params.yaml from conf/ with Hydra (.dvc/config `hydra.enabled`), so the cheap setup
goes into conf/config.yaml; every stage must read params.yaml as DVC records it, experiments must carry their
metrics, and the queue must run. About 4 minutes on 2 cores, most of it Python start-ups of the stages.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from repo_copy import commit, copy_repository, keep_one_model, run  # noqa: E402

pytestmark = pytest.mark.slow
MODEL = "clip_fusion"
CHEAP = ["fetch.synthetic.scale=0.02", "fetch.synthetic.pretrain_pairs=400",
         "pretrain.epochs=1",
         "pretrain.probe_pairs=100", "pretrain_llava.enabled=false", "evaluate.n_boot=100",
         f"train.{MODEL}.loop.epochs=2", f"train.{MODEL}.model.projection_dim=32",
         f"train.{MODEL}.model.pre_output_dim=32"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """A fresh copy whose committed params are the cheap setup, reproduced and committed with its metrics."""
    from hatememes.params import compose

    repository = copy_repository(tmp_path_factory.mktemp("experiments") / "hatememes")
    cheapen(repository / "conf" / "config.yaml", CHEAP)  # the demo's values, made cheap
    compose([], repository / "conf", repository / "params.yaml")
    keep_one_model(repository, MODEL)
    # The committed dvc.lock records the whole demo, whose outputs are not in this copy's cache (`dvc exp
    # apply` checks out every output it names). A user who ran the demo has them; here the lock starts empty,
    # and so does eval/ (git tracks the demo's metrics and summary, which this cheap setup does not make).
    (repository / "dvc.lock").unlink()
    shutil.rmtree(repository / "eval", ignore_errors=True)
    run(["dvc", "repro"], repository)
    commit(repository, "baseline: the cheap setup, reproduced")
    tracked = run(["git", "ls-files", "eval"], repository).stdout.split()
    assert tracked == [f"eval/{MODEL}/fine_grained.json", f"eval/{MODEL}/metrics.json"], \
        "git must track the metrics (cache: false: AUROC and the fine-grained scores) and nothing else"
    return repository


def cheapen(config: Path, overrides: list[str]) -> None:
    """Set `key=value` overrides in a Hydra config file as Hydra reads it: OmegaConf writes `'no'` quoted, where
    DVC's YAML 1.2 writer (`apply_overrides`) writes a bare `no` that Hydra's YAML 1.1 reader takes for False."""
    from omegaconf import OmegaConf

    from hatememes.params import parse_yaml

    conf = OmegaConf.load(config)
    for item in overrides:
        key, _, value = item.partition("=")
        OmegaConf.update(conf, key, parse_yaml(value), merge=False)
    OmegaConf.save(conf, config)


def experiments(repository: Path) -> dict[str, dict]:
    """name -> {"params": ..., "metrics": ..., "status"} from `dvc exp show --json` (DVC 3's layout)."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repository).stdout)
    found = {}
    for commit_entry in shown:
        for experiment in commit_entry.get("experiments") or []:
            for revision in experiment["revs"]:
                data = revision.get("data") or {}
                found[revision.get("name") or data.get("name") or revision["rev"]] = {
                    "params": (data.get("params") or {}).get("params.yaml", {}).get("data", {}),
                    "metrics": (data.get("metrics") or {}).get(f"eval/{MODEL}/metrics.json", {}).get("data", {}),
                    "status": data.get("status") or revision.get("status")}
    return found


def auroc(metrics: dict) -> float:
    return metrics["dev_seen"]["auroc"]


def test_exp_run_set_param_reaches_the_model_and_carries_its_metrics(baseline):
    run(["dvc", "exp", "run", "-n", "wide", "-S", f"train.{MODEL}.model.projection_dim=48",
         "-S", f"train.{MODEL}.loop.lr=2e-3"], baseline)
    resolved = json.loads((baseline / "models" / MODEL / "params.json").read_text())["train"][MODEL]
    assert resolved["model"]["projection_dim"] == 48 and resolved["loop"]["lr"] == 2e-3
    assert resolved["loop"]["mixed_precision"] == "no"
    shown = experiments(baseline)
    assert "wide" in shown, shown.keys()
    assert shown["wide"]["params"]["train"][MODEL]["model"]["projection_dim"] == 48
    assert 0.0 <= auroc(shown["wide"]["metrics"]) <= 1.0

    diff = json.loads(run(["dvc", "exp", "diff", "--json", "HEAD", "wide"], baseline).stdout)
    param_changes = diff["params"]["params.yaml"]
    width = param_changes[f"train.{MODEL}.model.projection_dim"]
    assert (width["old"], width["new"]) == (32, 48)
    assert param_changes[f"train.{MODEL}.loop.lr"]["new"] == 2e-3
    assert "dev_seen.auroc" in diff["metrics"][f"eval/{MODEL}/metrics.json"]


def back_to_baseline(repository: Path) -> None:
    run(["git", "checkout", "--", "."], repository)
    run(["dvc", "checkout", "--force"], repository)


def test_exp_apply_brings_the_experiment_into_the_workspace(baseline):
    from hatememes.params import load_params

    back_to_baseline(baseline)
    assert load_params(baseline / "params.yaml")["train"][MODEL]["model"]["projection_dim"] == 32
    run(["dvc", "exp", "apply", "wide"], baseline)
    assert load_params(baseline / "params.yaml")["train"][MODEL]["model"]["projection_dim"] == 48
    metrics = json.loads((baseline / "eval" / MODEL / "metrics.json").read_text())
    assert auroc(metrics) == auroc(experiments(baseline)["wide"]["metrics"])
    assert "up to date" in run(["dvc", "status"], baseline).stdout  # outputs applied with their params
    back_to_baseline(baseline)


def test_a_queued_pair_both_finish(baseline):
    for name, lr in (("slow-lr", "5e-4"), ("fast-lr", "3e-3")):
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.{MODEL}.loop.lr={lr}"], baseline)
    run(["dvc", "exp", "run", "--run-all"], baseline, timeout=1800)
    shown = experiments(baseline)
    for name, lr in (("slow-lr", 5e-4), ("fast-lr", 3e-3)):
        assert name in shown, shown.keys()
        assert shown[name]["params"]["train"][MODEL]["loop"]["lr"] == lr
        assert 0.0 <= auroc(shown[name]["metrics"]) <= 1.0


def test_compare_puts_the_experiments_side_by_side(baseline):
    """pipelines/compare.py on this repository's real experiments (the ones the tests above ran)."""
    done = run([sys.executable, str(baseline / "pipelines" / "compare.py"), "--out", str(baseline / "eval")],
               baseline)
    assert "compare:" in done.stdout
    markdown = (baseline / "eval" / "compare.md").read_text()
    dev_seen = markdown.split("## dev_seen")[1].split("\n## ")[0]  # the first table: the split chosen on
    rows = {line.split(" | ")[0].strip("| "): line for line in dev_seen.splitlines() if line.startswith("| ")}
    for name in ("wide", "slow-lr", "fast-lr"):
        assert name in rows, rows.keys()
    assert f"train.{MODEL}.loop.lr" in markdown and f"train.{MODEL}.model.projection_dim" in markdown
    shown = experiments(baseline)
    wide = shown["wide"]["metrics"]["dev_seen"]["auroc"]
    assert f"| {wide:.3f} |" in rows["wide"]  # the experiment's own metric, as DVC recorded it
    assert (baseline / "eval" / "compare.html").read_text().count("data:image/png;base64,") >= 2
