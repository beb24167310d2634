"""LLaVA-1.5 as a hateful-meme classifier: zero-shot, and LoRA/QLoRA-tuned on the language model.

Follows LLaVA-1.5 (Liu et al. 2023, "Improved Baselines with Visual Instruction Tuning") for the model and
its prompt format, and LMM-RGCL (Mei et al. 2025, "Robust Adaptation of Large Multimodal Models for
Retrieval Augmented Hateful Meme Detection") for the classifier: ask the model whether the meme is hateful
and score it with the answer token,

    P(hateful) = softmax(logits[Yes], logits[No])[Yes] = sigmoid(logit_yes - logit_no)

at the last prompt position. `yes_no_logits` computes `logit_yes - logit_no` and is the one scoring function
of both classes here: `LlavaZeroShot` (no training) and `LlavaLoRA` (LoRA, Hu et al. 2022; QLoRA, Dettmers et
al. 2023, when `quantization: "4bit"`). `LlavaLoRA.forward` returns that log-odds as its logits, so the shared
BCE training loop trains it, and since

    BCE(sigmoid(l_yes - l_no), y) = -log softmax([l_yes, l_no])[y == 1 ? Yes : No]

its loss is exactly the cross-entropy of the answer token restricted to {Yes, No} (tests/test_llava.py).
The base is any LLaVA checkpoint name or folder: `llava-hf/llava-1.5-7b-hf` in the full profile, the tiny
base that `hatememes.models.llava_tiny.build_tiny_base` pretrains in the demo.
"""

from __future__ import annotations

import importlib.util
import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hatememes.pretrained import loading

if TYPE_CHECKING:  # imported where they are used: peft and LLaVA's modules cost seconds in every stage
    from peft import PeftModel
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

DEFAULT_PROMPT = (
    'USER: <image>\nThis is an image with: "{text}" written on it. Is it hateful? Answer yes or no. ASSISTANT:'
)
ANSWER_PREFIX = "ASSISTANT:"  # the answer token is what the tokenizer makes of " Yes" / " No" after this
# LoRA on the language model's attention and MLP projections only: a plain list of names would also match
# the q/k/v projections of the CLIP vision tower.
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
CONFIG_FILE = "llava_classifier.json"
HEAD_FILE = "classifier_head.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
ZEROSHOT_BASE, LORA_BASE = "train.llava_zeroshot.model.base", "train.llava_lora.model.base"  # the params naming bases


@dataclass(frozen=True)
class LlavaZeroShotConfig:
    base: str = "llava-hf/llava-1.5-7b-hf"  # hub name or local folder of a LLaVA checkpoint (+ its processor)
    prompt: str = DEFAULT_PROMPT  # must hold "<image>" and "{text}" and end where the answer starts
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    batch_size: int = 8  # for predict_proba

    def __post_init__(self) -> None:  # params are checked when read, before any base is loaded
        check_prompt(self.prompt)


@dataclass(frozen=True)
class LlavaLoRAConfig:
    base: str = "llava-hf/llava-1.5-7b-hf"
    prompt: str = DEFAULT_PROMPT
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
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

    def __post_init__(self) -> None:
        check_prompt(self.prompt)
        if min(self.head_loss_weight, self.lm_loss_weight) < 0:
            raise ValueError(f"llava_lora: head_loss_weight {self.head_loss_weight} and lm_loss_weight "
                             f"{self.lm_loss_weight} must be >= 0")


def llava_15_7b_config() -> LlavaConfig:
    """The architecture of llava-hf/llava-1.5-7b-hf (CLIP ViT-L/14-336 + Vicuna/Llama-2-7B), no weights."""
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


def answer_token_ids(tokenizer, answers: tuple[str, str] = ("Yes", "No")) -> tuple[int, int]:
    """The ids of the tokens " Yes" and " No" become right after "ASSISTANT:" (e.g. "▁Yes" for Llama)."""
    prefix = tokenizer(ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    ids = []
    for answer in answers:
        full = tokenizer(f"{ANSWER_PREFIX} {answer}", add_special_tokens=False)["input_ids"]
        pieces = tokenizer.convert_ids_to_tokens(full[len(prefix) :])
        if full[: len(prefix)] != prefix or len(full) != len(prefix) + 1:
            raise ValueError(f"answer {answer!r} after {ANSWER_PREFIX!r} is not one token: {pieces}")
        if full[-1] == tokenizer.unk_token_id:
            raise ValueError(f"answer {answer!r} after {ANSWER_PREFIX!r} is the unknown token {pieces}")
        ids.append(full[-1])
    return ids[0], ids[1]


def check_prompt(prompt: str) -> None:
    """The meme prompt must show the image once, quote the meme's text and end where the answer starts."""
    problems = []
    if prompt.count("<image>") != 1:
        problems.append(f"it must hold '<image>' exactly once (found {prompt.count('<image>')})")
    if "{text}" not in prompt:
        problems.append("it must hold '{text}', where the meme's text goes")
    if not prompt.rstrip().endswith(ANSWER_PREFIX):
        problems.append(f"it must end with {ANSWER_PREFIX!r}, where the Yes/No answer starts")
    if problems:
        raise ValueError(f"prompt {prompt!r}: " + "; ".join(problems))


def check_quantization(quantization: str) -> None:
    if quantization == "none":
        return
    if not torch.cuda.is_available():
        raise RuntimeError(f"quantization {quantization!r} (QLoRA) needs a CUDA GPU; set quantization: none on CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(f"quantization {quantization!r} (QLoRA) needs bitsandbytes: pip install bitsandbytes")


def load_base(base: str, dtype: str, quantization: str = "none",
              param: str = LORA_BASE) -> LlavaForConditionalGeneration:
    """The LLaVA model in `dtype`, or with its language model in 4-bit nf4 (vision tower and projector kept).
    A base that cannot be loaded raises `PretrainedLoadError` naming `param` (the setting `base` came from)."""
    from transformers import BitsAndBytesConfig, LlavaForConditionalGeneration

    check_quantization(quantization)
    if quantization == "none":
        with loading(param, base):
            return LlavaForConditionalGeneration.from_pretrained(base, dtype=DTYPES[dtype])
    from accelerate import PartialState

    quantization_config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=["vision_tower", "multi_modal_projector", "lm_head"],
    )
    device_map = {"": PartialState().device}
    with loading(param, base):
        return LlavaForConditionalGeneration.from_pretrained(
            base, dtype=torch.bfloat16, quantization_config=quantization_config, device_map=device_map
        )


def load_processor(path: str | Path, param: str | None = None) -> LlavaProcessor:
    """The checkpoint's processor with PIL image preprocessing, as LLaVA-1.5 was trained (and fast on CPU).
    With `param` (the setting that named a base), one that cannot be loaded raises `PretrainedLoadError`."""
    from transformers import LlavaProcessor

    with loading(param, str(path)) if param else nullcontext():
        return LlavaProcessor.from_pretrained(path, backend="pil")


def add_lora(model: LlavaForConditionalGeneration, config: LlavaLoRAConfig) -> PeftModel:
    """Freeze the base and add LoRA adapters to the language model's projections."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    checkpointing = {"use_reentrant": False}
    if config.quantization != "none":
        model = prepare_model_for_kbit_training(
            model, config.gradient_checkpointing, gradient_checkpointing_kwargs=checkpointing
        )
    elif config.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=LORA_TARGETS,
        bias="none",
    )
    return get_peft_model(model, lora)


def yes_no_logits(model: nn.Module, batch: dict, answer_ids: tuple[int, int]) -> torch.Tensor:
    """logit(P(Yes)) = logit_yes - logit_no at the last position, (B,); the one scoring function.

    One forward, no generation: no KV cache (LLaVA-7B's at 640 tokens and batch 256 is ~86 GB) and the
    vocabulary projection at the last position only."""
    logits = last_position(model, batch)[0]  # (B, V)
    return logits[:, answer_ids[0]] - logits[:, answer_ids[1]]  # (B,)


def last_position(model: nn.Module, batch: dict, hidden: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the vocabulary logits (B, V) in fp32, and with `hidden` the final hidden state (B, H)) at the last
    position, the answer's."""
    outputs = model(
        input_ids=batch["input_ids"],  # (B, T), left-padded so that the last position is the answer's
        attention_mask=batch["attention_mask"],  # (B, T)
        pixel_values=batch["pixel_values"],  # (B, 3, H, W)
        use_cache=False,
        logits_to_keep=1,
        output_hidden_states=hidden,
    )
    return outputs.logits[:, -1].float(), outputs.hidden_states[-1][:, -1] if hidden else None


def collate_prompts(processor: LlavaProcessor, prompt: str, items: list[dict]) -> dict:
    """Processor outputs for the prompted memes (one image each) plus "labels" (B,) float and "ids" (B,)."""
    texts = [prompt.format(text=item["text"]) for item in items]
    batch = dict(processor(images=[item["image"] for item in items], text=texts, padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([float(item["label"]) for item in items])  # (B,), -1 when unknown
    batch["ids"] = torch.tensor([int(item["id"]) for item in items])  # (B,)
    return batch


def write_config(directory: Path, config, **extra) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    record = {**asdict(config), **extra}
    (Path(directory) / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_config(directory: Path, cls: type):
    record = json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
    return cls(**{key: value for key, value in record.items() if key in cls.__dataclass_fields__})


class LlavaZeroShot:
    """LLaVA answering the prompt as it is: P(Yes) with no training (a fitted-style classifier).

    `build` reads the base's processor only: the train stage fits nothing and saves the config, so it never
    needs the weights. `from_pretrained` (predict.py) loads them, as does a first `predict_proba`."""

    Config = LlavaZeroShotConfig
    inputs = ("image",)

    def __init__(self, config: LlavaZeroShotConfig, processor, model: LlavaForConditionalGeneration | None = None):
        self.config, self.processor, self.model = config, processor, model.eval() if model is not None else None
        processor.tokenizer.padding_side = "left"  # the last position is every prompt's answer position
        self.answer_ids = answer_token_ids(processor.tokenizer)
        self.trained = False

    @classmethod
    def build(cls, config: LlavaZeroShotConfig, context=None) -> LlavaZeroShot:
        return cls(config, load_processor(config.base, ZEROSHOT_BASE))

    def load_weights(self) -> LlavaForConditionalGeneration:
        """The base model on this process's device, loaded on first use."""
        if self.model is None:
            from accelerate import PartialState

            base = load_base(self.config.base, self.config.dtype, param=ZEROSHOT_BASE)
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
        key = "train.llava_zeroshot.model.batch_size"
        while start < len(items):
            try:
                batch = collate_prompts(self.processor, self.config.prompt, items[start : start + batch_size])
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
        """The config only (the base is named there); the weights are the base's own."""
        write_config(directory, self.config, trained=self.trained)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> LlavaZeroShot:
        """The classifier with its base's weights loaded now, before the caller reads any data."""
        zero_shot = cls.build(read_config(directory, LlavaZeroShotConfig))
        zero_shot.load_weights()
        return zero_shot


class LlavaLoRA(nn.Module):
    """LLaVA with LoRA (or QLoRA) adapters on its language model; logits (B,) = logit_yes - logit_no, or with
    `classifier_head` the head's logit on the last token's hidden state (LMM-RGCL's first stage)."""

    Config = LlavaLoRAConfig
    inputs = ("image",)

    def __init__(self, config: LlavaLoRAConfig, model: PeftModel, processor):
        super().__init__()
        self.config, self.model, self.processor = config, model, processor
        processor.tokenizer.padding_side = "left"
        self.answer_ids = answer_token_ids(processor.tokenizer)
        self.head = nn.Linear(model.config.get_text_config().hidden_size, 1) if config.classifier_head else None

    @classmethod
    def build(cls, config: LlavaLoRAConfig, context=None) -> LlavaLoRA:
        processor = load_processor(config.base, LORA_BASE)  # the small files first: a missing base fails at once
        model = add_lora(load_base(config.base, config.dtype, config.quantization, LORA_BASE), config)
        return cls(config, model, processor)

    def collate(self, items: list[dict]) -> dict:
        return collate_prompts(self.processor, self.config.prompt, items)

    def embed(self, batch: dict) -> torch.Tensor:
        """The final hidden state at the last prompt position (B, H): what the classifier head reads, and the
        meme embedding of LMM-RGCL's second stage (hatememes.features.lmm)."""
        return last_position(self.model, batch, hidden=True)[1]

    def forward(self, batch: dict) -> torch.Tensor | dict[str, torch.Tensor]:
        """logit_yes - logit_no (B,); with the classifier head, its logit (B,), and in training the loop's
        output dict: the head's logit, the weighted cross-entropy of the answer token (`aux_loss`) and the
        head's loss weight."""
        if self.head is None:
            return yes_no_logits(self.model, batch, self.answer_ids)  # (B,)
        vocabulary, hidden = last_position(self.model, batch, hidden=True)  # (B, V), (B, H)
        logits = self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)  # (B,)
        if not self.training:
            return logits
        answers = torch.where(batch["labels"] > 0.5, self.answer_ids[0], self.answer_ids[1])  # (B,) "Yes" / "No"
        lm_loss = F.cross_entropy(vocabulary, answers)
        return {"logits": logits, "aux_loss": self.config.lm_loss_weight * lm_loss,
                "loss_weight": self.config.head_loss_weight}

    def save_pretrained(self, directory: str | Path) -> None:
        """adapter_config.json + adapter_model.safetensors (peft), the processor, the config and, with
        `classifier_head`, classifier_head.safetensors."""
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        write_config(directory, self.config)
        if self.head is not None:
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                      str(Path(directory) / HEAD_FILE))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> LlavaLoRA:
        """The adapters in `directory` on the base model its config names."""
        from peft import PeftModel

        config = read_config(directory, LlavaLoRAConfig)
        base = load_base(config.base, config.dtype, config.quantization)
        model = PeftModel.from_pretrained(base, directory, is_trainable=False)
        classifier = cls(config, model, load_processor(directory))
        if classifier.head is not None:
            from safetensors.torch import load_file

            classifier.head.load_state_dict(load_file(str(Path(directory) / HEAD_FILE)))
            classifier.head.to(base.device)
        return classifier


def merge(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge the adapters of `adapter_dir` into a bf16 copy of their base; save it as a plain LLaVA model."""
    from peft import PeftModel

    config = read_config(adapter_dir, LlavaLoRAConfig)
    base = load_base(config.base, "bfloat16")
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir)
    load_processor(adapter_dir).save_pretrained(out_dir)
    return Path(out_dir)
