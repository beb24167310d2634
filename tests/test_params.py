"""The params loader is strict: missing, unknown and mistyped keys fail naming the key and the file.

It reads YAML as DVC does (YAML 1.2): a params.yaml that `dvc exp run -S` rewrote means what it meant before.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from hatememes.params import ParamsError, load_params, read_yaml, section

ROOT = Path(__file__).parents[1]


@dataclass(frozen=True)
class Inner:
    lr: float
    schedule: Literal["cosine", "linear"] = "cosine"


@dataclass(frozen=True)
class Outer:
    epochs: int
    names: tuple[str, ...]
    inner: Inner
    flag: bool = False
    tag: str | None = None
    extra: dict[str, int] = field(default_factory=dict)


def write(tmp_path: Path, text: str, overlay: str | None = None) -> Path:
    (tmp_path / "params.yaml").write_text(text)
    if overlay is not None:
        (tmp_path / "profiles").mkdir()
        (tmp_path / "profiles" / "full.yaml").write_text(overlay)
    return tmp_path / "params.yaml"


BASE = "profile: demo\nstage:\n  epochs: 3\n  names: [a, b]\n  inner: {lr: 1.0e-4}\n"


def test_loads_typed_frozen_dataclass(tmp_path):
    config = section(load_params(write(tmp_path, BASE)), "stage", Outer)
    assert config == Outer(epochs=3, names=("a", "b"), inner=Inner(lr=1e-4))
    with pytest.raises(AttributeError):
        config.epochs = 4


@pytest.mark.parametrize(
    "text, message",
    [
        (BASE.replace("  epochs: 3\n", ""), "missing key stage.epochs"),
        (BASE + "  epoch: 4\n", "unknown key stage.epoch"),
        (BASE.replace("epochs: 3", "epochs: three"), "stage.epochs must be an integer"),
        (BASE.replace("epochs: 3", "epochs: 3.5"), "stage.epochs must be an integer"),
        (BASE.replace("lr: 1.0e-4", "lr: '1.0e-4'"), "stage.inner.lr must be a number, got '1.0e-4'"),
        (BASE.replace("{lr: 1.0e-4}", "{lr: 1.0e-4, schedule: step}"), "stage.inner.schedule must be one of"),
        (BASE + "  flag: yes please\n", "stage.flag must be true or false"),
        (BASE.replace("names: [a, b]", "names: a"), "stage.names must be a list"),
    ],
)
def test_rejects_bad_params_naming_key_and_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ParamsError) as error:
        section(load_params(path), "stage", Outer)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_profile_overlay_and_overrides(tmp_path):
    path = write(tmp_path, BASE.replace("profile: demo", "profile: full"), overlay="stage:\n  epochs: 20\n")
    params = load_params(path, overrides=["stage.inner.lr=0.5"])
    config = section(params, "stage", Outer)
    assert (config.epochs, config.inner.lr) == (20, 0.5)
    assert str(tmp_path / "profiles" / "full.yaml") in params["_sources"]


def test_overlay_cannot_invent_keys(tmp_path):
    path = write(tmp_path, BASE.replace("profile: demo", "profile: full"), overlay="stage:\n  epohcs: 20\n")
    with pytest.raises(ParamsError, match=r"full.yaml: unknown key 'stage.epohcs'"):
        load_params(path)


def test_missing_profile_overlay_is_an_error(tmp_path):
    with pytest.raises(ParamsError, match="profile 'full' has no overlay"):
        load_params(write(tmp_path, BASE.replace("profile: demo", "profile: full")))


def test_reads_yaml_1_2_as_dvc_writes_it(tmp_path):
    """`dvc exp run -S` writes `no` and `1e-4` bare: YAML 1.2 strings and floats (YAML 1.1 read False and '1e-4')."""

    @dataclass(frozen=True)
    class Loop:
        lr: float
        mixed_precision: Literal["no", "bf16", "fp16"]
        tag: str

    path = write(tmp_path, "profile: demo\nloop: {lr: 1e-4, mixed_precision: no, tag: off}\n")
    assert section(load_params(path), "loop", Loop) == Loop(lr=1e-4, mixed_precision="no", tag="off")
    overridden = load_params(path, overrides=["loop.lr=2e-5", "loop.tag=yes"])
    assert section(overridden, "loop", Loop) == Loop(lr=2e-5, mixed_precision="no", tag="yes")


PARAMS_FILES = [ROOT / "params.yaml", ROOT / "profiles" / "full.yaml"]


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: p.name)
def test_our_reading_is_dvcs_reading(path):
    """What runs is what DVC records: our loader and DVC's give the same values for the committed files."""
    from dvc.utils.serialize import load_yaml

    assert read_yaml(path) == load_yaml(str(path))


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: p.name)
def test_dvc_rewrite_round_trips_without_a_change_in_meaning(path, tmp_path):
    """`dvc exp run -S`, `dvc exp apply` and `dvc params diff` rewrite or re-read params.yaml with DVC's
    round-trip YAML writer (flow lists reflowed, quotes dropped): load, dump as DVC dumps, load again."""
    from dvc.utils.serialize import dumps_yaml, modify_yaml, parse_yaml_for_update

    copy = tmp_path / path.name
    shutil.copy(path, copy)
    with modify_yaml(copy):  # what `dvc exp run -S` does around its change: parse for update, dump
        pass
    dumped = dumps_yaml(read_yaml(path))  # and a plain dump of the values, as `dvc exp apply` restores them
    (tmp_path / "plain.yaml").write_text(dumped)
    assert read_yaml(copy) == read_yaml(path)
    assert read_yaml(tmp_path / "plain.yaml") == read_yaml(path)
    assert parse_yaml_for_update(copy.read_text(), str(copy)) == read_yaml(path)


def test_dvc_set_param_overrides_keep_their_types(tmp_path):
    """The function behind `dvc exp run -S` (hydra override grammar, then DVC's writer) on the real params.yaml:
    every resolved section still loads, and the values arrive with the types the dataclasses expect."""
    from dvc.utils.hydra import apply_overrides

    from hatememes.training import LoopParams

    copy = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", copy)
    apply_overrides(str(copy), ["train.clip_fusion.loop.epochs=3", "train.clip_fusion.loop.lr=2e-4",
                                "train.mmbt.loop.mixed_precision=no", "fetch.zip_sha256=''"])
    text = copy.read_text()
    assert "mixed_precision: no\n" in text  # DVC drops the quotes, as the issue saw
    params = load_params(copy)
    loop = section(params, "train.clip_fusion.loop", LoopParams)
    assert (loop.epochs, loop.lr) == (3, 2e-4)
    for model in params["train"]["models"]:
        if "loop" in params["train"][model]:
            assert section(params, f"train.{model}.loop", LoopParams).mixed_precision == "no"
    assert params["fetch"]["zip_sha256"] == ""
