"""The LLaVA-1.5 presets of the LMM classifiers (`llava_zeroshot`, `llava_lora`: hatememes.models.lmm) on a tiny
base pretrained here on a tiny corpus of PIL shapes (the other architectures: tests/test_lmm.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score
from transformers import LlavaForConditionalGeneration

from hatememes.models import BuildContext, lmm
from hatememes.models.llava_tiny import (
    MEME_PROMPT,
    TinyLlavaConfig,
    build_tiny_base,
    forward_from_features,
    tower_features,
)
from hatememes.models.lmm import (
    LMMLoRA,
    LMMLoRAConfig,
    LMMZeroShot,
    LMMZeroShotConfig,
    add_lora,
    answer_token_ids,
    llava_15_7b_config,
    load_processor,
    merge,
    yes_no_logits,
)
from hatememes.pretrained import PretrainedLoadError
from hatememes.training import LoopParams, load_best, predict, train

COLORS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 80, 230), "yellow": (240, 210, 20)}
NAMES = list(COLORS)
TINY = TinyLlavaConfig(hidden_size=32, num_heads=2, vision_epochs=2, epochs=2, batch_size=16)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def scene(rnd: random.Random, color: str) -> tuple[Image.Image, str]:
    image = Image.new("RGB", (32, 32), tuple(rnd.randint(100, 160) for _ in range(3)))
    x, y, r = rnd.randint(2, 14), rnd.randint(2, 14), rnd.randint(10, 16)
    shape = rnd.choice(("square", "circle"))
    draw = ImageDraw.Draw(image)
    (draw.rectangle if shape == "square" else draw.ellipse)([x, y, x + r, y + r], fill=COLORS[color])
    return image, shape


def write_corpus(root, n: int, seed: int = 0):
    """The generator's corpus format: pairs.jsonl + images/; the object named is the colour drawn."""
    rnd = random.Random(seed)
    (root / "images").mkdir(parents=True)
    lines = []
    for k in range(n):
        color = rnd.choice(NAMES)
        image, shape = scene(rnd, color)
        image.save(root / f"images/{k:06d}.png")
        record = {"image": f"images/{k:06d}.png", "text": f"a {color} {shape}", "object": color, "color": color,
                  "split": "train" if k >= n // 10 else "heldout"}
        lines.append(json.dumps(record))
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return root


def memes(n: int, seed: int) -> list[dict]:
    """Hateful iff (text colour - image colour) mod 4 in {1, 2}: neither modality alone predicts it."""
    rnd = random.Random(seed)
    items = []
    for k in range(n):
        t, i = rnd.randrange(4), rnd.randrange(4)
        image, _ = scene(rnd, NAMES[i])
        text = f"when the {NAMES[t]} one arrives" if k % 2 else f"look at this {NAMES[t]} thing, so nice"
        items.append({"id": k, "image": image, "text": text, "label": int((t - i) % 4 in (1, 2))})
    return items


class ItemList(list):
    """In-memory memes with the two attributes the training loop reads from `MemeItems`."""

    @property
    def ids(self) -> list[int]:
        return [item["id"] for item in self]

    @property
    def labels(self) -> list[int]:
        return [item["label"] for item in self]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    corpus = write_corpus(tmp_path_factory.mktemp("corpus"), 120)
    return build_tiny_base(corpus, tmp_path_factory.mktemp("base"), TINY)


def lora(base, seed: int = 0, **overrides) -> LMMLoRA:
    torch.manual_seed(seed)
    return LMMLoRA.build(LMMLoRAConfig(base=str(base), dtype="float32", lora_dropout=0.0, **overrides))


def perturb_adapters(model: LMMLoRA) -> None:
    """LoRA starts as the identity (B = 0); give B values so the adapters change the scores."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.2)


def test_tiny_base_loads_as_a_llava_checkpoint(base):
    model = LlavaForConditionalGeneration.from_pretrained(base)
    log = json.loads((base / "pretrain_log.json").read_text())
    assert model.config.text_config.hidden_size == TINY.hidden_size
    assert log["epoch_loss"][-1] < log["epoch_loss"][0]  # the alignment stage learns
    assert log["vision_epoch_loss"][-1] < log["vision_epoch_loss"][0]
    assert 0 <= log["heldout_match_auroc"] <= 1
    assert load_processor(base).tokenizer.image_token == "<image>"


def test_prompt_holds_one_image_expansion(base):
    model = LlavaForConditionalGeneration.from_pretrained(base)
    processor = load_processor(base)
    batch = lmm.collate_prompts(processor, LMMZeroShotConfig(base=str(base)), memes(3, 0))
    patches = (TINY.image_size // TINY.patch_size) ** 2  # CLS dropped: vision_feature_select_strategy "default"
    is_image = batch["input_ids"] == model.config.image_token_id  # (B, T)
    assert is_image.sum(1).tolist() == [patches] * 3 == [model.config.image_seq_length] * 3
    for row in is_image:  # one contiguous run of image tokens per prompt
        positions = row.nonzero().flatten()
        assert (positions.diff() == 1).all()
    assert batch["ids"].tolist() == [0, 1, 2]


def test_answer_ids_come_from_the_tokenizer_after_llavas_template(base):
    processor = load_processor(base)
    yes, no = answer_token_ids(processor)
    assert processor.tokenizer.convert_ids_to_tokens([yes, no]) == ["ĠYes", "ĠNo"]  # byte-level BPE: the space is in
    # the prompt the LLaVA-1.5 template writes is the one the tiny base was pretrained in
    assert lmm.prompt_text(processor, lmm.DEFAULT_QUESTION, "hi") == MEME_PROMPT.format(text="hi")
    assert lmm.prompt_text(processor, lmm.DEFAULT_QUESTION, "hi") == (
        'USER: <image>\nThis is an image with: "hi" written on it. Is it hateful? Answer yes or no. ASSISTANT:')


def full_forward_probs(model: LMMLoRA | LMMZeroShot, items: list[dict]) -> torch.Tensor:
    """Reference: each meme alone (no padding), every position's logits, softmax over [Yes, No] at the end."""
    probs = []
    for item in items:
        batch = lmm.collate_prompts(model.processor, model.config, [item])
        logits = model.model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"]).logits  # (1, T, V)
        probs.append(logits[0, -1, list(model.answer_ids)].softmax(-1)[0])
    return torch.stack(probs)


def test_score_is_p_yes_at_the_last_position_with_left_padding(base):
    model = lora(base)
    perturb_adapters(model)
    model.eval()
    items = memes(4, 1)  # two caption lengths: the shorter ones are left-padded in the batch
    batch = model.collate(items)
    assert (batch["attention_mask"][:, 0] == 0).any() and (batch["attention_mask"][:, -1] == 1).all()
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(model(batch)), full_forward_probs(model, items), atol=1e-5, rtol=0)


def test_bce_on_the_logits_is_cross_entropy_of_the_answer_restricted_to_yes_no(base):
    model = lora(base)
    perturb_adapters(model)
    batch = model.collate(memes(6, 2))
    outputs = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          pixel_values=batch["pixel_values"])
    answer_logits = outputs.logits[:, -1, list(model.answer_ids)]  # (B, 2): [Yes, No]
    targets = (1 - batch["labels"]).long()  # hateful -> "Yes" (index 0)
    bce = F.binary_cross_entropy_with_logits(model(batch), batch["labels"])
    torch.testing.assert_close(bce, F.cross_entropy(answer_logits, targets), atol=1e-5, rtol=0)


def test_zero_shot_and_lora_score_with_the_same_function(base, monkeypatch):
    calls = []

    def spy(model, batch, answer_ids):
        calls.append(type(model).__name__)
        return yes_no_logits(model, batch, answer_ids)

    monkeypatch.setattr(lmm, "yes_no_logits", spy)
    items = memes(5, 3)
    zero_shot = LMMZeroShot.build(LMMZeroShotConfig(base=str(base), dtype="float32", batch_size=2))
    model = lora(base).eval()  # fresh adapters are the identity: the same model as the base
    with torch.no_grad():
        lora_probs = torch.sigmoid(model(model.collate(items))).numpy()
    np.testing.assert_allclose(zero_shot.predict_proba(items), lora_probs, atol=1e-6)
    assert calls == ["PeftModel"] + ["LlavaForConditionalGeneration"] * 3  # LoRA: 1 batch; zero-shot: 3


class LlavaOutputs(list):
    """Every output of a LlavaForConditionalGeneration forward while in use (a global forward hook)."""

    def __enter__(self):
        def record(module, args, output):
            if isinstance(module, LlavaForConditionalGeneration):
                self.append(output)

        self.hook = torch.nn.modules.module.register_module_forward_hook(record)
        return self

    def __exit__(self, *exc):
        self.hook.remove()


def test_scoring_and_training_keep_no_kv_cache_and_score_as_with_one(base):
    """LLaVA-7B's cache at 640 tokens and batch 256 would be ~86 GB: the scorer asks for none (and the
    vocabulary projection at the last position only); the scores are those of a forward with the cache."""
    model = lora(base)
    perturb_adapters(model)
    batch = model.collate(memes(4, 1))
    with LlavaOutputs() as outputs:
        model.train()
        trained_logits = model(batch)  # a training step's forward
        model.eval()
        with torch.no_grad():
            logits = model(batch)
        zero_shot = LMMZeroShot.build(LMMZeroShotConfig(base=str(base), dtype="float32", batch_size=2))
        zero_shot.predict_proba(memes(3, 2))
    assert len(outputs) == 1 + 1 + 2 and all(output.cache is None for output in outputs)
    assert all(output.logits.shape[1] == 1 for output in outputs)  # logits_to_keep=1
    assert trained_logits.requires_grad
    with torch.no_grad():  # the old way: the default forward, which returns a cache, and every position's logits
        reference = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                pixel_values=batch["pixel_values"], use_cache=True)
    assert reference.cache is not None  # so the flag is what makes the difference
    yes, no = model.answer_ids
    torch.testing.assert_close(logits, reference.logits[:, -1, yes] - reference.logits[:, -1, no], atol=1e-5, rtol=0)


def test_alignment_forward_from_tower_features_is_llavas_forward(base):
    """Stage 1 runs the frozen tower once and starts each step at its features: the same logits as LLaVA's
    forward from the pixels, left padding included."""
    model = LlavaForConditionalGeneration.from_pretrained(base).eval()
    batch = lmm.collate_prompts(load_processor(base), LMMZeroShotConfig(base=str(base)), memes(4, 1))
    assert (batch["attention_mask"][:, 0] == 0).any()
    with torch.no_grad():
        reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          pixel_values=batch["pixel_values"], logits_to_keep=3, output_hidden_states=True)
        outputs = forward_from_features(model, batch["input_ids"], batch["attention_mask"],
                                        tower_features(model, batch["pixel_values"]), logits_to_keep=3)
    torch.testing.assert_close(outputs.logits, reference.logits, atol=1e-6, rtol=0)  # (B, 3, V)
    torch.testing.assert_close(outputs.hidden_states[-1], reference.hidden_states[-1], atol=1e-6, rtol=0)


def test_tiny_base_pretrains_and_probes_without_a_kv_cache(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 30, seed=1)
    config = dataclasses.replace(TINY, vision_epochs=1, epochs=1)
    with LlavaOutputs() as outputs:
        build_tiny_base(corpus, tmp_path / "base", config)  # training, shape accuracy and the answer probe
    assert len(outputs) > 3 and all(output.cache is None for output in outputs)


def test_zero_shot_train_step_loads_no_weights_and_its_folder_scores_as_before(base, tmp_path, monkeypatch):
    config = LMMZeroShotConfig(base=str(base), dtype="float32", batch_size=2)
    items = memes(3, 7)
    before = LMMZeroShot(config, load_processor(base), lmm.load_base(str(base), "float32")).predict_proba(items)

    def refuse(*args, **kwargs):
        raise AssertionError("the train step of a zero-shot model loaded the base's weights")

    monkeypatch.setattr(lmm, "load_base", refuse)
    monkeypatch.setattr(LlavaForConditionalGeneration, "from_pretrained", refuse)
    zero_shot = LMMZeroShot.build(config)  # what train@llava_zeroshot runs: build, fit, save
    zero_shot.fit(memes(4, 8), memes(2, 9))
    zero_shot.save_pretrained(tmp_path)
    assert zero_shot.model is None
    monkeypatch.undo()
    np.testing.assert_array_equal(LMMZeroShot.from_pretrained(tmp_path).predict_proba(items), before)


def test_zero_shot_scoring_names_the_param_of_a_base_without_weights(base, tmp_path):
    processor_only = tmp_path / "processor-only"
    load_processor(base).save_pretrained(processor_only)  # a base whose weights were never downloaded
    zero_shot = LMMZeroShot.build(LMMZeroShotConfig(base=str(processor_only), dtype="float32"),
                                  BuildContext(name="llava_zeroshot"))  # as train.py builds it
    zero_shot.save_pretrained(tmp_path / "model")
    with pytest.raises(PretrainedLoadError, match=r"^train\.llava_zeroshot\.model\.base = .* cannot be loaded"):
        LMMZeroShot.from_pretrained(tmp_path / "model")


def test_lora_adapts_only_the_language_model(base):
    model = lora(base)
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert trainable and all(".language_model." in name and ".lora_" in name for name in trainable)
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[1] for name in trainable}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not any("vision_tower" in name or "multi_modal_projector" in name for name in trainable)
    assert any("vision_tower" in name and "q_proj" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("question, problem", [
    ("Is it hateful?", "'{text}' once"),
    ("<image> {text} Is it hateful?", "must not hold '<image>'"),
])
def test_a_question_that_cannot_score_a_meme_is_refused_before_loading(question, problem):
    for classifier, config in ((LMMLoRA, LMMLoRAConfig), (LMMZeroShot, LMMZeroShotConfig)):
        with pytest.raises(ValueError, match=re.escape(problem)):
            classifier.build(config(base="/nonexistent/base", question=question))


def test_best_checkpoint_holds_the_adapters_not_the_frozen_base(base, tmp_path):
    model = lora(base)
    items = ItemList(memes(32, 3))
    result = train(model, items, items, LoopParams(epochs=1, batch_size=16, lr=1.0e-3), tmp_path)
    saved = load_file(tmp_path / "checkpoints" / "best.safetensors")
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert result.best_epoch == 0 and set(saved) == trainable  # LoRA A/B only: no buffers in this model
    before = predict(model, items)[1]
    perturb_adapters(model)
    load_best(Accelerator(), model, tmp_path / "checkpoints")
    np.testing.assert_array_equal(predict(model, items)[1], before)


def test_lora_trains_under_two_percent_of_a_7b_llava():
    with torch.device("meta"):  # the real shapes, nothing allocated
        model = add_lora(LlavaForConditionalGeneration(llava_15_7b_config()), LMMLoRAConfig(lora_r=16))
    total = sum(parameter.numel() for parameter in model.parameters())
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    per_layer = 16 * (4 * (4096 + 4096) + 3 * (4096 + 11008))  # r * (in + out) for q, k, v, o, gate, up, down
    assert trainable == 32 * per_layer
    assert 7.0e9 < total - trainable < 7.1e9  # llava-1.5-7b: 7.06 B
    assert trainable / total < 0.02  # 0.57 %


def test_adapter_save_and_reload_give_identical_probabilities(base, tmp_path):
    model = lora(base)
    perturb_adapters(model)
    model.eval()
    items = memes(4, 4)
    model.save_pretrained(tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors", "lmm_classifier.json",
            "processor_config.json"} <= {path.name for path in tmp_path.iterdir()}
    assert json.loads((tmp_path / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    reloaded = LMMLoRA.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(model.collate(items)), reloaded(reloaded.collate(items)))


def test_merge_bakes_the_adapters_into_a_bf16_base(base, tmp_path):
    model = lora(base)
    perturb_adapters(model)
    model.eval()
    model.save_pretrained(tmp_path / "adapter")
    merged_dir = merge(tmp_path / "adapter", tmp_path / "merged")
    merged = LlavaForConditionalGeneration.from_pretrained(merged_dir)
    assert merged.dtype == torch.bfloat16
    batch = model.collate(memes(4, 5))
    with torch.no_grad():
        expected = model(batch)
        got = yes_no_logits(merged.float(), batch, model.answer_ids)
        unadapted = lora(base).eval()(batch)
    torch.testing.assert_close(got, expected, atol=0.05, rtol=0.05)  # bf16 rounding of the merged weights
    assert not torch.allclose(expected, unadapted, atol=0.05, rtol=0.05)  # the adapters mattered


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_qlora_on_cpu_raises_a_clear_error(base):
    with pytest.raises(RuntimeError, match="QLoRA.*needs a CUDA GPU"):
        lora(base, quantization="4bit")


def test_gradient_checkpointing_gives_the_same_gradients(base):
    grads = []
    for checkpointing in (False, True):
        model = lora(base, gradient_checkpointing=checkpointing)
        perturb_adapters(model)
        batch = model.collate(memes(4, 6))
        F.binary_cross_entropy_with_logits(model(batch), batch["labels"]).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)
    assert grads[0].abs().sum() > 0


def test_zero_shot_fits_nothing_and_reloads_from_its_config(base, tmp_path):
    zero_shot = LMMZeroShot.build(LMMZeroShotConfig(base=str(base), dtype="float32"))
    items = memes(3, 7)
    before = zero_shot.predict_proba(items)
    zero_shot.fit(memes(8, 8), memes(4, 9))
    np.testing.assert_array_equal(zero_shot.predict_proba(items), before)
    zero_shot.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "lmm_classifier.json").read_text())["trained"] is False
    np.testing.assert_array_equal(LMMZeroShot.from_pretrained(tmp_path).predict_proba(items), before)
    assert before.shape == (3,) and ((before > 0) & (before < 1)).all()


def load_script(relative: str):
    """A benchmark or stage script of the repository, imported as a module."""
    path = Path(__file__).parents[1] / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_benchmark():
    return load_script("benchmarks/llava.py")


def test_benchmark_counts_the_7b_parameters_its_flops_use():
    counts = load_benchmark().parameter_counts(llava_15_7b_config(), LMMLoRAConfig(lora_r=16))
    h, m = 4096, 11008
    assert counts["lm"] == 32 * (4 * h * h + 3 * h * m + 2 * h)  # attention, MLP and the two norms per layer
    assert 3.0e8 < counts["vision"] < 3.1e8  # CLIP ViT-L/14-336
    assert counts["lora"] == 39_976_960


def test_benchmark_runs_a_tiny_training_step_on_cpu():
    rows = load_benchmark().main(["--tiny", "--steps", "1", "--batch-size", "2"])
    assert [row["run"] for row in rows] == ["lora"]  # no QLoRA row without CUDA and bitsandbytes
    assert rows[0]["tokens_per_s"] > 0 and rows[0]["seq"] == 16 + 64 and rows[0]["peak_gb"] > 0
    assert rows[0]["estimated_gb"] > 0  # on a GPU, the estimate beside torch.cuda.max_memory_allocated


@pytest.mark.slow
def test_lora_learns_a_pairwise_image_text_rule(tmp_path, learned):
    """The base knows the colours (pretrained here); LoRA alone learns which pairs are hateful."""
    seed = learned.seed
    corpus = write_corpus(tmp_path / "corpus", 600, seed=seed)
    # 8 language-model epochs on 540 pairs: seeds 0-2 pass every check below at >= 0.98; at 4 epochs the match
    # question's held-out AUROC was 0.60-0.65
    base = build_tiny_base(corpus, tmp_path / "base", TinyLlavaConfig(vision_epochs=6, epochs=8, seed=seed))
    log = json.loads((base / "pretrain_log.json").read_text())
    learned.check("held-out match question AUROC", log["heldout_match_auroc"], 0.9)
    # before any LoRA, the meme prompt's answer position already reads both sides of the rule (chance 0.25;
    # 60 held-out pairs)
    learned.check("answer probe: image object", log["answer_probe"]["image_object"], 0.75)
    learned.check("answer probe: text object", log["answer_probe"]["text_object"], 0.75)
    model = lora(base, seed=seed)
    # The recipe, from a sweep over seeds 0-4 (docs/learned-margins.md): a constant lr of 1e-3 for 15 epochs
    # clicked at a seed-dependent epoch and fell back (seed 0: 0.54, 0.99, 0.73, 0.60 at epochs 10/15/20/25),
    # which another CPU's kernels turned into a failure; lr 2e-3 with warmup, a cosine decay and clipping
    # settles for every seed.
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2.0e-3)
    train, test = memes(512, 10 + 2 * seed), memes(256, 11 + 2 * seed)
    epochs, batch_size = 20, 32
    total = epochs * math.ceil(len(train) / batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 24) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    for _ in range(epochs):
        model.train()
        for start in range(0, len(train), batch_size):
            batch = model.collate(train[start : start + batch_size])
            F.binary_cross_entropy_with_logits(model(batch), batch["labels"]).backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(model.collate(test))).numpy()
    learned.check("test AUROC", roc_auc_score([item["label"] for item in test], probs), 0.9)


def load_stage():
    return load_script("pipelines/pretrain_llava.py")


def stage_params(path: Path, enabled: bool) -> Path:
    section = {"enabled": enabled, "threads": 1, "tiny": dataclasses.asdict(TINY)}
    path.write_text(yaml.safe_dump({"profile": "demo", "pretrain_llava": section}))
    return path


def test_pretrain_llava_stage_builds_a_base_the_classifiers_load(tmp_path):
    corpus, out = write_corpus(tmp_path / "corpus", 60), tmp_path / "llava-tiny"
    params = stage_params(tmp_path / "params.yaml", enabled=True)
    assert load_stage().main(["--corpus", str(corpus), "--out", str(out), "--params", str(params)]) == 0
    log = json.loads((out / "pretrain_log.json").read_text())
    assert log["pairs"] == 54 and 0.0 <= log["heldout_match_auroc"] <= 1.0
    assert set(log["answer_probe"]) == {"image_object", "text_object"}
    probs = LMMZeroShot.build(LMMZeroShotConfig(base=str(out), dtype="float32")).predict_proba(memes(4, 5))
    assert probs.shape == (4,) and np.all((probs > 0) & (probs < 1))


def test_pretrain_llava_stage_skips_or_names_the_missing_corpus(tmp_path, capsys):
    stage, out = load_stage(), tmp_path / "llava-tiny"
    skip = stage_params(tmp_path / "skip.yaml", enabled=False)
    assert stage.main(["--corpus", str(tmp_path / "none"), "--out", str(out), "--params", str(skip)]) == 0
    assert json.loads((out / "pretrain_log.json").read_text())["skipped"] is True
    build = stage_params(tmp_path / "build.yaml", enabled=True)
    assert stage.main(["--corpus", str(tmp_path / "none"), "--out", str(out), "--params", str(build)]) == 1
    assert f"{tmp_path / 'none' / 'pairs.jsonl'}: not found" in capsys.readouterr().err


def test_probe_accuracy_is_scikit_learns_logistic_regression():
    """The answer probe's logistic regression, written in torch, against scikit-learn's default one."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from hatememes.models.llava_tiny import probe_accuracy

    generator = torch.Generator().manual_seed(0)
    names = ["circle", "square", "star", "moon"]
    centres = torch.randn(4, 16, generator=generator) * 0.6
    labels = torch.randint(4, (500,), generator=generator)
    x = (centres[labels] + torch.randn(500, 16, generator=generator)) * torch.linspace(0.1, 5, 16) + 3  # (N, 16)
    words = [names[k] for k in labels.tolist()]
    scale = StandardScaler().fit(x[:400].numpy())
    reference = LogisticRegression(max_iter=5000, tol=1e-10).fit(scale.transform(x[:400].numpy()), words[:400])
    expected = reference.score(scale.transform(x[400:].numpy()), words[400:])
    assert 0.5 < expected < 1.0  # neither trivial nor hopeless
    assert probe_accuracy(x[:400], words[:400], x[400:], words[400:]) == pytest.approx(expected, abs=0.011)
    assert probe_accuracy(x[:400], ["star"] * 400, x[400:], words[400:]) is None  # one class: nothing to probe


def test_zero_shot_scoring_halves_its_batch_when_out_of_memory_and_keeps_every_score(base, capsys, monkeypatch):
    """A device that holds one meme a forward pass: scoring at batch 4 retries at 2, then 1 (saying so), and
    gives the scores of an unforced run; at batch 1 it gives up, naming the param."""
    items = memes(5, 11)
    config = LMMZeroShotConfig(base=str(base), dtype="float32", batch_size=4)
    model = lmm.load_base(str(base), "float32")
    param = "train.llava_zeroshot.model.base"  # as train.py builds it
    unforced = LMMZeroShot(config, load_processor(base), model, param).predict_proba(items)
    scorer = lmm.yes_no_logits

    def small_device(model, batch, answer_ids):
        if len(batch["input_ids"]) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB (injected by the test)")
        return scorer(model, batch, answer_ids)

    monkeypatch.setattr(lmm, "yes_no_logits", small_device)
    forced = LMMZeroShot(config, load_processor(base), model, param).predict_proba(items)
    np.testing.assert_allclose(forced, unforced, atol=1e-5)
    out = capsys.readouterr().out
    assert "scoring: out of memory at train.llava_zeroshot.model.batch_size = 4; retrying with 2" in out
    assert "= 2; retrying with 1" in out
    monkeypatch.setattr(lmm, "yes_no_logits", lambda *args: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory (injected)")))
    with pytest.raises(MemoryError, match="train.llava_zeroshot.model.batch_size = 1"):
        LMMZeroShot(dataclasses.replace(config, batch_size=1), load_processor(base), model, param).predict_proba(items)


def test_classifier_head_is_lmm_rgcl_s_first_stage(base, tmp_path):
    """With `classifier_head`, the logits are a linear head's on the last token's final hidden state, and a
    training forward adds the answer token's cross-entropy over the vocabulary: loss = w_head BCE(head) +
    w_lm CE("Yes" / "No"), computed here from the base's own outputs. The head trains and is saved with the
    adapters; the reloaded model scores the same."""
    from hatememes.training import model_outputs

    model = lora(base, classifier_head=True, head_loss_weight=0.7, lm_loss_weight=0.3)
    items = memes(6, 12)
    batch = model.collate(items)
    model.train()
    with torch.no_grad():
        logits, aux_loss, loss_weight = model_outputs(model(batch))
        outputs = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              pixel_values=batch["pixel_values"], output_hidden_states=True, use_cache=False)
    torch.testing.assert_close(logits, model.head(outputs.hidden_states[-1][:, -1]).squeeze(-1))
    answers = torch.tensor([model.answer_ids[0] if item["label"] else model.answer_ids[1] for item in items])
    torch.testing.assert_close(aux_loss, 0.3 * F.cross_entropy(outputs.logits[:, -1].float(), answers))
    assert float(loss_weight) == pytest.approx(0.7)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), logits)  # scoring: the head's logit alone
    head_before = model.head.weight.detach().clone()
    train(model, ItemList(memes(16, 13)), ItemList(memes(8, 14)), LoopParams(epochs=1, batch_size=8, lr=1.0e-2),
          tmp_path / "run")
    assert not torch.equal(model.head.weight, head_before)
    model.eval()
    model.save_pretrained(tmp_path / "saved")
    reloaded = LMMLoRA.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        assert torch.equal(model(batch), reloaded(reloaded.collate(items)))
    assert lora(base).head is None  # off by default: the Yes/No log-odds, as before


def test_lmm_features_are_the_trained_model_s_last_token_hidden_states(base, tmp_path):
    """The lmm_features stage's library: every split's rows are the hidden states `embed` gives on the model's
    own prompt batches, in the split file's order, and they load as `lmm` items for lmm_rgcl."""
    from conftest import write_official
    from hatememes.data.readers import load_items
    from hatememes.data.sources import FetchParams, fetch
    from hatememes.features.lmm import extract_lmm_features
    from hatememes.inference import load_model

    write_official(tmp_path / "raw", {"train": 3, "dev_seen": 2, "test_unseen": 2})
    fetch(FetchParams(source="local", path=str(tmp_path / "raw")), tmp_path / "memes")
    model = lora(base, classifier_head=True)
    perturb_adapters(model)
    model.save_pretrained(tmp_path / "llava_lora")
    (tmp_path / "llava_lora" / "model.json").write_text(json.dumps({"name": "llava_lora"}))
    meta = extract_lmm_features(tmp_path / "llava_lora", tmp_path / "memes", tmp_path / "lmm", batch_size=2)
    assert meta["dim"] == TINY.hidden_size
    reloaded, _ = load_model(tmp_path / "llava_lora")
    for split in ("train", "dev_seen", "test_unseen"):
        items = load_items(tmp_path / "memes", {"lmm": tmp_path / "lmm"}, split, ("image", "lmm"))
        rows = [items[i] for i in range(len(items))]
        with torch.no_grad():
            expected = reloaded.embed(reloaded.collate(rows))
        torch.testing.assert_close(torch.stack([row["lmm"] for row in rows]), expected, atol=1e-5, rtol=1e-5)
