"""The train@ stages (training, then scoring every split) under `accelerate launch`, from `dvc repro`: `launch`.

    relaunch(params, "pipelines/train.py", sys.argv[1:])   # returns in the process that does the work

With `launch.accelerate_config: ""` (the default) it returns at once: one plain process, and the demo pays no
second start-up. With a config file (configs/accelerate/multi_gpu.yaml, deepspeed_zero3.yaml, ...) the stage's
process replaces itself by `accelerate launch --config_file <it> <script> <args>`, which starts the workers;
each of them reads the same params, sees the marker in its environment and does the work. The config is a
param, so DVC records it and a change reruns the stages it launches. Gradient accumulation, clipping and mixed
precision stay the params' (`train.MODEL.loop`): the configs in configs/accelerate leave them unset.
configs/accelerate/cpu_2.yaml runs two workers on a machine without a GPU (DDP over gloo; `cpu_workers`).
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

LAUNCHED = "HATEMEMES_ACCELERATE_CONFIG"  # set in the workers' environment: the config they were launched with


@dataclass(frozen=True)
class LaunchParams:
    accelerate_config: str = ""


def launch_command(config: str, script: str, argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, script, *argv]


def relaunch(params: dict, script: str, argv: list[str]) -> None:
    """Return when this process should run the stage; otherwise become `accelerate launch` (never returns)."""
    from hatememes.params import ParamsError, section

    config = section(params, "launch", LaunchParams).accelerate_config
    if not config or os.environ.get(LAUNCHED) == config or under_accelerate_launch():
        cpu_workers()
        return
    if not Path(config).is_file():
        known = ", ".join(sorted(str(p) for p in Path("configs/accelerate").glob("*.yaml"))) or "none found"
        raise ParamsError(f"launch.accelerate_config: {config}: no such file (the configs: {known}; "
                          f"\"\" runs one plain process)")
    command = launch_command(config, script, argv)
    print(f"launch: {shlex.join(command)}", flush=True)
    os.execvpe(command[0], command, {**os.environ, LAUNCHED: config})


def under_accelerate_launch() -> bool:
    """Started by `accelerate launch` by hand (every launcher sets ACCELERATE_MIXED_PRECISION): run here, not
    launch again from each worker."""
    return "ACCELERATE_MIXED_PRECISION" in os.environ


def cpu_workers() -> None:
    """Several workers on a machine without a GPU (torchrun's WORLD_SIZE > 1): make Accelerate's state a CPU
    one, DDP over gloo. Accelerate's multi-GPU launcher starts the workers, and its CPU launcher starts only
    one (or mpirun); without this each worker would train alone on the whole data."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    from accelerate import PartialState

    if not torch.cuda.is_available():
        PartialState(cpu=True)
