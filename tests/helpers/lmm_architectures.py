"""Tiny random checkpoints of four image-text-to-text architectures, saved to folders as an offline user
would hold them: LLaVA-1.5, LLaVA-NeXT, Qwen2-VL and Idefics3.

The networks are shrunk (hidden 32, one or two layers); what the classifier reads off a checkpoint is not:
each processor has its architecture's published chat template and image-processor settings, transcribed
below with their source, and its tokenizer holds the architecture's special tokens. The tokenizers
themselves are byte-level BPEs trained here (the published ones cannot be downloaded), so the answer
tokens are "ĠYes"/"Yes" as in the Llama-3 and Qwen2 vocabularies.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from hatememes.models.llava_tiny import LLAVA_15_CHAT_TEMPLATE
from hatememes.models.lmm import DEFAULT_QUESTION

OPENAI_CLIP_MEAN, OPENAI_CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]

# llava-hf/llava-v1.6-mistral-7b-hf's chat_template.json: "[INST] <image>\n{text} [/INST]", no generation
# prompt (the answer follows "[/INST]" directly)
LLAVA_NEXT_MISTRAL_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'][0]"
    "['text'] + '\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'user' %}{{ '[INST] ' }}{# Render all images "
    "first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}"
    "{% endfor %}{# Render all text next #}{% for content in message['content'] | selectattr('type', 'equalto', "
    "'text') %}{{ content['text'] }}{% endfor %}{{' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'][0]['text'] + '</s>'}}{% else %}{{ raise_exception('Only user and assistant roles "
    "are supported!') }}{% endif %}{% endfor %}"
)
# Qwen/Qwen2-VL-7B-Instruct's chat_template.json: ChatML with a default system turn, the image as
# <|vision_start|><|image_pad|><|vision_end|>
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
    "messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] "
    "== 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value "
    "+ 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|>"
    "<|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = "
    "video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|>"
    "<|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# HuggingFaceM4/Idefics3-8B-Llama3's processor chat_template (transformers' tests/models/idefics3/
# test_processing_idefics3.py renders a conversation with it: "<|begin_of_text|>User: ...<end_of_utterance>\n
# Assistant: ...")
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'].capitalize()}}{% if message['content'][0]"
    "['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if "
    "line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Qwen2's ChatML and vision tokens (Qwen2-VL-7B-Instruct's tokenizer_config.json added tokens)
QWEN2_VL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                    "<|image_pad|>", "<|video_pad|>"]

# what each architecture's processor renders for the meme prompt (the templates above, read by hand)
EXPECTED_PROMPTS = {
    "llava-1.5": "USER: <image>\n{question} ASSISTANT:",
    "llava-next": "[INST] <image>\n{question} [/INST]",
    "qwen2-vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n",
    "idefics3": "<|begin_of_text|>User:<image>{question}<end_of_utterance>\nAssistant:",
}
ARCHITECTURES = tuple(EXPECTED_PROMPTS)
HIDDEN = 32


def tokenizer(special: list[str], **roles) -> PreTrainedTokenizerFast:
    """A byte-level BPE over the prompts and answers, with `special` tokens (roles name some of them); with a
    `bos_token` it puts it before every text, as Llama's and Llama-3's tokenizers do (Qwen2's has none)."""
    texts = [DEFAULT_QUESTION.format(text=f"meme {i} about a small red star") for i in range(20)]
    texts += [f"{prefix}{answer}" for prefix in ("", " ", "\n") for answer in ("Yes", "No")] * 20
    texts += ["USER ASSISTANT User Assistant INST system You are a helpful assistant. user assistant"] * 5
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=special,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if "bos_token" in roles:
        bos = roles["bos_token"]
        bpe.post_processor = processors.TemplateProcessing(single=f"{bos} $A",
                                                           special_tokens=[(bos, bpe.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, padding_side="left", **roles)


def llama(vocab: int, **ids) -> dict:
    return {"model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": vocab,
            "max_position_embeddings": 8192, **ids}


def clip_vision(image_size: int, patch_size: int) -> dict:
    return {"model_type": "clip_vision_model", "hidden_size": HIDDEN, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": image_size, "patch_size": patch_size}


def llava_15(folder: Path) -> Path:
    """llava-hf/llava-1.5-7b-hf shrunk: its preprocessor_config.json (CLIPImageProcessor, shortest edge and
    crop 336, OpenAI CLIP mean/std) and processor_config.json (patch 14, CLS dropped)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], unk_token="<unk>", bos_token="<s>",
                    eos_token="</s>", pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    image = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                  image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
    processor = LlavaProcessor(image_processor=image, tokenizer=tok, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_15_CHAT_TEMPLATE)
    config = LlavaConfig(vision_config=clip_vision(336, 14), text_config=llama(len(tok), pad_token_id=tok.pad_token_id),
                         image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=576,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    return save(folder, LlavaForConditionalGeneration(config), processor)


def llava_next(folder: Path) -> Path:
    """llava-hf/llava-v1.6-mistral-7b-hf shrunk: its preprocessor_config.json (LlavaNextImageProcessor, 336-px
    tiles, the five grid pinpoints, OpenAI CLIP mean/std) and processor_config.json (patch 14)."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    tok = tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], unk_token="<unk>", bos_token="<s>",
                    eos_token="</s>", pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    image = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                       image_grid_pinpoints=pinpoints, image_mean=OPENAI_CLIP_MEAN,
                                       image_std=OPENAI_CLIP_STD)
    processor = LlavaNextProcessor(image_processor=image, tokenizer=tok, patch_size=14,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=LLAVA_NEXT_MISTRAL_CHAT_TEMPLATE)
    config = LlavaNextConfig(vision_config=clip_vision(336, 14),
                             text_config=llama(len(tok), pad_token_id=tok.pad_token_id),
                             image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
                             vision_feature_layer=-1, vision_feature_select_strategy="default")
    return save(folder, LlavaNextForConditionalGeneration(config), processor)


def qwen2_vl(folder: Path) -> Path:
    """Qwen/Qwen2-VL-7B-Instruct shrunk: its preprocessor_config.json (Qwen2VLImageProcessor: patch 14,
    2x2 merge, temporal patch 2, min_pixels 56*56, max_pixels 28*28*1280, OpenAI CLIP mean/std; the class
    defaults) and its M-RoPE split scaled to the tiny head."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tok = tokenizer(QWEN2_VL_SPECIAL, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessorPil(), tokenizer=tok,
                                 video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN2_VL_CHAT_TEMPLATE)
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    config = Qwen2VLConfig(
        text_config={"hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": len(tok),
                     "pad_token_id": tok.pad_token_id, "bos_token_id": None, "eos_token_id": tok.eos_token_id,
                     "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},  # head 16: 8 frequencies
        vision_config={"depth": 1, "embed_dim": HIDDEN, "hidden_size": HIDDEN, "num_heads": 2, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        **ids)
    return save(folder, Qwen2VLForConditionalGeneration(config), processor)


def idefics3(folder: Path) -> Path:
    """HuggingFaceM4/Idefics3-8B-Llama3 shrunk: its preprocessor_config.json (Idefics3ImageProcessor: image
    splitting, longest edge 4 x 364, 364-px tiles, mean/std 0.5; the class defaults) and processor
    (image_seq_len 169 = (364 / 14)^2 / 2^2)."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    rows = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    special = ["<|begin_of_text|>", "<|end_of_text|>", "<pad>", "<image>", "<fake_token_around_image>",
               "<global-img>", "<end_of_utterance>", *rows]
    tok = tokenizer(special, bos_token="<|begin_of_text|>", eos_token="<end_of_utterance>", pad_token="<pad>",
                    extra_special_tokens={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                                          "end_of_utterance_token": "<end_of_utterance>"})
    processor = Idefics3Processor(image_processor=Idefics3ImageProcessorPil(), tokenizer=tok, image_seq_len=169,
                                  chat_template=IDEFICS3_CHAT_TEMPLATE)
    config = Idefics3Config(
        vision_config={"hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 364, "patch_size": 14},
        text_config=llama(len(tok), pad_token_id=tok.pad_token_id),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2)
    return save(folder, Idefics3ForConditionalGeneration(config), processor)


def save(folder: Path, model, processor) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


BUILDERS = {"llava-1.5": llava_15, "llava-next": llava_next, "qwen2-vl": qwen2_vl, "idefics3": idefics3}
