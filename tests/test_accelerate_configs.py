"""configs/accelerate/*.yaml leave gradient accumulation and clipping to the params, and `loop.batch_size` is the
global batch whatever the process count.

Each config's worker environment is built by accelerate's own launcher code, as `accelerate launch
--config_file X` does (`launch_command_parser`, `_validate_launch_command`, then the `prepare_*_env` function
`launch_command` would pick); no process starts. From that environment the test builds what the training loop
gives `Accelerator` (`accelerator_settings`), which builds the DeepSpeed plugin as Accelerate would
(`DeepSpeedPlugin()` from the environment) and fills in the loop's values.

deepspeed is not installed here, and need not be: `DeepSpeedPlugin` builds without it (only
`Accelerator(deepspeed_plugin=...)` and `prepare` import it). So the DeepSpeed checks are on the plugin's
fields and its `deepspeed_config` dict, after the "auto" filling `Accelerator._prepare_deepspeed` does with its
own defaults (clipping 1.0): that dict is what it hands to `deepspeed.initialize`. FSDP's plugin has no
accumulation or clipping: there the `GradientAccumulationPlugin` we pass and the loop's own `clip_grad_norm_`
decide, and the test checks that the launch environment cannot override the former.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env, prepare_simple_launcher_cmd_env

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from toy_training import toy_model  # noqa: E402

from hatememes.losses import LossConfig, make_loss  # noqa: E402
from hatememes.training import LoopParams, accelerator_settings, batch_loss, check_loop_params  # noqa: E402

ROOT = Path(__file__).parents[1]
CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))
LOOP = LoopParams(batch_size=32, grad_accum=4, grad_clip=0.3)


def launch_environment(config: Path) -> dict[str, str]:
    """The variables `accelerate launch --config_file config pipelines/train.py` sets for its workers."""
    args = launch_command_parser().parse_args(["--config_file", str(config), "pipelines/train.py", "clip_fusion"])
    args, defaults, mixed_precision_from_config = _validate_launch_command(args)
    if args.use_deepspeed:  # as launch_command does before deepspeed_launcher
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mixed_precision_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, environment = prepare_deepspeed_cmd_env(args)
    elif args.use_fsdp or args.multi_gpu:
        environment = prepare_multi_gpu_env(args)
    else:
        _, environment = prepare_simple_launcher_cmd_env(args)
    return {key: value for key, value in environment.items() if os.environ.get(key) != value}


@pytest.fixture
def clean_environment(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.delenv(key)
    return monkeypatch


def test_the_configs_set_no_accumulation_or_clipping():
    for config in CONFIGS:
        text = yaml.safe_load(config.read_text())
        settings = {key: value for section in ("deepspeed_config", "fsdp_config") for key, value in
                    (text.get(section) or {}).items()}
        assert not {key for key in settings if "accumulation" in key or "clip" in key}, config.name


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.stem)
def test_the_loop_params_decide_accumulation_and_clipping(config, clean_environment):
    environment = launch_environment(config)
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in environment
    assert "ACCELERATE_GRADIENT_CLIPPING" not in environment
    for key, value in environment.items():
        clean_environment.setenv(key, value)
    clean_environment.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "1")  # `--gradient_accumulation_steps 1`
    settings = accelerator_settings(LOOP)
    assert settings["gradient_accumulation_plugin"].num_steps == 4  # passed as a plugin: the variable cannot win
    assert settings["dataloader_config"].split_batches  # batch_size is the global batch
    plugin = settings["deepspeed_plugin"]
    if environment.get("ACCELERATE_USE_DEEPSPEED") != "true":
        assert plugin is None
    else:
        assert (plugin.gradient_accumulation_steps, plugin.gradient_clipping) == (4, 0.3)
        # what _prepare_deepspeed then fills in: its own defaults for "auto" keys (clipping 1.0), and the batch
        plugin.deepspeed_config_process(must_match=False, gradient_clipping=1.0, train_micro_batch_size_per_gpu=4,
                                        train_batch_size=4 * 4 * 8)
        config_dict = plugin.deepspeed_config
        assert (config_dict["gradient_accumulation_steps"], config_dict["gradient_clipping"]) == (4, 0.3)
        assert config_dict["zero_optimization"]["stage"] == 3
    if environment.get("ACCELERATE_USE_FSDP") == "true":
        fsdp = FullyShardedDataParallelPlugin()  # as Accelerate builds it from the environment
        assert fsdp.fsdp_version == 2 and not hasattr(fsdp, "gradient_clipping")


def test_a_batch_that_does_not_split_between_the_processes_fails_at_the_start():
    check_loop_params(LoopParams(batch_size=32, eval_batch_size=64), 8, toy_model())
    with pytest.raises(ValueError, match="train.clip_fusion.loop.batch_size = 12 is the global batch, split "
                                         "between the 8 processes: it must be divisible by 8"):
        check_loop_params(LoopParams(batch_size=12), 8, toy_model())
    with pytest.raises(ValueError, match="train.clip_fusion.loop.eval_batch_size = 100 "):
        check_loop_params(LoopParams(batch_size=8, eval_batch_size=100), 8, toy_model())


def test_the_padding_of_the_last_global_batch_does_not_train():
    """Two processes split an epoch's last 5 memes, padded by Accelerate to the global batch of 8: 4 real on the
    first, 1 real and 3 copies on the second. DDP's mean of their losses is the loss of the 5 memes."""
    loss_fn = make_loss("bce", LossConfig(), class_counts=(1, 1))
    logits, labels = torch.randn(8), torch.tensor([1.0, 0, 0, 1, 1, 1, 0, 0])  # (8,): the padded global batch

    def share(rank: int, memes_left: int) -> torch.Tensor:
        accelerator = SimpleNamespace(num_processes=2, process_index=rank)
        return batch_loss(loss_fn, logits[4 * rank:4 * rank + 4], labels[4 * rank:4 * rank + 4], accelerator,
                          memes_left)

    torch.testing.assert_close((share(0, 5) + share(1, 5)) / 2, loss_fn(logits[:5], labels[:5]))
    torch.testing.assert_close((share(0, 8) + share(1, 8)) / 2, loss_fn(logits, labels))  # a full batch
    assert share(1, 3).item() == 0.0  # the second process holds only padding
