"""The tiny open_clip backbones: configs, the checkpoint route through `pretrained=`, training, the stage."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import open_clip
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))

import pretrain as pretrain_stage  # noqa: E402
from hatememes.data.synthetic import SyntheticConfig, generate_pretrain_corpus  # noqa: E402
from hatememes.pretrain import (  # noqa: E402
    TINY_MODELS,
    PretrainParams,
    load_split,
    read_pairs,
    register_tiny_configs,
    save_checkpoint,
    train_clip,
    zero_shot_accuracy,
)
from hatememes.threads import cpu_threads  # noqa: E402

CORPUS = SyntheticConfig(seed=1, image_size=64, pretrain_pairs=40, heldout_fraction=0.2)
QUICK = PretrainParams(models=("tiny-vit",), epochs=1, batch_size=16, probe_pairs=32)


@pytest.fixture(autouse=True)
def one_thread():
    with cpu_threads(1):  # as the stage runs: two threads on the shared 2-core machine ran 15-25x slower
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    generate_pretrain_corpus(root, CORPUS)
    return root


def test_tiny_configs_register_and_build():
    assert set(TINY_MODELS) <= set(register_tiny_configs()) and set(TINY_MODELS) <= set(open_clip.list_models())
    register_tiny_configs()  # idempotent: the config folder is added once
    assert open_clip.factory._MODEL_CONFIG_PATHS.count(Path(register_tiny_configs.__globals__["CONFIG_DIR"])) == 1
    towers = {"tiny-vit": open_clip.transformer.VisionTransformer, "tiny-rn": open_clip.modified_resnet.ModifiedResNet}
    for name, tower in towers.items():
        model = open_clip.create_model(name)
        size = model.visual.image_size if isinstance(model.visual.image_size, int) else model.visual.image_size[0]
        image_features = model.encode_image(torch.randn(2, 3, size, size))  # (2, D)
        input_ids = open_clip.get_tokenizer(name)(["a red star", "a blue moon"])  # (2, L)
        assert isinstance(model.visual, tower)
        assert image_features.shape == model.encode_text(input_ids).shape == (2, model.visual.output_dim)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_checkpoint_loads_through_create_model_and_transforms(name, tmp_path):
    register_tiny_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(name).eval()
    path = save_checkpoint(model, tmp_path / f"{name}.safetensors")
    loaded, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(path))
    torch.manual_seed(1)
    fresh = open_clip.create_model(name).eval()
    size = preprocess.transforms[1].size[0]
    pixel_values = torch.randn(3, 3, size, size)
    input_ids = open_clip.get_tokenizer(name)(["a small red star in the top left on grey"])
    with torch.no_grad():
        assert torch.equal(loaded.eval().encode_image(pixel_values), model.encode_image(pixel_values))
        assert torch.equal(loaded.encode_text(input_ids), model.encode_text(input_ids))
        assert not torch.allclose(fresh.encode_image(pixel_values), model.encode_image(pixel_values))


def test_a_short_training_run_lowers_the_contrastive_loss(corpus, learned):
    register_tiny_configs()
    torch.manual_seed(learned.seed)
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-vit", output_dict=True)
    train = load_split(corpus, read_pairs(corpus), "train", preprocess)
    losses = train_clip(model, open_clip.get_tokenizer("tiny-vit"), train,
                        dataclasses.replace(QUICK, epochs=6, lr=2.0e-3, warmup_fraction=0.2))
    assert len(losses) == 6
    learned.check("first - last epoch loss", losses[0] - losses[-1], 0.3)


def test_training_the_used_token_rows_only_gives_the_full_tables_weights(corpus, monkeypatch):
    """UsedTokenRows trains the rows of the corpus's tokens only: the checkpoint is bit for bit the one of the
    full table (whose other rows AdamW leaves as initialised: no gradient, no weight decay on embeddings)."""
    import hatememes.pretrain as P

    register_tiny_configs()
    params = dataclasses.replace(QUICK, epochs=1)

    def trained() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms("tiny-rn", output_dict=True)
        train = load_split(corpus, read_pairs(corpus)[:96], "train", preprocess)
        train_clip(model, open_clip.get_tokenizer("tiny-rn"), train, params)
        assert isinstance(model.token_embedding, torch.nn.Embedding)  # the full table again, as saved
        return model.state_dict()

    compact = trained()

    class FullTable:  # the plain embedding, trained whole
        def __new__(cls, embedding, used):
            embedding.merged = lambda: embedding
            return embedding

    monkeypatch.setattr(P, "UsedTokenRows", FullTable)
    full = trained()
    assert compact.keys() == full.keys()
    for key, value in full.items():
        assert torch.equal(compact[key], value), key
    initial = open_clip.create_model("tiny-rn").token_embedding.weight  # another draw: the rows did move
    assert not torch.equal(compact["token_embedding.weight"], initial)


def test_zero_shot_accuracy_is_the_argmax_over_class_embeddings():
    classes = torch.eye(3)  # (C, D)
    image_features = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [0.7, 0.0, 0.3]])  # (N, D)
    assert zero_shot_accuracy(image_features, classes, [0, 2, 2]) == pytest.approx(2 / 3)


def write_params(path: Path, pretrain_llava: dict | None = None, **pretrain) -> Path:
    section = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(QUICK).items()}
    params = {"profile": "demo", "fetch": {"synthetic": dataclasses.asdict(CORPUS)},
              "pretrain": {**section, **pretrain}, **({"pretrain_llava": pretrain_llava} if pretrain_llava else {})}
    path.write_text(yaml.safe_dump(params))
    return path


def test_stage_writes_checkpoints_and_metrics(tmp_path):
    out, corpus = tmp_path / "pretrain", tmp_path / "corpus"
    params = write_params(tmp_path / "params.yaml")
    assert pretrain_stage.main(["--corpus", str(corpus), "--out", str(out), "--params", str(params)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["tiny-vit"]
    assert {"zero_shot_object_accuracy", "zero_shot_color_accuracy", "probe_object_accuracy"} <= set(metrics)
    assert metrics["train_pairs"] == 32 and metrics["heldout_pairs"] == 8
    assert len(read_pairs(corpus)) == CORPUS.pretrain_pairs
    open_clip.create_model("tiny-vit", pretrained=str(out / "tiny-vit.safetensors"))


def test_stage_disabled_writes_a_skip_note_and_no_checkpoint(tmp_path):
    out, corpus = tmp_path / "pretrain", tmp_path / "corpus"
    params = write_params(tmp_path / "params.yaml", enabled=False)
    assert pretrain_stage.main(["--corpus", str(corpus), "--out", str(out), "--params", str(params)]) == 0
    assert json.loads((out / "metrics.json").read_text())["skipped"] is True
    assert not list(out.glob("*.safetensors")) and not list(corpus.iterdir())


def test_stage_builds_the_llava_base_in_a_second_process(tmp_path, capfd):
    """--llava-out runs pipelines/pretrain_llava.py on the same corpus and params beside the CLIP's training; the
    stage succeeds only if both do."""
    out, corpus, llava = tmp_path / "pretrain", tmp_path / "corpus", tmp_path / "llava-tiny"
    skip = write_params(tmp_path / "skip.yaml", pretrain_llava={"enabled": False})
    arguments = ["--corpus", str(corpus), "--out", str(out), "--llava-out", str(llava)]
    assert pretrain_stage.main([*arguments, "--params", str(skip)]) == 0
    assert json.loads((llava / "pretrain_log.json").read_text())["skipped"] is True  # the second process ran
    assert (out / "tiny-vit.safetensors").is_file()
    capfd.readouterr()
    broken = write_params(tmp_path / "broken.yaml", pretrain_llava={"enabled": True, "tinny": {}})
    assert pretrain_stage.main([*arguments, "--params", str(broken), "--reuse-corpus"]) == 1
    error = capfd.readouterr().err
    assert "tinny" in error and "pipelines/pretrain_llava.py exited 1" in error
