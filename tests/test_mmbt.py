"""MMBT: sequence layout, parity with BERT and with HF's old MMBTModel formulation, save/reload, training."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from hatememes.models import BuildContext
from hatememes.models.mmbt import MMBT, MMBTConfig, pool_grid

GRID_DIM = 8
TEXTS = ["a red star", "look how many people love you on this fine day"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def build(directory, **overrides) -> MMBT:
    meta = {"grid": {"dim": GRID_DIM}, "regions": {"dim": GRID_DIM, "num_boxes": 5}}
    torch.manual_seed(1)
    model = MMBT.build(MMBTConfig(text_model=str(directory), **overrides), BuildContext(feature_meta=meta))
    return model.eval()


def make_items(count: int = 2, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [{"id": i, "text": TEXTS[i % len(TEXTS)], "label": i % 2,
             "grid": torch.randn(GRID_DIM, 3, 3, generator=generator),
             "regions": torch.randn(5, GRID_DIM, generator=generator), "boxes": torch.rand(5, 6, generator=generator)}
            for i in range(count)]


def test_pool_grid_regions():
    grid = torch.arange(2 * 4 * 9, dtype=torch.float32).reshape(2, 4, 3, 3)  # (B, C, S, S)
    torch.testing.assert_close(pool_grid(grid, 9), grid.flatten(2).transpose(1, 2))
    torch.testing.assert_close(pool_grid(grid, 1), grid.mean(dim=(2, 3))[:, None, :])
    torch.testing.assert_close(pool_grid(grid, 3), grid.mean(dim=3).transpose(1, 2))  # one token per row
    with pytest.raises(ValueError):
        pool_grid(grid, 10)


def test_sequence_layout(tiny_bert_dir):
    model = build(tiny_bert_dir, num_image_tokens=4)
    batch = model.collate(make_items())
    input_ids = batch["input_ids"]  # (2, L): [CLS] text [SEP] pad
    text_length = input_ids.shape[1] - 1
    assert batch["image_features"].shape == (2, 4, GRID_DIM)
    assert torch.equal(batch["ids"], torch.tensor([0, 1])) and torch.equal(batch["labels"], torch.tensor([0.0, 1.0]))
    sequence = model.sequence(batch)
    length = 4 + 2 + text_length
    assert sequence["inputs_embeds"].shape == (2, length, 32)
    expected_types = torch.tensor([1] * 6 + [0] * text_length).expand(2, -1)  # MMF's: image 1, text 0
    expected_positions = torch.tensor(list(range(6)) + list(range(text_length))).expand(2, -1)
    expected_mask = torch.cat([torch.ones(2, 6, dtype=torch.long), batch["attention_mask"][:, 1:]], dim=1)
    assert torch.equal(sequence["token_type_ids"], expected_types)
    assert torch.equal(sequence["position_ids"], expected_positions)
    assert torch.equal(sequence["attention_mask"], expected_mask)
    assert expected_mask[0].sum() < expected_mask[1].sum()  # the short caption is padded
    words = model.bert.get_input_embeddings()
    embeds = sequence["inputs_embeds"]
    tokenizer = model.tokenizer
    torch.testing.assert_close(embeds[:, 0], words.weight[tokenizer.cls_token_id].expand(2, -1))
    torch.testing.assert_close(embeds[:, 1:5], model.image_projection(batch["image_features"]))
    torch.testing.assert_close(embeds[:, 5], words.weight[tokenizer.sep_token_id].expand(2, -1))
    torch.testing.assert_close(embeds[:, 6:], words(input_ids[:, 1:]))
    assert model(batch).shape == (2,)


def test_segments_are_mmfs(tiny_bert_dir):
    """MMF's MMBTBase: a one-segment text (segment ids all 0) puts the modal tokens, [CLS] and [SEP] included,
    in segment 1 (HF's MMBTModel defaults are the reverse)."""
    model = build(tiny_bert_dir, num_image_tokens=2)
    token_type_ids = model.sequence(model.collate(make_items()))["token_type_ids"]  # (B, 4 + L-1)
    assert token_type_ids[:, :4].eq(1).all() and token_type_ids[:, 4:].eq(0).all()


def test_regions_input(tiny_bert_dir):
    model = build(tiny_bert_dir, image_features="regions")
    assert model.inputs == ("regions",) and MMBT.inputs == ("grid",)
    batch = model.collate(make_items())
    assert batch["image_features"].shape == (2, 5, GRID_DIM)
    assert model.sequence(batch)["token_type_ids"][0].tolist()[:8] == [1] * 7 + [0]


def test_image_masked_equals_bert_on_text(tiny_bert_dir):
    """With img_1..N and the modal [SEP] masked, MMBT's [CLS] and text states are BERT's on `[CLS] text [SEP]`
    given the same ids: [CLS] at position 0 / segment 1, the text at positions 0.. / segment 0."""
    model = build(tiny_bert_dir, num_image_tokens=3)
    batch = model.collate(make_items())
    sequence = model.sequence(batch)
    sequence["attention_mask"][:, 1:5] = 0  # img_1..img_3 and [SEP]
    mmbt_out = model.bert(**sequence)
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    text_length = input_ids.shape[1] - 1

    def bert_on_text(positions, segments):
        ids = {"position_ids": positions.expand(2, -1), "token_type_ids": segments.expand(2, -1)}
        return model.bert(input_ids=input_ids, attention_mask=mask, **ids)

    segments = torch.tensor([1] + [0] * text_length)
    reference = bert_on_text(torch.tensor([0] + list(range(text_length))), segments)
    kept = [0] + list(range(5, 5 + text_length))
    valid = mask.bool()
    torch.testing.assert_close(mmbt_out.last_hidden_state[:, kept][valid], reference.last_hidden_state[valid])
    torch.testing.assert_close(mmbt_out.pooler_output, reference.pooler_output)
    # the comparison is sharp: BERT's usual positions, or HF's segments (modal 0, text 1), give other states
    usual_positions = bert_on_text(torch.arange(text_length + 1), segments)
    restarted = torch.tensor([0] + list(range(text_length)))
    hf_segments = bert_on_text(restarted, 1 - segments)
    for other in (usual_positions, hf_segments):
        difference = other.last_hidden_state[valid] - mmbt_out.last_hidden_state[:, kept][valid]
        assert difference.abs().max() > 0.1


def test_matches_mmf_mmbt_formulation(tiny_bert_dir):
    """MMF's MMBT (HF's MMBTModel as MMBTBase calls it on a one-segment text): ModalEmbeddings([CLS] proj(img)
    [SEP], positions 0..N+1, segment 1) ++ BERT's text embeddings (segment 0, positions from 0), one encoder
    pass, BERT's pooler."""
    model = build(tiny_bert_dir, num_image_tokens=2)
    batch = model.collate(make_items())
    bert, emb = model.bert, model.bert.embeddings
    input_ids = batch["input_ids"]
    sep = torch.full_like(input_ids[:, :1], model.tokenizer.sep_token_id)
    modal = torch.cat([emb.word_embeddings(input_ids[:, :1]), model.image_projection(batch["image_features"]),
                       emb.word_embeddings(sep)], dim=1)  # (B, 4, H)
    modal = emb.LayerNorm(modal + emb.position_embeddings(torch.arange(4)) + emb.token_type_embeddings.weight[1])
    text_ids = input_ids[:, 1:]
    text = emb(input_ids=text_ids, token_type_ids=torch.zeros_like(text_ids))  # positions 0.. by default
    mask = torch.cat([torch.ones(2, 4), batch["attention_mask"][:, 1:].float()], dim=1)
    additive = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min  # (B, 1, 1, S)
    hidden = bert.encoder(torch.cat([modal, text], dim=1), attention_mask=additive).last_hidden_state
    expected_logits = model.classifier(bert.pooler(hidden)).squeeze(-1)
    torch.testing.assert_close(model(batch), expected_logits)


def test_image_layer_norm_normalises_each_image_token(tiny_bert_dir):
    model = build(tiny_bert_dir, num_image_tokens=4, image_layer_norm=True)
    with torch.no_grad():
        model.image_norm.weight.uniform_(0.5, 2.0)  # trained-looking values, not the identity of a fresh norm
        model.image_norm.bias.normal_()
    batch = model.collate(make_items(2))
    captured = {}
    model.bert.embeddings.register_forward_hook(lambda module, args, kwargs, out: captured.update(kwargs),
                                                with_kwargs=True)
    model(batch)
    projected = model.image_projection(batch["image_features"])  # (B, N, H)
    expected = torch.nn.functional.layer_norm(projected, projected.shape[-1:], model.image_norm.weight,
                                              model.image_norm.bias, model.bert.config.layer_norm_eps)
    torch.testing.assert_close(captured["inputs_embeds"][:, 1:5], expected)
    assert "image_norm.weight" in model.state_dict() and "image_norm.weight" not in build(tiny_bert_dir).state_dict()


@pytest.mark.parametrize("image_layer_norm", [False, True])
def test_save_reload_same_probs(tiny_bert_dir, tmp_path, image_layer_norm):
    model = build(tiny_bert_dir, num_image_tokens=4, image_layer_norm=image_layer_norm)
    batch = model.collate(make_items(3))
    probs = torch.sigmoid(model(batch))
    model.save_pretrained(tmp_path / "mmbt")
    reloaded = MMBT.from_pretrained(tmp_path / "mmbt").eval()
    assert reloaded.config == model.config and reloaded.image_dim == GRID_DIM
    assert torch.equal(torch.sigmoid(reloaded(reloaded.collate(make_items(3)))), probs)


def test_first_layers_of_the_checkpoint(tiny_bert_dir, tmp_path):
    """num_hidden_layers=1 loads the checkpoint's embeddings, first layer and pooler: the 2-layer BERT cut after
    its first layer, and so it is saved and reloaded."""
    model = build(tiny_bert_dir, num_image_tokens=2, num_hidden_layers=1)
    full = build(tiny_bert_dir, num_image_tokens=2)
    assert len(model.bert.encoder.layer) == model.bert.config.num_hidden_layers == 1
    assert len(full.bert.encoder.layer) == 2  # None, the default: every layer, as published
    full_state = full.bert.state_dict()
    for key, value in model.bert.state_dict().items():
        assert torch.equal(value, full_state[key]), key
    full.bert.encoder.layer = full.bert.encoder.layer[:1]
    sequence = model.sequence(model.collate(make_items()))
    torch.testing.assert_close(model.bert(**sequence).pooler_output, full.bert(**sequence).pooler_output)
    model.save_pretrained(tmp_path / "mmbt")
    reloaded = MMBT.from_pretrained(tmp_path / "mmbt").eval()
    assert len(reloaded.bert.encoder.layer) == 1
    assert torch.equal(reloaded(reloaded.collate(make_items())), model(model.collate(make_items())))


@pytest.mark.parametrize("count", [0, 3])
def test_num_hidden_layers_checked(tiny_bert_dir, count):
    with pytest.raises(ValueError, match=rf"train\.mmbt\.model\.num_hidden_layers = {count}, but .* has 2 layers"):
        build(tiny_bert_dir, num_hidden_layers=count)


def test_mean_pooling(tiny_bert_dir, tmp_path):
    """pooling: mean classifies the mean of the final states over the attended tokens (image and text), and
    the model has no pooler, which would get no gradient."""
    model = build(tiny_bert_dir, num_image_tokens=2, pooling="mean")
    assert model.bert.pooler is None and not any(".pooler." in f".{key}" for key in model.state_dict())
    published = build(tiny_bert_dir).bert.state_dict()
    for key, value in model.bert.state_dict().items():  # every other weight loaded from the checkpoint
        assert torch.equal(value, published[key]), key
    batch = model.collate(make_items(3))
    sequence = model.sequence(batch)
    hidden = model.bert(**sequence).last_hidden_state  # (B, S, H)
    rows = [hidden[row, sequence["attention_mask"][row].bool()].mean(0) for row in range(3)]
    torch.testing.assert_close(model(batch), model.classifier(torch.stack(rows)).squeeze(-1))
    model.save_pretrained(tmp_path / "mmbt")
    reloaded = MMBT.from_pretrained(tmp_path / "mmbt").eval()
    assert torch.equal(reloaded(reloaded.collate(make_items(3))), model(batch))


def test_first_regions(tiny_bert_dir):
    model = build(tiny_bert_dir, image_features="regions", num_regions=2)
    items = make_items()
    batch = model.collate(items)
    torch.testing.assert_close(batch["image_features"], torch.stack([item["regions"][:2] for item in items]))
    assert model.sequence(batch)["token_type_ids"][0].tolist()[:5] == [1] * 4 + [0]
    for count in (0, 6):
        with pytest.raises(ValueError, match=rf"train\.mmbt\.model\.num_regions = {count}, but .* 5 boxes"):
            build(tiny_bert_dir, image_features="regions", num_regions=count)
    with pytest.raises(ValueError, match="num_regions = 2 is for image_features: regions"):
        build(tiny_bert_dir, image_features="grid", num_regions=2)


def test_frozen_word_embeddings(tiny_bert_dir):
    """freeze_word_embeddings: a training step leaves the word table as loaded and trains the rest."""
    model = build(tiny_bert_dir, num_image_tokens=2, freeze_word_embeddings=True).train()
    words = model.bert.get_input_embeddings().weight
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert not words.requires_grad and len(trainable) == len(list(model.parameters())) - 1
    before = {name: value.clone() for name, value in model.state_dict().items()}
    optimizer = torch.optim.AdamW(trainable, lr=1.0e-2)
    batch = model.collate(make_items(4))
    torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch["labels"]).backward()
    optimizer.step()
    after = model.state_dict()
    words, layer = "bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.output.dense.weight"
    assert torch.equal(after[words], before[words]) and not torch.equal(after[layer], before[layer])
    assert build(tiny_bert_dir).bert.get_input_embeddings().weight.requires_grad  # the default trains it


def test_training_reduces_loss(tiny_bert_dir, learned):
    """The label is the sign of the grid: only the image tokens can tell (the texts alternate with it too
    slowly to help: both captions occur with both labels). The 30k-word table is frozen to keep it fast."""
    model = build(tiny_bert_dir, num_image_tokens=1, dropout=0.0)
    model.bert.get_input_embeddings().requires_grad_(False)
    torch.manual_seed(learned.seed)
    items = make_items(16, seed=3 + learned.seed)
    for index, item in enumerate(items):
        item["label"] = (index // 2) % 2
        item["grid"] = 0.3 * item["grid"] + (2 * item["label"] - 1)
    batch = model.collate(items)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3.0e-3)

    def loss() -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch["labels"])

    with torch.no_grad():
        before = loss().item()
    model.train()
    for _ in range(25):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        learned.check("loss after / before", loss().item() / before, 0.5, at_least=False)


def test_real_minilm_loads():
    """The demo's text encoder, the packaged all-MiniLM-L6-v2, behind MMBT: 384-d, pooled to one logit."""
    model = MMBT.build(MMBTConfig(), BuildContext(feature_meta={"grid": {"dim": GRID_DIM}})).eval()
    assert model.bert.config.hidden_size == 384 and model.bert.config.num_hidden_layers == 6
    batch = model.collate(make_items())
    assert batch["image_features"].shape == (2, 9, GRID_DIM)
    assert torch.isfinite(model(batch)).all()


def test_benchmark_full_path_on_tiny_sizes():
    path = Path(__file__).parents[1] / "benchmarks" / "multimodal_transformers.py"
    spec = importlib.util.spec_from_file_location("multimodal_transformers", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    rows = benchmark.run(full=True, tiny=True, device="cpu", steps=1, batch_size=4, feature_dim=16)
    assert [row["model"] for row in rows] == ["mmbt", "visualbert"]
    assert all(row["samples_per_s"] > 0 for row in rows)
