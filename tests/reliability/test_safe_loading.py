"""Safe loading and secrets: nothing the pipeline reads back can run code, and HF_TOKEN and the zip
password are never printed or written.

- the source tree has no `torch.load` without `weights_only=True`, no pickle/dill/joblib/marshal loads,
  no unsafe `yaml.load`, no `numpy.load(allow_pickle=True)`, no `trust_remote_code=True` (checked with `ast`)
- weights and features are safetensors; the few pickle-format files of a checkpoint (Accelerate's optimizer,
  scheduler, RNG state) load under `weights_only=True`, and a planted malicious one is refused, not run
- fetch from the Hub (token used) and from an encrypted zip, then train and evaluate: neither secret is in
  stdout, stderr, the manifest, the saved params, or any other file written (the datasets cache included)
"""

from __future__ import annotations

import ast
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from stage_runs import (
    PARAMS,
    ROOT,
    evaluate_args,
    evaluate_main,
    fetch_stage,
    fetched,
    train_args,
    train_main,
    write_clip_features,
    write_official,
)

from test_fetch import encrypted_zip

UNSAFE = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("dill", "load"), ("dill", "loads"),
          ("cloudpickle", "load"), ("cloudpickle", "loads"), ("joblib", "load"), ("marshal", "load"),
          ("marshal", "loads"), ("shelve", "open"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
          ("pandas", "read_pickle")}
MODULE_ALIASES = {"np": "numpy", "pd": "pandas"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader"}


def called_name(func: ast.expr, imported: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """('torch', 'load') for `torch.load(...)`, `t.load(...)` after `import torch as t`, or `load(...)` after
    `from torch import load`; None for anything else."""
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        module = imported.get(func.value.id, (func.value.id, ""))[0]
        return MODULE_ALIASES.get(module, module), func.attr
    if isinstance(func, ast.Name) and func.id in imported and imported[func.id][1]:
        return imported[func.id]
    return None


def constant(node: ast.expr | None):
    return node.value if isinstance(node, ast.Constant) else None


def unsafe_calls(source: str, filename: str) -> list[str]:
    """Every call in `source` that could deserialise code: 'file:line what'."""
    tree = ast.parse(source)
    imported: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update({alias.asname or alias.name: (alias.name, "") for alias in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.update({alias.asname or alias.name: (node.module, alias.name) for alias in node.names})
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name, keywords = called_name(node.func, imported), {k.arg: k.value for k in node.keywords}
        where = f"{filename}:{node.lineno}"
        if name == ("torch", "load") and constant(keywords.get("weights_only")) is not True:
            found.append(f"{where} torch.load without weights_only=True")
        elif name in UNSAFE:
            found.append(f"{where} {'.'.join(name)}")
        elif name == ("yaml", "load") and getattr(keywords.get("Loader"), "attr", None) not in SAFE_YAML_LOADERS:
            found.append(f"{where} yaml.load without a safe Loader")
        elif name == ("numpy", "load") and constant(keywords.get("allow_pickle", ast.Constant(False))) is not False:
            found.append(f"{where} numpy.load with allow_pickle")
        if "trust_remote_code" in keywords and constant(keywords["trust_remote_code"]) is not False:
            found.append(f"{where} trust_remote_code={ast.unparse(keywords['trust_remote_code'])}")
    return found


def test_the_scanner_finds_each_unsafe_form_and_passes_the_safe_ones():
    unsafe = """
import pickle, torch, yaml, numpy as np, joblib
from torch import load as tl
from transformers import AutoModel
torch.load(path)
torch.load(path, weights_only=False)
tl(path, map_location="cpu")
pickle.loads(data)
joblib.load(path)
yaml.load(text, Loader=yaml.Loader)
np.load(path, allow_pickle=True)
AutoModel.from_pretrained(name, trust_remote_code=True)
AutoModel.from_pretrained(name, trust_remote_code=flag)
"""
    found = unsafe_calls(unsafe, "x.py")
    assert [f.split(" ", 1)[0] for f in found] == [f"x.py:{n}" for n in range(5, 14)]
    safe = """
import torch, yaml, numpy as np
torch.load(path, map_location="cpu", weights_only=True)
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
np.load(path)
AutoModel.from_pretrained(name, trust_remote_code=False)
"""
    assert unsafe_calls(safe, "y.py") == []


def test_no_unsafe_deserialisation_in_src_or_pipelines():
    files = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "pipelines").glob("*.py"))
    assert len(files) > 20
    found = [hit for path in files for hit in unsafe_calls(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("safe_loading")
    memes = fetched(root)
    features = write_clip_features(memes, root / "features" / "clip").parent
    assert train_main(train_args(memes, features, root / "model")) == 0
    return {"memes": memes, "features": features, "model": root / "model"}


def test_weights_and_features_are_safetensors_and_checkpoint_pickles_load_weights_only(trained):
    from accelerate.utils import load as accelerate_load  # what `load_state` uses when it resumes

    model = trained["model"]
    outside = {p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()
               and p.relative_to(model).parts[0] not in ("checkpoints", "dvclive")}
    assert outside == {"config.json", "model.json", "params.json", "model.safetensors"}
    assert {p.suffix for p in trained["features"].rglob("*") if p.is_file()} == {".safetensors", ".json"}
    checkpoint = next((model / "checkpoints").glob("step-*"))
    pickled = sorted(p.name for p in checkpoint.iterdir() if p.suffix not in (".safetensors", ".json"))
    assert pickled == ["optimizer.bin", "random_states_0.pkl", "scheduler.bin"]
    for name in pickled:
        accelerate_load(checkpoint / name)  # raises unless it loads with weights_only=True


class Payload:
    """Unpickling this creates `marker`: the stand-in for arbitrary code in a tampered checkpoint."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_in_a_checkpoint_is_refused_and_never_run(trained, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained["model"], model)
    checkpoint = next((model / "checkpoints").glob("step-*"))
    marker = tmp_path / "payload-ran"
    for name in ("optimizer.bin", "random_states_0.pkl"):
        torch.save({"state": Payload(marker)}, checkpoint / name)
    torch.load(checkpoint / "optimizer.bin", weights_only=False)  # the payload is real: a plain load runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        train_main(train_args(trained["memes"], trained["features"], model))  # resumes from the tampered one
    assert not marker.exists()


def test_hub_token_and_zip_password_are_never_printed_or_written(tmp_path, monkeypatch, capfd):
    import datasets
    import huggingface_hub

    token, password, wrong = "hf_SecretTokenForTheTest42", "Zip-Pass-5ecret", "Wr0ng-Pass-Typed"
    raw = tmp_path / "raw"
    write_official(raw)
    encrypted_zip(tmp_path / "memes.zip", raw, password.encode())
    received = {}

    def snapshot_download(repo_id, repo_type, revision, token):  # the Hub, answered from the local copy
        received.update(repo_id=repo_id, token=token)
        return str(raw)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets_cache"))
    monkeypatch.setenv("HF_TOKEN", token)
    fetch = ["--params", str(PARAMS), "--out"]
    assert fetch_stage.main([*fetch, str(tmp_path / "hub"), "--source", "hub",
                             "--set", "fetch.hub.repo=someone/hateful_memes"]) == 0
    assert received == {"repo_id": "someone/hateful_memes", "token": token}  # the token is really in use
    monkeypatch.setenv("HATEMEMES_ZIP_PASSWORD", wrong)
    with pytest.raises(PermissionError) as refused:
        fetch_stage.main([*fetch, str(tmp_path / "memes"), "--source", "zip", "--path", str(tmp_path / "memes.zip")])
    assert wrong not in str(refused.value)
    monkeypatch.setenv("HATEMEMES_ZIP_PASSWORD", password)
    assert fetch_stage.main([*fetch, str(tmp_path / "memes"), "--source", "zip",
                             "--path", str(tmp_path / "memes.zip")]) == 0
    features = write_clip_features(tmp_path / "memes", tmp_path / "features" / "clip").parent
    no_heads = ("--set", "train.clip_fusion.model.fine_grained.enabled=false")  # no annotations in this zip
    assert train_main(train_args(tmp_path / "memes", features, tmp_path / "model", *no_heads)) == 0
    assert evaluate_main(evaluate_args(tmp_path / "memes", tmp_path / "model", tmp_path / "eval")) == 0

    printed = "".join(capfd.readouterr())
    inputs = (raw, tmp_path / "memes.zip")
    written = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(inputs[0])
               and p != inputs[1]}
    assert {"manifest.json", "params.json", "model.json", "metrics.json"} <= {p.name for p in written}
    assert any("hf_datasets_cache" in p.parts for p in written)  # the datasets cache was written, and is searched
    for secret in (token, password, wrong):
        assert secret not in printed
        assert [p for p, data in written.items() if secret.encode() in data] == []
