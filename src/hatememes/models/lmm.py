"""Any HuggingFace vision-language model as a hateful-meme classifier: zero-shot, and LoRA/QLoRA-tuned on its
language model. LLaVA-1.5, LLaVA-NeXT, Qwen2-VL, Idefics3/SmolVLM and the other `AutoModelForImageTextToText`
architectures load through the same two calls (`AutoModelForImageTextToText` + `AutoProcessor`).

Follows LMM-RGCL (Mei et al. 2025, "Robust Adaptation of Large Multimodal Models for Retrieval Augmented
Hateful Meme Detection") for the classifier: ask the model whether the meme is hateful, with the image and the
meme's text in the user turn of the model's own chat template, and score it with the answer token,

    P(hateful) = softmax(logits[Yes], logits[No])[Yes] = sigmoid(logit_yes - logit_no)

at the last prompt position (the start of the assistant's turn). `yes_no_logits` computes `logit_yes -
logit_no` and is the one scoring function of both classes here: `LMMZeroShot` (no training) and `LMMLoRA`
(LoRA, Hu et al. 2022; QLoRA, Dettmers et al. 2023, when `quantization: "4bit"`). `LMMLoRA.forward` returns
that log-odds as its logits, so the shared BCE training loop trains it, and since

    BCE(sigmoid(l_yes - l_no), y) = -log softmax([l_yes, l_no])[y == 1 ? Yes : No]

its loss is exactly the cross-entropy of the answer token restricted to {Yes, No} (tests/test_llava.py).

Per architecture, everything is read off the checkpoint rather than written here: the prompt is the
processor's chat template (`prompt_text`); the Yes/No token ids are what the tokenizer makes of the answer the
template renders for the assistant's turn (`answer_token_ids`); LoRA's targets are the projections of the
module `get_decoder()` returns, the language model (`lora_target_pattern`). What the checkpoint cannot say
is a param: `pad_to_square` (LLaVA-1.5 was trained on images padded to a square with the mean colour, where
HF's processor centre-crops) and `max_pixels` (Qwen2-VL's processor keeps an image's aspect ratio and needs a
bound on its pixels, hence on its tokens). `llava_zeroshot` and `llava_lora` are these classes with the
LLaVA-1.5 presets of params.yaml; `lmm_zeroshot` and `lmm_lora` name any other base there (the full profile:
Qwen2-VL-7B-Instruct). The demo's base is the tiny LLaVA that `hatememes.models.llava_tiny` pretrains.
"""

from __future__ import annotations

import importlib.util
import json
import re
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hatememes.models.fine_grained_head import (
    NUM_FINE,
    FineGrainedConfig,
    fine_grained_config,
    fine_outputs,
    fine_targets,
    model_inputs,
)
from hatememes.pretrained import loading

if TYPE_CHECKING:  # imported where they are used: peft and transformers' model modules cost seconds a stage
    from peft import PeftModel
    from PIL import Image
    from transformers import LlavaConfig, PreTrainedModel, ProcessorMixin, Qwen2VLConfig

# the question of LMM-RGCL's prompt (their inference code: 'This is an image with "{text}" written on it.'
# followed by the query); "{text}" is where the meme's text goes
DEFAULT_QUESTION = 'This is an image with: "{text}" written on it. Is it hateful? Answer yes or no.'
ANSWERS = ("Yes", "No")
# LoRA on the language model's attention and MLP projections only (Llama, Mistral, Qwen2 and their kin name
# them so); the vision tower's q/k/v projections are left out by the module path (`lora_target_pattern`)
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# what stays in bf16 under QLoRA: the vision towers and projectors of the architectures named above
# (LLaVA: vision_tower, multi_modal_projector; Qwen2-VL: visual; Idefics3/SmolVLM: vision_model, connector)
NOT_QUANTIZED = ("vision_tower", "multi_modal_projector", "visual", "vision_model", "connector", "lm_head")
CONFIG_FILE = "lmm_classifier.json"
HEAD_FILE = "classifier_head.safetensors"
FINE_HEAD_FILE = "fine_grained_head.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LMMZeroShotConfig:
    base: str = "llava-hf/llava-1.5-7b-hf"  # hub name or local folder of a checkpoint with its processor
    question: str = DEFAULT_QUESTION  # the user turn's text after the image; must hold "{text}"
    pad_to_square: bool = False  # pad each image to a square with the processor's mean colour (LLaVA-1.5's)
    max_pixels: int = 0  # a bound on each image's pixels for processors that resize by area (Qwen2-VL); 0: theirs
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    batch_size: int = 8  # for predict_proba

    def __post_init__(self) -> None:  # params are checked when read, before any base is loaded
        check_question(self.question)
        if self.max_pixels < 0:
            raise ValueError(f"max_pixels {self.max_pixels}: a number of pixels, or 0 for the processor's own")


@dataclass(frozen=True)
class LMMLoRAConfig(LMMZeroShotConfig):
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    quantization: Literal["none", "4bit"] = "none"  # "4bit": QLoRA (bitsandbytes nf4), needs CUDA
    gradient_checkpointing: bool = False
    # LMM-RGCL's first stage: a logistic-regression head on the last token's final hidden state, trained with
    # the language-model loss of the answer token; the head then gives the predictions
    classifier_head: bool = False
    head_loss_weight: float = 1.0  # its BCE (the loop's loss), with classifier_head
    lm_loss_weight: float = 1.0  # cross-entropy of the answer token ("Yes" / "No") over the vocabulary
    # WOAH 2021 labels: a multi-label head on the same last-token hidden state (hatememes.models.fine_grained_head)
    fine_grained: FineGrainedConfig = field(default_factory=FineGrainedConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "fine_grained", fine_grained_config(self.fine_grained))  # from its JSON
        if min(self.head_loss_weight, self.lm_loss_weight) < 0:
            raise ValueError(f"head_loss_weight {self.head_loss_weight} and lm_loss_weight {self.lm_loss_weight} "
                             f"must be >= 0")


def check_question(question: str) -> None:
    """The question must quote the meme's text once; the image and the turns are the chat template's."""
    problems = []
    if question.count("{text}") != 1:
        problems.append(f"it must hold '{{text}}' once, where the meme's text goes (found {question.count('{text}')})")
    if "<image>" in question:
        problems.append("it must not hold '<image>': the chat template places the image")
    if problems:
        raise ValueError(f"question {question!r}: " + "; ".join(problems))


# ----- the architectures of the full profile's presets, no weights (memory estimates, full-size tests)

def llava_15_7b_config() -> LlavaConfig:
    """The architecture of llava-hf/llava-1.5-7b-hf (CLIP ViT-L/14-336 + Vicuna/Llama-2-7B)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
    )
    text = LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=32000, image_seq_length=576,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )


def qwen2_vl_7b_config() -> Qwen2VLConfig:
    """The architecture of Qwen/Qwen2-VL-7B-Instruct (its config.json: a 675M ViT with 2x2 patch merging + a
    Qwen2-7B language model with M-RoPE)."""
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config={"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                     "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                     "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
                     "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}},
        vision_config={"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "mlp_ratio": 4, "num_heads": 16,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
    )


# ----- loading

def check_quantization(quantization: str) -> None:
    if quantization == "none":
        return
    if not torch.cuda.is_available():
        raise RuntimeError(f"quantization {quantization!r} (QLoRA) needs a CUDA GPU; set quantization: none on CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(f"quantization {quantization!r} (QLoRA) needs bitsandbytes: pip install bitsandbytes")


def load_base(base: str, dtype: str, quantization: str = "none", param: str = "model.base") -> PreTrainedModel:
    """The image-text-to-text model in `dtype`, or with its language model in 4-bit nf4 (vision tower and
    projector kept). A base that cannot be loaded raises `PretrainedLoadError` naming `param`."""
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    check_quantization(quantization)
    if quantization == "none":
        with loading(param, base):
            check_local_config(base)
            return AutoModelForImageTextToText.from_pretrained(base, dtype=DTYPES[dtype])
    from accelerate import PartialState

    quantization_config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=list(NOT_QUANTIZED),
    )
    with loading(param, base):
        check_local_config(base)
        return AutoModelForImageTextToText.from_pretrained(
            base, dtype=torch.bfloat16, quantization_config=quantization_config,
            device_map={"": PartialState().device},
        )


def check_local_config(base: str) -> None:
    """A local folder without config.json holds no model (a processor saved alone, weights never downloaded):
    say so as a missing file, which `loading` turns into the param's error (the Auto classes would raise a
    ValueError about a missing model_type instead)."""
    folder = Path(base)
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder / 'config.json'}: not found (the model's weights and config are missing)")


def load_processor(path: str | Path, param: str | None = None, max_pixels: int = 0) -> ProcessorMixin:
    """The checkpoint's processor, with PIL image preprocessing (as the models were trained, and fast on CPU)
    and, with `max_pixels`, that bound on each image's area. With `param` (the setting that named a base), one
    that cannot be loaded raises `PretrainedLoadError`."""
    from transformers import AutoImageProcessor, AutoProcessor

    bound = {"max_pixels": max_pixels} if max_pixels else {}
    with loading(param, str(path)) if param else nullcontext():
        processor = AutoProcessor.from_pretrained(path, **bound)
        # the images' PIL twin (a video processor, as Qwen2-VL's, has none: `backend` cannot go to all of them)
        processor.image_processor = AutoImageProcessor.from_pretrained(path, backend="pil", **bound)
    if max_pixels and processor.image_processor.to_dict() == AutoImageProcessor.from_pretrained(
            path, backend="pil", max_pixels=max_pixels + 1).to_dict():  # another bound changes nothing
        raise ValueError(f"{path}: max_pixels {max_pixels} was given, but its image processor "
                         f"({type(processor.image_processor).__name__}) has no area bound; set max_pixels: 0")
    if getattr(processor, "chat_template", None) is None:
        raise ValueError(f"{path}: its processor has no chat template (chat_template.json or the processor's "
                         f"chat_template), so the meme prompt cannot be written in the model's own format")
    return processor


# ----- the prompt and the answer

def messages(question: str, text: str) -> list[dict]:
    """One user turn: the image, then the question quoting the meme's text."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question.format(text=text)}]}]


def prompt_text(processor: ProcessorMixin, question: str, text: str) -> str:
    """The meme's prompt in the model's chat template, ending where the assistant's answer starts."""
    return processor.apply_chat_template(messages(question, text), add_generation_prompt=True, tokenize=False)


def answer_token_ids(processor: ProcessorMixin, name: str = "the model",
                     answers: tuple[str, str] = ANSWERS) -> tuple[int, int]:
    """The token ids the assistant's answers start with: the chat template renders a conversation that ends in
    the answer, and the answer's first token must be the whole answer ("▁Yes" for Llama, "Yes" for Qwen2)."""
    tokenizer = processor.tokenizer
    conversation = messages(DEFAULT_QUESTION, "a meme")
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = []
    for answer in answers:
        reply = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
        full = processor.apply_chat_template([*conversation, reply], tokenize=False)
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        if not full.startswith(prompt) or full_ids[: len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
            raise ValueError(f"{name}: its chat template's answer {answer!r} does not follow the prompt's tokens "
                             f"(the prompt ends {prompt[-30:]!r}, the answered conversation {full[-40:]!r})")
        first = full_ids[len(prompt_ids)]
        piece = tokenizer.decode([first])
        if piece.strip() != answer or first == tokenizer.unk_token_id:
            pieces = tokenizer.convert_ids_to_tokens(full_ids[len(prompt_ids) : len(prompt_ids) + 4])
            raise ValueError(f"{name}: the answer {answer!r} is not one token of its tokenizer after the prompt "
                             f"(it starts {pieces}); P(Yes) needs single-token answers")
        ids.append(first)
    if ids[0] == ids[1]:
        raise ValueError(f"{name}: the answers {answers} map to the same token {ids[0]}")
    return ids[0], ids[1]


def pad_to_square(image: Image.Image, mean: tuple[float, ...]) -> Image.Image:
    """LLaVA-1.5's `expand2square`: the image centred on a square of the processor's mean colour."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), tuple(int(255 * m) for m in mean))
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def collate_prompts(processor: ProcessorMixin, config: LMMZeroShotConfig, items: list[dict]) -> dict:
    """Processor outputs for the prompted memes (one image each: input_ids, attention_mask, pixel_values and
    whatever else the architecture needs, e.g. Qwen2-VL's image_grid_thw), plus "labels" (B,) and "ids" (B,)."""
    images = [item["image"] for item in items]
    if config.pad_to_square:
        images = [pad_to_square(image, processor.image_processor.image_mean) for image in images]
    texts = [prompt_text(processor, config.question, item["text"]) for item in items]
    bos = processor.tokenizer.bos_token
    # a template that writes the BOS token itself (Idefics3's) must not get a second one from the tokenizer
    special = not (bos and texts[0].startswith(bos))
    batch = dict(processor(images=[[image] for image in images], text=texts, padding=True, return_tensors="pt",
                           add_special_tokens=special))
    batch["labels"] = torch.tensor([float(item["label"]) for item in items])  # (B,), -1 when unknown
    batch["ids"] = torch.tensor([int(item["id"]) for item in items])  # (B,)
    return batch


# ----- the model

def lora_target_pattern(model: PreTrainedModel) -> str:
    """A regular expression (peft matches it against full module names) for the projections inside the
    module `get_decoder()` returns, the language model, so that no vision module is adapted."""
    decoder = model.get_decoder()
    names = {module: name for name, module in model.named_modules()}
    prefix = names.get(decoder)
    vision = [name for name, module in decoder.named_modules() if "vision" in type(module).__name__.lower()]
    if not prefix or vision:
        raise ValueError(f"{type(model).__name__}: its get_decoder() is not the language model alone "
                         f"({type(decoder).__name__}); LoRA's targets cannot be told from the vision tower's")
    found = {name.rsplit(".", 1)[-1] for name, _ in decoder.named_modules()} & set(PROJECTIONS)
    if not found:
        raise ValueError(f"{type(model).__name__}: its language model has none of the projections {PROJECTIONS}")
    return rf"{re.escape(prefix)}\..*\.({'|'.join(sorted(found))})"


def add_lora(model: PreTrainedModel, config: LMMLoRAConfig) -> PeftModel:
    """Freeze the base and add LoRA adapters to the language model's projections."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    target = lora_target_pattern(model)
    checkpointing = {"use_reentrant": False}
    if config.quantization != "none":
        model = prepare_model_for_kbit_training(
            model, config.gradient_checkpointing, gradient_checkpointing_kwargs=checkpointing
        )
    elif config.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=target, bias="none")
    return get_peft_model(model, lora)


def yes_no_logits(model: nn.Module, batch: dict, answer_ids: tuple[int, int]) -> torch.Tensor:
    """logit(P(Yes)) = logit_yes - logit_no at the last position, (B,); the one scoring function.

    One forward, no generation: no KV cache (LLaVA-7B's at 640 tokens and batch 256 is ~86 GB) and the
    vocabulary projection at the last position only."""
    logits = last_position(model, batch)[0]  # (B, V)
    return logits[:, answer_ids[0]] - logits[:, answer_ids[1]]  # (B,)


def last_position(model: nn.Module, batch: dict, hidden: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the vocabulary logits (B, V) in fp32, and with `hidden` the final hidden state (B, H)) at the last
    position, the answer's. The batch is the processor's (left-padded, so that the last position is every
    prompt's answer position) with "labels" and "ids" beside it."""
    inputs = {key: value for key, value in batch.items() if key not in ("labels", "ids")}
    outputs = model(**inputs, use_cache=False, logits_to_keep=1, output_hidden_states=hidden)
    return outputs.logits[:, -1].float(), outputs.hidden_states[-1][:, -1] if hidden else None


def write_config(directory: Path, config, **extra) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    record = {**asdict(config), **extra}
    (Path(directory) / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_config(directory: Path, cls: type):
    record = json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
    return cls(**{key: value for key, value in record.items() if key in cls.__dataclass_fields__})


def base_param(context) -> str:
    """The param that named the base, for errors: `train.<model>.model.base` in a train stage."""
    name = getattr(context, "name", "") if context is not None else ""
    return f"train.{name}.model.base" if name else "model.base"


class LMMZeroShot:
    """The model answering the prompt as it is: P(Yes) with no training (a fitted-style classifier).

    `build` reads the base's processor only: the train stage fits nothing and saves the config, so it never
    needs the weights. `from_pretrained` (predict.py) loads them, as does a first `predict_proba`."""

    Config = LMMZeroShotConfig
    inputs = ("image",)

    def __init__(self, config: LMMZeroShotConfig, processor, model: PreTrainedModel | None = None,
                 param: str = "model.base"):
        self.config, self.processor, self.model = config, processor, model.eval() if model is not None else None
        self.param = param
        processor.tokenizer.padding_side = "left"  # the last position is every prompt's answer position
        self.answer_ids = answer_token_ids(processor, config.base)
        self.trained = False

    @classmethod
    def build(cls, config: LMMZeroShotConfig, context=None) -> LMMZeroShot:
        param = base_param(context)
        return cls(config, load_processor(config.base, param, config.max_pixels), param=param)

    def load_weights(self) -> PreTrainedModel:
        """The base model on this process's device, loaded on first use."""
        if self.model is None:
            from accelerate import PartialState

            base = load_base(self.config.base, self.config.dtype, param=self.param)
            self.model = base.to(PartialState().device).eval()
        return self.model

    def fit(self, train: list[dict], dev: list[dict]) -> None:
        self.trained = False  # zero-shot: the model answers as pretrained, nothing is fitted

    @torch.no_grad()
    def predict_proba(self, items: list[dict]) -> np.ndarray:
        """P(Yes) of each item, `batch_size` at a time; out of memory (one process), the rest at half the batch,
        as the shared loop's scoring does (the memes already scored keep their scores)."""
        from hatememes.training import check_retry_possible, is_out_of_memory

        model, probs, batch_size, start = self.load_weights(), [], self.config.batch_size, 0
        key = self.param.replace(".base", ".batch_size")
        while start < len(items):
            try:
                batch = collate_prompts(self.processor, self.config, items[start : start + batch_size])
                batch = {name: value.to(model.device) for name, value in batch.items()}
                probs.append(torch.sigmoid(yes_no_logits(model, batch, self.answer_ids)).cpu())
            except RuntimeError as error:  # torch.OutOfMemoryError is one
                if not is_out_of_memory(error):
                    raise
                check_retry_possible("scoring", key, batch_size, error)
                if batch_size == 1:
                    raise MemoryError(f"scoring: out of memory at {key} = 1: one meme does not fit") from error
                batch_size //= 2
                print(f"scoring: out of memory at {key} = {batch_size * 2}; retrying with {batch_size}", flush=True)
                continue
            start += len(probs[-1])
        return torch.cat(probs).numpy() if probs else np.zeros(0)

    def save_pretrained(self, directory: str | Path) -> None:
        """The config only (the base is named there, and the param that named it); the weights are the base's."""
        write_config(directory, self.config, trained=self.trained, base_param=self.param)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> LMMZeroShot:
        """The classifier with its base's weights loaded now, before the caller reads any data."""
        config = read_config(directory, LMMZeroShotConfig)
        param = json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8")).get("base_param", "model.base")
        zero_shot = cls(config, load_processor(config.base, param, config.max_pixels), param=param)
        zero_shot.load_weights()
        return zero_shot


class LMMLoRA(nn.Module):
    """The model with LoRA (or QLoRA) adapters on its language model; logits (B,) = logit_yes - logit_no, or
    with `classifier_head` the head's logit on the last token's hidden state (LMM-RGCL's first stage)."""

    Config = LMMLoRAConfig
    inputs = ("image",)

    def __init__(self, config: LMMLoRAConfig, model: PeftModel, processor):
        super().__init__()
        self.config, self.model, self.processor = config, model, processor
        processor.tokenizer.padding_side = "left"
        self.answer_ids = answer_token_ids(processor, config.base)
        hidden_size = model.config.get_text_config().hidden_size
        self.head = nn.Linear(hidden_size, 1) if config.classifier_head else None
        self.fine_head = nn.Linear(hidden_size, NUM_FINE) if config.fine_grained.enabled else None
        self.inputs = model_inputs(self.inputs, config.fine_grained)

    @classmethod
    def build(cls, config: LMMLoRAConfig, context=None) -> LMMLoRA:
        param = base_param(context)
        processor = load_processor(config.base, param, config.max_pixels)  # small files first: fail at once
        model = add_lora(load_base(config.base, config.dtype, config.quantization, param), config)
        return cls(config, model, processor)

    def collate(self, items: list[dict]) -> dict:
        batch = collate_prompts(self.processor, self.config, items)
        if self.fine_head is not None:
            batch["fine_grained"] = fine_targets(items)  # (B, NUM_FINE)
        return batch

    def embed(self, batch: dict) -> torch.Tensor:
        """The final hidden state at the last prompt position (B, H): what the classifier head reads, and the
        meme embedding of LMM-RGCL's second stage (hatememes.features.lmm)."""
        return last_position(self.model, batch, hidden=True)[1]

    def forward(self, batch: dict) -> torch.Tensor | dict[str, torch.Tensor]:
        """logit_yes - logit_no (B,); with the classifier head, its logit (B,), and in training the loop's
        output dict: the head's logit, the weighted cross-entropy of the answer token (`aux_loss`) and the
        head's loss weight. With the fine-grained head, its logits (B, NUM_FINE) beside them, and its loss in
        `aux_loss`."""
        if self.head is None and self.fine_head is None:
            return yes_no_logits(self.model, batch, self.answer_ids)  # (B,)
        vocabulary, hidden = last_position(self.model, batch, hidden=True)  # (B, V), (B, H)
        if self.head is None:
            logits, extra = vocabulary[:, self.answer_ids[0]] - vocabulary[:, self.answer_ids[1]], {}  # (B,)
        else:
            logits = self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)  # (B,)
            extra = {"loss_weight": self.config.head_loss_weight} if self.training else {}
        aux_loss = 0.0
        if self.head is not None and self.training:
            answers = torch.where(batch["labels"] > 0.5, self.answer_ids[0], self.answer_ids[1])  # (B,) Yes / No
            aux_loss = self.config.lm_loss_weight * F.cross_entropy(vocabulary, answers)
        if self.fine_head is not None:
            fine_logits = self.fine_head(hidden.to(self.fine_head.weight.dtype))  # (B, NUM_FINE)
            return fine_outputs(logits, fine_logits, batch, self.config.fine_grained, self.training, aux_loss,
                                **extra)
        if not self.training:
            return logits
        return {"logits": logits, "aux_loss": aux_loss, **extra}

    def save_pretrained(self, directory: str | Path) -> None:
        """adapter_config.json + adapter_model.safetensors (peft), the processor, the config and, with
        `classifier_head`, classifier_head.safetensors (with the fine-grained head, fine_grained_head.safetensors)."""
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        write_config(directory, self.config)
        from safetensors.torch import save_file

        for head, name in ((self.head, HEAD_FILE), (self.fine_head, FINE_HEAD_FILE)):
            if head is not None:
                save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
                          str(Path(directory) / name))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> LMMLoRA:
        """The adapters in `directory` on the base model its config names."""
        from peft import PeftModel

        config = read_config(directory, LMMLoRAConfig)
        base = load_base(config.base, config.dtype, config.quantization)
        model = PeftModel.from_pretrained(base, directory, is_trainable=False)
        classifier = cls(config, model, load_processor(directory, max_pixels=config.max_pixels))
        from safetensors.torch import load_file

        for head, name in ((classifier.head, HEAD_FILE), (classifier.fine_head, FINE_HEAD_FILE)):
            if head is not None:
                head.load_state_dict(load_file(str(Path(directory) / name)))
                head.to(base.device)
        return classifier


def merge(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge the adapters of `adapter_dir` into a bf16 copy of their base; save it as a plain checkpoint."""
    from peft import PeftModel

    config = read_config(adapter_dir, LMMLoRAConfig)
    base = load_base(config.base, "bfloat16")
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir)
    load_processor(adapter_dir).save_pretrained(out_dir)
    return Path(out_dir)
