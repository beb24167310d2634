"""dvc.yaml, params.yaml (composed from conf/ for either profile) and the dataclasses agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hatememes.data.sources import FetchParams
from hatememes.evaluation import EvaluateParams
from hatememes.features import EXTRACTORS, FeaturesParams
from hatememes.features.lmm import LMMFeaturesParams
from hatememes.launch import LaunchParams
from hatememes.models import MODELS
from hatememes.models.ensemble import EnsembleConfig
from hatememes.models.llava_tiny import PretrainLlavaParams
from hatememes.params import compose, load_params, section
from hatememes.pretrain import PretrainParams
from hatememes.report import ReportParams
from hatememes.training import train_params

ROOT = Path(__file__).parents[1]
SECTIONS = {"fetch": FetchParams, "pretrain": PretrainParams, "pretrain_llava": PretrainLlavaParams,
            "features": FeaturesParams, "report": ReportParams, "launch": LaunchParams,
            "lmm_features": LMMFeaturesParams}


@pytest.fixture(params=["demo", "full"])
def params(request, tmp_path) -> dict:
    return load_params(compose([f"profile={request.param}"], ROOT / "conf", tmp_path / "params.yaml"))


def test_every_section_loads_into_its_dataclass(params):
    sys.path.insert(0, str(ROOT / "pipelines"))
    from explain import ExplainParams

    extra = {"evaluate": EvaluateParams, "ensemble": EnsembleConfig, "late_fusion": EnsembleConfig,
             "explain": ExplainParams}
    for name, cls in {**SECTIONS, **extra}.items():
        section(params, name, cls)
    train_params(params)
    assert set(params["train"]) - {"dev_split"} == set(MODELS)
    top = set(params) - {"_sources"}
    assert top == {"profile", "train", *extra, *SECTIONS}, "a params section without a stage (or v.v.)"


def test_dvc_stages_match_params_and_code():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = load_params(ROOT / "params.yaml")
    models = [name for name in params["train"] if name != "dev_split"]
    stages = dvc["stages"]
    assert list(stages) == ["fetch", "pretrain", "features", "train", "evaluate", "lmm_features",
                            "explain", "late_fusion", "ensemble", "report"]
    assert stages["features"]["foreach"] == "${features.kinds}"  # each profile's kinds, all of them extractors
    assert set(params["features"]["kinds"]) <= set(EXTRACTORS)
    assert list(stages["train"]["foreach"]) == models, "dvc.yaml's train stages and params.yaml's models differ"
    # train@ scores what it trained; the evaluate stage reads every model's scores and no model (no torch
    # start-up), and writes each model's metrics beside its predictions
    assert "eval/${key}/predictions" in stages["train"]["do"]["outs"]
    evaluate = stages["evaluate"]
    assert evaluate["cmd"].split(" --eval eval ")[1].split() == models
    assert {d for d in evaluate["deps"] if d.startswith("eval/")} == {f"eval/{m}/predictions" for m in models}
    assert not any(str(dep).startswith(("models/", "data/features")) for dep in evaluate["deps"])
    assert [next(iter(out)) for out in evaluate["outs"]] == [f"eval/{m}/roc" for m in models]
    assert [next(iter(metric)) for metric in evaluate["metrics"]] == [
        f"eval/{m}/{name}.json" for m in models for name in ("metrics", "fine_grained")]
    for stage in stages:
        assert (ROOT / "pipelines" / f"{stage}.py").is_file(), f"stage {stage} has no script"
    report_deps = {d for d in stages["report"]["deps"] if d.startswith("eval/") and not d.endswith("/extra")}
    assert report_deps == {f"eval/{m}/predictions" for m in (*models, "late_fusion", "ensemble")}
    for name in ("ensemble", "late_fusion"):
        members = section(params, name, EnsembleConfig).members
        assert set(members) <= set(models)
        ensemble_deps = {d for d in stages[name]["deps"] if d.startswith("eval/")}
        assert ensemble_deps == {f"eval/{m}/predictions" for m in members}
    for plot in dvc["plots"]:
        (spec,) = plot.values()
        assert {Path(p).parts[1] for p in spec["y"]} == {*models, "late_fusion", "ensemble"}


def test_the_evaluate_stage_imports_no_heavy_library():
    """The evaluate stage only reads predictions: starting it must not import torch, scipy or scikit-learn
    (seconds each, paid by every `dvc repro` that changes a model's predictions)."""
    code = ("import sys; sys.path.insert(0, 'pipelines'); import evaluate; "
            "print(sorted({'torch', 'scipy', 'sklearn', 'transformers', 'open_clip'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
