"""The meme classifier on four image-text-to-text architectures: LLaVA-1.5, LLaVA-NeXT, Qwen2-VL and Idefics3,
as tiny random checkpoints with their published chat templates and processor settings
(tests/helpers/lmm_architectures.py), loaded through `AutoModelForImageTextToText` and `AutoProcessor`."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from lmm_architectures import ARCHITECTURES, BUILDERS, EXPECTED_PROMPTS  # noqa: E402

from hatememes.models.lmm import (  # noqa: E402
    DEFAULT_QUESTION,
    LMMLoRA,
    LMMLoRAConfig,
    LMMZeroShot,
    LMMZeroShotConfig,
    answer_token_ids,
    collate_prompts,
    load_processor,
    pad_to_square,
    prompt_text,
    yes_no_logits,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
MAX_PIXELS = {"qwen2-vl": 112 * 112}  # Qwen2-VL's area bound (its processor's own is 28 * 28 * 1280)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def checkpoint(request, tmp_path_factory) -> tuple[str, Path]:
    torch.manual_seed(0)
    return request.param, BUILDERS[request.param](tmp_path_factory.mktemp(request.param))


def config(name: str, folder: Path, cls=LMMZeroShotConfig, **overrides):
    return cls(base=str(folder), dtype="float32", max_pixels=MAX_PIXELS.get(name, 0), **overrides)


def memes(n: int = 3, seed: int = 0) -> list[dict]:
    """Memes of several shapes (square, wide, tall), so that padding and tiling differ between them."""
    rng = np.random.default_rng(seed)
    shapes = [(64, 64), (48, 96), (96, 40)]
    return [{"id": k, "image": Image.fromarray(rng.integers(0, 255, (*shapes[k % 3], 3), dtype=np.uint8)),
             "text": f"meme number {k}", "label": k % 2} for k in range(n)]


def test_the_prompt_is_the_architectures_chat_template(checkpoint):
    name, folder = checkpoint
    processor = load_processor(folder, max_pixels=MAX_PIXELS.get(name, 0))
    question = DEFAULT_QUESTION.format(text="look at {this}")  # braces in a meme's text are text
    assert prompt_text(processor, DEFAULT_QUESTION, "look at {this}") == EXPECTED_PROMPTS[name].format(
        question=question)
    batch = collate_prompts(processor, config(name, folder), memes())
    tokenizer = processor.tokenizer
    image_token = getattr(processor, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
        getattr(processor, "image_token", "<image>"))
    assert (batch["input_ids"] == image_token).sum(1).min() > 0  # every prompt holds its image's tokens
    assert tokenizer.padding_side == "left" and (batch["attention_mask"][:, -1] == 1).all()
    if tokenizer.bos_token_id is not None:  # one BOS a prompt: the template's or the tokenizer's, not both
        assert ((batch["input_ids"] == tokenizer.bos_token_id).sum(1) == 1).all()


def test_the_answers_are_single_tokens_after_the_template(checkpoint):
    name, folder = checkpoint
    processor = load_processor(folder, max_pixels=MAX_PIXELS.get(name, 0))
    yes, no = answer_token_ids(processor, name)
    assert [processor.tokenizer.decode([token]).strip() for token in (yes, no)] == ["Yes", "No"]
    with pytest.raises(ValueError, match=f"{name}: the answer 'Maybe later' is not one token"):
        answer_token_ids(processor, name, answers=("Yes", "Maybe later"))


def test_zero_shot_scores_p_yes_batched_as_one_at_a_time(checkpoint):
    """P(Yes) in (0, 1), and the left-padded batch scores each meme as it scores alone (Qwen2-VL's M-RoPE
    positions and LLaVA-NeXT's tiles included)."""
    name, folder = checkpoint
    zero_shot = LMMZeroShot.build(config(name, folder, batch_size=3))
    items = memes()
    batched = zero_shot.predict_proba(items)
    alone = np.concatenate([zero_shot.predict_proba([item]) for item in items])
    assert batched.shape == (3,) and np.all((batched > 0) & (batched < 1))
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_lora_adapts_only_the_language_models_projections(checkpoint):
    name, folder = checkpoint
    model = LMMLoRA.build(config(name, folder, LMMLoRAConfig))
    trainable = [key for key, parameter in model.named_parameters() if parameter.requires_grad]
    decoder = model.model.get_base_model().get_decoder()
    in_decoder = {id(parameter) for parameter in decoder.parameters()}
    assert trainable and all("lora_" in key for key in trainable)
    assert all(id(parameter) in in_decoder for parameter in model.parameters() if parameter.requires_grad)
    layers = decoder.config.num_hidden_layers
    assert len(trainable) == layers * 7 * 2  # q, k, v, o, gate, up, down: A and B each


def test_saved_adapters_reload_to_identical_predictions(checkpoint, tmp_path):
    name, folder = checkpoint
    torch.manual_seed(1)
    model = LMMLoRA.build(config(name, folder, LMMLoRAConfig, lora_dropout=0.0, classifier_head=True))
    with torch.no_grad():
        for key, parameter in model.named_parameters():
            if "lora_B" in key:
                parameter.normal_(0, 0.2)  # LoRA starts as the identity: make the adapters matter
    model.eval()
    batch = model.collate(memes())
    with torch.no_grad():
        before, answers = model(batch), yes_no_logits(model.model, batch, model.answer_ids)
    model.save_pretrained(tmp_path / "adapters")
    again = LMMLoRA.from_pretrained(tmp_path / "adapters").eval()
    with torch.no_grad():
        after, answers_after = again(again.collate(memes())), yes_no_logits(again.model, batch, again.answer_ids)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    torch.testing.assert_close(answers_after, answers, rtol=0, atol=1e-6)
    assert not (tmp_path / "adapters" / "model.safetensors").exists()  # the adapters, not the base


def test_max_pixels_bounds_qwen2_vls_image_tokens_and_is_refused_elsewhere(tmp_path):
    qwen = BUILDERS["qwen2-vl"](tmp_path / "qwen")
    counts, large = [], [{**memes(1)[0], "image": Image.new("RGB", (300, 200), (90, 20, 200))}]
    for bound in (56 * 56, 112 * 112):
        processor = load_processor(qwen, max_pixels=bound)
        batch = collate_prompts(processor, LMMZeroShotConfig(base=str(qwen), max_pixels=bound), large)
        counts.append(int((batch["input_ids"] == processor.image_token_id).sum()))
        assert counts[-1] <= bound / (28 * 28)  # one token per merged 28 x 28 patch
    assert counts[0] < counts[1]
    llava = BUILDERS["llava-1.5"](tmp_path / "llava")
    with pytest.raises(ValueError, match="has no area bound; set max_pixels: 0"):
        load_processor(llava, max_pixels=112 * 112)


def test_pad_to_square_is_llavas_expand2square():
    wide = Image.new("RGB", (60, 20), (255, 0, 0))
    square = pad_to_square(wide, (0.5, 0.25, 0.0))
    assert square.size == (60, 60)
    assert square.getpixel((0, 0)) == (127, 63, 0) and square.getpixel((30, 30)) == (255, 0, 0)
    assert square.getpixel((30, 19)) == (127, 63, 0) and square.getpixel((30, 20)) == (255, 0, 0)  # centred
    assert pad_to_square(square, (0.5, 0.5, 0.5)) is square


def test_a_processor_without_a_chat_template_is_a_clear_error(tmp_path):
    folder = BUILDERS["llava-1.5"](tmp_path / "llava")
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    (folder / "chat_template.json").unlink(missing_ok=True)
    processor_config = folder / "processor_config.json"  # where other transformers versions keep it
    if processor_config.exists():
        record = json.loads(processor_config.read_text())
        record.pop("chat_template", None)
        processor_config.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="has no chat template"):
        load_processor(folder)


@pytest.mark.parametrize("question, problem", [
    ("Is it hateful?", "must hold '{text}' once"),
    ('{text} and again "{text}"', "must hold '{text}' once"),
    ('<image> "{text}": hateful?', "must not hold '<image>'"),
])
def test_a_question_that_cannot_quote_the_meme_is_refused_when_read(question, problem):
    with pytest.raises(ValueError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        LMMZeroShotConfig(question=question)
    with pytest.raises(ValueError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        dataclasses.replace(LMMLoRAConfig(), question=question)


def test_the_transcribed_idefics3_template_renders_transformers_own_expected_conversation(tmp_path):
    """The check that transformers' tests/models/idefics3/test_processing_idefics3.py makes of the published
    template (its `test_apply_chat_template`), made of ours: a transcription error would change the text."""
    processor = load_processor(BUILDERS["idefics3"](tmp_path / "idefics3"))
    answer = ("The first image shows the statue of Liberty in New York. The second image picture depicts Idefix, "
              "the dog of Obelix in Asterix and Obelix.")
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "What do these images show?"}, {"type": "image"},
                                     {"type": "image"}, "What do these images show?"]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        {"role": "user", "content": [{"type": "text", "text": "And who is that?"}]},
    ]
    assert processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False) == (
        "<|begin_of_text|>User: What do these images show?<image><image><end_of_utterance>\n"
        f"Assistant: {answer}<end_of_utterance>\n"
        "User: And who is that?<end_of_utterance>\n"
        "Assistant:")
