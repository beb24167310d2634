"""hatememes.launch decides, from params.yaml `launch.accelerate_config`, whether a train stage runs
here or replaces itself by `accelerate launch` (tests/test_launch.py runs both through `dvc repro`)."""

from __future__ import annotations

import pytest

from hatememes import launch
from hatememes.params import ParamsError


class Exec(Exception):
    """Raised instead of replacing the test process."""


@pytest.fixture
def exec_calls(monkeypatch) -> list:
    calls = []

    def fake_exec(file, args, env):
        calls.append((file, args, env))
        raise Exec

    monkeypatch.setattr(launch.os, "execvpe", fake_exec)
    for name in (launch.LAUNCHED, "ACCELERATE_MIXED_PRECISION", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return calls


def params(config: str) -> dict:
    return {"launch": {"accelerate_config": config}}


def test_the_default_runs_here_and_starts_nothing(exec_calls):
    launch.relaunch(params(""), "pipelines/train.py", ["clip_fusion"])
    assert exec_calls == []


def test_a_config_replaces_the_process_by_accelerate_launch(exec_calls, tmp_path, capsys):
    config = tmp_path / "two.yaml"
    config.write_text("distributed_type: MULTI_GPU\n")
    with pytest.raises(Exec):
        launch.relaunch(params(str(config)), "pipelines/train.py", ["mmbt", "--out", "models/mmbt"])
    (_, args, env), = exec_calls
    assert args[1:] == ["-m", "accelerate.commands.launch", "--config_file", str(config), "pipelines/train.py",
                        "mmbt", "--out", "models/mmbt"]
    assert env[launch.LAUNCHED] == str(config)
    assert "launch: " in capsys.readouterr().out


def test_the_workers_and_hand_launched_runs_do_not_launch_again(exec_calls, tmp_path, monkeypatch):
    config = tmp_path / "two.yaml"
    config.write_text("distributed_type: MULTI_GPU\n")
    monkeypatch.setenv(launch.LAUNCHED, str(config))
    launch.relaunch(params(str(config)), "pipelines/train.py", [])
    monkeypatch.delenv(launch.LAUNCHED)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # `accelerate launch ... pipelines/train.py` by hand
    launch.relaunch(params(str(config)), "pipelines/train.py", [])
    assert exec_calls == []


def test_a_missing_config_names_the_param(exec_calls):
    with pytest.raises(ParamsError, match=r"launch.accelerate_config: configs/accelerate/nope.yaml: no such file"):
        launch.relaunch(params("configs/accelerate/nope.yaml"), "pipelines/train.py", [])
