"""The params loader is strict: missing, unknown and mistyped keys fail naming the key and the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from hatememes.params import ParamsError, load_params, section


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
        (BASE.replace("lr: 1.0e-4", "lr: 1e-4"), "write 1.0e-4"),
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
