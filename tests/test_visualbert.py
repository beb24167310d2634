"""VisualBERT: inputs, BERT -> VisualBERT weight mapping and text-only parity, direct loading, save/reload, training."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import BertModel

from hatememes.models import BuildContext
from hatememes.models.visualbert import VisualBert, VisualBertConfig

REGION_DIM, NUM_BOXES = 8, 5
TEXTS = ["a red star", "look how many people love you on this fine day"]
MAPPED_VISUAL = {"visual_token_type_embeddings": "token_type_embeddings",
                 "visual_position_embeddings": "position_embeddings"}


# the layers VisualBERT adds to its encoder: the region projection and MMF's classifier (head transform + linear)
HEAD_KEYS = {f"{layer}.{p}" for layer in ("region_projection", "classifier.0.dense", "classifier.0.LayerNorm",
                                          "classifier.1") for p in ("weight", "bias")}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def build(init, tokenizer, **overrides) -> VisualBert:
    meta = {"regions": {"dim": REGION_DIM, "num_boxes": NUM_BOXES}}
    torch.manual_seed(1)
    config = VisualBertConfig(init=str(init), tokenizer=str(tokenizer), **overrides)
    return VisualBert.build(config, BuildContext(feature_meta=meta)).eval()


def make_items(count: int = 2, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [{"id": i, "text": TEXTS[i % len(TEXTS)], "label": i % 2,
             "regions": torch.randn(NUM_BOXES, REGION_DIM, generator=generator),
             "boxes": torch.rand(NUM_BOXES, 6, generator=generator)} for i in range(count)]


def test_inputs(tiny_bert_dir):
    model = build(tiny_bert_dir, tiny_bert_dir)
    batch = model.collate(make_items())
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    assert input_ids[:, 0].eq(model.tokenizer.cls_token_id).all()
    assert input_ids[0, mask[0].sum() - 1] == model.tokenizer.sep_token_id and mask[0].sum() < mask[1].sum()
    assert torch.equal(batch["token_type_ids"], torch.zeros_like(input_ids))
    assert torch.equal(batch["visual_token_type_ids"], torch.ones(2, NUM_BOXES, dtype=torch.long))
    assert torch.equal(batch["visual_attention_mask"], torch.ones(2, NUM_BOXES, dtype=torch.long))
    assert batch["regions"].shape == (2, NUM_BOXES, REGION_DIM) and batch["boxes"].shape == (2, NUM_BOXES, 6)
    assert torch.equal(batch["ids"], torch.tensor([0, 1])) and torch.equal(batch["labels"], torch.tensor([0.0, 1.0]))
    assert model.encoder.config.visual_embedding_dim == REGION_DIM
    assert model(batch).shape == (2,)


def test_weights_mapped_from_bert(tiny_bert_dir):
    model = build(tiny_bert_dir, tiny_bert_dir)
    bert_state = BertModel.from_pretrained(tiny_bert_dir).state_dict()
    state = model.encoder.state_dict()
    for key, value in bert_state.items():
        assert torch.equal(state[key], value), key
    for visual, text in MAPPED_VISUAL.items():
        assert torch.equal(state[f"embeddings.{visual}.weight"], bert_state[f"embeddings.{text}.weight"])
    new_encoder_keys = {"encoder.embeddings.visual_projection.weight", "encoder.embeddings.visual_projection.bias"}
    heads = HEAD_KEYS
    assert set(model.new_keys) == new_encoder_keys | heads
    assert set(model.loaded_keys) == set(model.state_dict()) - set(model.new_keys)
    # region features pass to VisualBERT's projection unchanged at first; the box columns start at zero
    torch.testing.assert_close(model.region_projection.weight, torch.eye(REGION_DIM, REGION_DIM + 6))


def test_text_only_equals_bert(tiny_bert_dir):
    """No visual tokens, or all of them masked: VisualBERT's text states and pooled output are BERT's."""
    model = build(tiny_bert_dir, tiny_bert_dir)
    bert = BertModel.from_pretrained(tiny_bert_dir).eval()
    batch = model.collate(make_items())
    text = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
    reference = bert(**text)
    valid = batch["attention_mask"].bool()
    text_only = model.encoder(**text)
    torch.testing.assert_close(text_only.last_hidden_state[valid], reference.last_hidden_state[valid])
    torch.testing.assert_close(text_only.pooler_output, reference.pooler_output)
    batch["visual_attention_mask"] = torch.zeros_like(batch["visual_attention_mask"])
    expected_logits = model.classifier(reference.pooler_output).squeeze(-1)
    torch.testing.assert_close(model(batch), expected_logits)
    batch["visual_attention_mask"][:, 0] = 1  # one region seen: the text states move
    visual_embeds = model.region_projection(torch.cat([batch["regions"], batch["boxes"]], dim=-1))
    seen = model.encoder(**text, visual_embeds=visual_embeds, visual_attention_mask=batch["visual_attention_mask"],
                         visual_token_type_ids=batch["visual_token_type_ids"])
    moved = seen.last_hidden_state[:, : valid.shape[1]][valid] - reference.last_hidden_state[valid]
    assert moved.abs().max() > 1e-3  # 100x the tolerance of the equalities above


def test_loads_visualbert_checkpoint(tiny_bert_dir, tmp_path):
    """A VisualBERT pretraining checkpoint (as uclanlp's are saved) loads as it is; only the heads are new."""
    config = transformers.VisualBertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=37, visual_embedding_dim=16, pad_token_id=0)
    torch.manual_seed(2)
    pretrained = transformers.VisualBertForPreTraining(config)
    pretrained.save_pretrained(tmp_path / "visualbert")
    model = build(tmp_path / "visualbert", tiny_bert_dir)
    state = model.encoder.state_dict()
    for key, value in pretrained.visual_bert.state_dict().items():
        assert torch.equal(state[key], value), key
    heads = HEAD_KEYS
    assert set(model.new_keys) == heads
    assert model.region_projection.weight.shape == (16, REGION_DIM + 6)
    assert model(model.collate(make_items())).shape == (2,)


def test_first_layers_of_a_bert_checkpoint(tiny_bert_dir):
    """num_hidden_layers=1 maps the BERT checkpoint's embeddings, first layer and pooler, as the full mapping
    does, and leaves its second layer out."""
    model = build(tiny_bert_dir, tiny_bert_dir, num_hidden_layers=1)
    full = build(tiny_bert_dir, tiny_bert_dir)
    assert len(model.encoder.encoder.layer) == model.encoder.config.num_hidden_layers == 1
    assert len(full.encoder.encoder.layer) == 2  # None, the default: every layer, as published
    full_state = full.encoder.state_dict()
    assert set(model.new_keys) == set(full.new_keys)
    assert set(model.loaded_keys) == {key for key in full.loaded_keys if ".layer.1." not in key}
    for key in model.loaded_keys:
        name = key.removeprefix("encoder.")
        assert torch.equal(model.encoder.state_dict()[name], full_state[name]), key
    full.encoder.encoder.layer = full.encoder.encoder.layer[:1]
    text = {key: value for key, value in model.collate(make_items()).items()
            if key in ("input_ids", "attention_mask", "token_type_ids")}
    torch.testing.assert_close(model.encoder(**text).pooler_output, full.encoder(**text).pooler_output)


def test_first_layers_of_a_visualbert_checkpoint(tiny_bert_dir, tmp_path):
    config = transformers.VisualBertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=37, visual_embedding_dim=16, pad_token_id=0)
    transformers.VisualBertForPreTraining(config).save_pretrained(tmp_path / "visualbert")
    model = build(tmp_path / "visualbert", tiny_bert_dir, num_hidden_layers=1)
    full = build(tmp_path / "visualbert", tiny_bert_dir)
    assert len(model.encoder.encoder.layer) == 1 and set(model.new_keys) == HEAD_KEYS
    full_state = full.encoder.state_dict()
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, full_state[key]), key
    model.save_pretrained(tmp_path / "trained")
    reloaded = VisualBert.from_pretrained(tmp_path / "trained").eval()
    assert len(reloaded.encoder.encoder.layer) == 1
    assert torch.equal(reloaded(reloaded.collate(make_items())), model(model.collate(make_items())))


@pytest.mark.parametrize("count", [0, 3])
def test_num_hidden_layers_checked(tiny_bert_dir, count):
    with pytest.raises(ValueError, match=rf"train\.visualbert\.model\.num_hidden_layers = {count}, but .* has 2"):
        build(tiny_bert_dir, tiny_bert_dir, num_hidden_layers=count)


@pytest.mark.parametrize("image_layer_norm", [False, True])
def test_save_reload_same_probs(tiny_bert_dir, tmp_path, image_layer_norm):
    model = build(tiny_bert_dir, tiny_bert_dir, image_layer_norm=image_layer_norm)
    if image_layer_norm:
        assert {"region_norm.weight", "region_norm.bias"} <= set(model.new_keys)
    probs = torch.sigmoid(model(model.collate(make_items(3))))
    model.save_pretrained(tmp_path / "visualbert")
    reloaded = VisualBert.from_pretrained(tmp_path / "visualbert").eval()
    assert reloaded.config == model.config and reloaded.region_dim == REGION_DIM
    assert torch.equal(torch.sigmoid(reloaded(reloaded.collate(make_items(3)))), probs)


def test_mean_pooling(tiny_bert_dir, tmp_path):
    """pooling: mean classifies the mean of the final states over the caption's tokens and the regions, and
    the encoder has no pooler, which would get no gradient."""
    model = build(tiny_bert_dir, tiny_bert_dir, pooling="mean")
    assert model.encoder.pooler is None and "encoder.pooler.dense.weight" not in model.loaded_keys + model.new_keys
    batch = model.collate(make_items(3))
    visual_embeds = model.region_norm(model.region_projection(torch.cat([batch["regions"], batch["boxes"]], -1)))
    hidden = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"], visual_embeds=visual_embeds,
                           visual_attention_mask=batch["visual_attention_mask"],
                           visual_token_type_ids=batch["visual_token_type_ids"]).last_hidden_state  # (B, T+K, H)
    mask = torch.cat([batch["attention_mask"], batch["visual_attention_mask"]], dim=1).bool()
    rows = [hidden[row, mask[row]].mean(0) for row in range(3)]
    torch.testing.assert_close(model(batch), model.classifier(torch.stack(rows)).squeeze(-1))
    model.save_pretrained(tmp_path / "visualbert")
    reloaded = VisualBert.from_pretrained(tmp_path / "visualbert").eval()
    assert torch.equal(reloaded(reloaded.collate(make_items(3))), model(batch))


def test_first_regions(tiny_bert_dir):
    model = build(tiny_bert_dir, tiny_bert_dir, num_regions=2)
    items = make_items()
    batch = model.collate(items)
    torch.testing.assert_close(batch["regions"], torch.stack([item["regions"][:2] for item in items]))
    torch.testing.assert_close(batch["boxes"], torch.stack([item["boxes"][:2] for item in items]))
    assert batch["visual_attention_mask"].shape == batch["visual_token_type_ids"].shape == (2, 2)
    assert model(batch).shape == (2,)
    for count in (0, NUM_BOXES + 1):
        with pytest.raises(ValueError, match=rf"train\.visualbert\.model\.num_regions = {count}, but .* 5 boxes"):
            build(tiny_bert_dir, tiny_bert_dir, num_regions=count)


def test_frozen_word_embeddings(tiny_bert_dir):
    """freeze_word_embeddings: a training step leaves the word table as loaded and trains the rest."""
    model = build(tiny_bert_dir, tiny_bert_dir, freeze_word_embeddings=True).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert not model.encoder.get_input_embeddings().weight.requires_grad
    assert len(trainable) == len(list(model.parameters())) - 1
    before = {name: value.clone() for name, value in model.state_dict().items()}
    optimizer = torch.optim.AdamW(trainable, lr=1.0e-2)
    batch = model.collate(make_items(4))
    torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch["labels"]).backward()
    optimizer.step()
    after = model.state_dict()
    words, layer = "encoder.embeddings.word_embeddings.weight", "encoder.encoder.layer.0.output.dense.weight"
    assert torch.equal(after[words], before[words]) and not torch.equal(after[layer], before[layer])
    assert build(tiny_bert_dir, tiny_bert_dir).encoder.get_input_embeddings().weight.requires_grad  # the default


def test_training_reduces_loss(tiny_bert_dir, learned):
    """The label is the sign of the regions: only the visual tokens can tell. The word table is frozen for speed."""
    model = build(tiny_bert_dir, tiny_bert_dir, dropout=0.0)
    model.encoder.get_input_embeddings().requires_grad_(False)
    torch.manual_seed(learned.seed)
    items = make_items(16, seed=3 + learned.seed)
    for index, item in enumerate(items):
        item["label"] = (index // 2) % 2
        item["regions"] = 0.3 * item["regions"] + (2 * item["label"] - 1)
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


def test_real_minilm_mapped():
    """The demo's VisualBERT: the packaged all-MiniLM-L6-v2 mapped in, every BERT tensor used."""
    model = VisualBert.build(VisualBertConfig(), BuildContext(feature_meta={"regions": {"dim": REGION_DIM}})).eval()
    assert model.encoder.config.hidden_size == 384 and model.encoder.config.num_hidden_layers == 6
    assert len(model.loaded_keys) == len(model.encoder.state_dict()) - 2  # all but visual_projection
    assert torch.isfinite(model(model.collate(make_items()))).all()
