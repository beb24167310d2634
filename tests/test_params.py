"""The params loader is strict: missing, unknown and mistyped keys fail naming the key and the file.

It reads YAML as DVC does (YAML 1.2): a params.yaml that `dvc exp run -S` rewrote means what it meant before.
params.yaml is Hydra's composition of conf/ (DVC's own `compose_and_dump`, as `dvc exp run -S` calls it): the
committed file is that composition, a profile's values land in it, and an override after them wins.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from hatememes.params import ParamsError, compose, load_params, read_yaml, section

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


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "params.yaml").write_text(text)
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


def test_overrides_apply_over_the_file(tmp_path):
    params = load_params(write(tmp_path, BASE), overrides=["stage.inner.lr=0.5"])
    assert section(params, "stage", Outer).inner.lr == 0.5
    assert params["_sources"] == [str(tmp_path / "params.yaml"), "override stage.inner.lr=0.5"]
    with pytest.raises(ParamsError, match="unknown key 'stage.inner.lrr'"):
        load_params(tmp_path / "params.yaml", overrides=["stage.inner.lrr=0.5"])


def test_the_committed_params_yaml_is_the_demo_composition(tmp_path):
    """params.yaml is generated: editing conf/ without composing would leave DVC tracking stale values."""
    composed = compose([], ROOT / "conf", tmp_path / "params.yaml")
    assert composed.read_text() == (ROOT / "params.yaml").read_text(), \
        "params.yaml differs from conf/: run `python -m hatememes.params compose`"


def leaves(tree: dict, prefix: str = "") -> dict:
    return {key: value for name, node in tree.items()
            for key, value in (leaves(node, f"{prefix}{name}.").items() if isinstance(node, dict)
                               else [(f"{prefix}{name}", node)])}


def test_the_full_profile_lands_in_params_yaml_and_an_override_wins_over_it(tmp_path):
    import yaml

    out = compose(["profile=full", "train.mmbt.loop.lr=2.0e-5", "fetch.source=zip", "fetch.path=data/hm.zip"],
                  ROOT / "conf", tmp_path / "params.yaml")
    params = load_params(out)
    assert params["profile"] == "full"
    assert params["train"]["mmbt"]["loop"]["lr"] == 2.0e-5  # the full profile sets 1e-5: the override wins
    assert params["train"]["mmbt"]["loop"]["epochs"] == 83  # and the profile's other values are there
    assert (params["fetch"]["source"], params["fetch"]["path"]) == ("zip", "data/hm.zip")
    profile = yaml.safe_load((ROOT / "conf" / "profile" / "full.yaml").read_text())
    demo = leaves(read_yaml(ROOT / "params.yaml"))
    full = leaves(params)
    for key, value in leaves(profile).items():
        assert key in demo, f"conf/profile/full.yaml sets {key}, which conf/config.yaml does not have"
        if key not in ("train.mmbt.loop.lr", "fetch.source", "fetch.path"):
            assert full[key] == value, key


def test_an_override_that_cannot_take_effect_fails_naming_the_key(tmp_path):
    from hydra.errors import HydraException

    with pytest.raises(HydraException, match="train.mmbt.loop.lrr"):
        compose(["profile=full", "train.mmbt.loop.lrr=2e-5"], ROOT / "conf", tmp_path / "params.yaml")
    with pytest.raises(HydraException, match="profile/fulll"):
        compose(["profile=fulll"], ROOT / "conf", tmp_path / "params.yaml")


def test_the_compose_command(tmp_path, capsys):
    from hatememes.params import main

    assert main(["compose", "profile=full", "--conf", str(ROOT / "conf"), "--out", str(tmp_path / "p.yaml")]) == 0
    assert load_params(tmp_path / "p.yaml")["profile"] == "full"
    assert main(["compose", "nosuch.key=1", "--conf", str(ROOT / "conf"), "--out", str(tmp_path / "p.yaml")]) == 1
    assert "nosuch.key" in capsys.readouterr().err


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


@pytest.fixture(params=["demo", "full"])
def composed(request, tmp_path_factory) -> Path:
    """params.yaml as each profile composes it."""
    return compose([f"profile={request.param}"], ROOT / "conf", tmp_path_factory.mktemp("p") / "params.yaml")


def test_our_reading_is_dvcs_reading(composed):
    """What runs is what DVC records: our loader and DVC's give the same values for the composed files."""
    from dvc.utils.serialize import load_yaml

    assert read_yaml(composed) == load_yaml(str(composed))


def test_dvc_rewrite_round_trips_without_a_change_in_meaning(composed, tmp_path):
    path = composed
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
    for model in set(params["train"]) - {"dev_split"}:
        if "loop" in params["train"][model]:
            assert section(params, f"train.{model}.loop", LoopParams).mixed_precision == "no"
    assert params["fetch"]["zip_sha256"] == ""


def test_a_fixed_length_tuple_param_needs_its_length():
    """clip_fusion's drop_probs is (map, fusion, pre-output): two values or four are refused, by key."""
    from hatememes.models.clip_fusion import ClipFusionConfig
    from hatememes.params import ParamsError, from_dict

    assert from_dict(ClipFusionConfig, {"drop_probs": [0.2, 0.4, 0.1]}, "test").drop_probs == (0.2, 0.4, 0.1)
    for wrong in ([0.2, 0.4], [0.1, 0.2, 0.3, 0.4]):
        with pytest.raises(ParamsError, match=r"drop_probs must be a list of 3"):
            from_dict(ClipFusionConfig, {"drop_probs": wrong}, "test")
