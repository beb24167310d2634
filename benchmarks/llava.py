"""One LoRA / QLoRA training step of LLaVA-1.5-7B: tokens/s, peak memory and MFU, on random weights.

    python benchmarks/llava.py                            # GPU: llava-1.5-7b's architecture, bf16, batch 8
    python benchmarks/llava.py --gradient-checkpointing --batch-size 16
    python benchmarks/llava.py --tiny                     # CPU: a tiny LLaVA through the same code (the test)

The model is built from `llava_15_7b_config()` (CLIP ViT-L/14-336 + Llama-2-7B; nothing is downloaded) with
random weights, which cost what trained ones cost. It is saved once to a temporary folder and loaded back by
`hatememes.models.llava.load_base`, so QLoRA quantizes it as training does; `add_lora` adds the adapters and
one step (forward through `yes_no_logits`, BCE, backward, AdamW) is timed after a warm-up step. The QLoRA row
runs when bitsandbytes is importable and a GPU is present.

FLOPs per step, dense matmuls only (attention scores, norms and element-wise ops left out):
    vision    2 * N_vision * B * T_image        forward only: frozen, and nothing before it needs gradients
    language  (4 * N_lm + 6 * N_lora) * B * T   forward 2N; backward 2N for the activation gradients through
                                                the frozen weights; LoRA weights 2N forward + 4N backward
N_lm: the decoder layers (the embedding is a lookup; the LM head runs on the last position only). MFU = FLOPs
/ step time / peak, the peak being H100 SXM bf16 dense, 989 TFLOP/s. `mfu_6nt` is the usual 6 * N_all * B * T
estimate, which counts weight gradients LoRA never computes and so overstates the work.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import resource
import tempfile
import time

import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from hatememes.models.llava import LlavaLoRAConfig, add_lora, llava_15_7b_config, load_base, yes_no_logits

H100_BF16_PEAK = 989e12  # FLOP/s, dense
ANSWER_IDS = (3869, 1939)  # "▁Yes", "▁No" of the llava-1.5 tokenizer; the cost does not depend on them


def tiny_config() -> LlavaConfig:
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              image_size=56, patch_size=14)
    text = LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=4000, max_position_embeddings=256)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=3999, image_seq_length=16)


def parameter_counts(config: LlavaConfig, lora: LlavaLoRAConfig) -> dict[str, int]:
    """N_vision, N_lm (decoder layers), N_lora and N_all of the unquantized model, counted on the meta device."""
    with torch.device("meta"):
        model = add_lora(LlavaForConditionalGeneration(config), lora)
    count = lambda named: sum(p.numel() for _, p in named)  # noqa: E731
    named = list(model.named_parameters())
    return {
        "vision": count((n, p) for n, p in named if ".vision_tower." in n),
        "lm": count((n, p) for n, p in named if ".language_model.layers." in n and not p.requires_grad),
        "lora": count((n, p) for n, p in named if p.requires_grad),
        "all": count(named),
    }


def step_flops(counts: dict[str, int], batch_size: int, image_tokens: int, tokens: int) -> tuple[float, float]:
    """(our estimate, 6 * N_all * tokens) for one training step."""
    vision = 2 * counts["vision"] * batch_size * image_tokens
    language = (4 * counts["lm"] + 6 * counts["lora"]) * batch_size * tokens
    return vision + language, 6 * counts["all"] * batch_size * tokens


def make_batch(config: LlavaConfig, batch_size: int, text_tokens: int, device: str) -> dict:
    """[image tokens] + random text tokens per row, random pixels, random labels."""
    vision = config.vision_config
    image = torch.full((batch_size, config.image_seq_length), config.image_token_index)
    text = torch.randint(0, config.image_token_index, (batch_size, text_tokens))
    input_ids = torch.cat([image, text], dim=1)  # (B, T)
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": torch.randn(batch_size, 3, vision.image_size, vision.image_size),  # (B, 3, H, W)
        "labels": torch.randint(0, 2, (batch_size,)).float(),
    }
    return {key: value.to(device) for key, value in batch.items()}


def peak_memory_gb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS (kB on Linux)


def time_step(model, batch: dict, answer_ids: tuple[int, int], steps: int, device: str) -> float:
    """Seconds per training step, after one untimed warm-up step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1.0e-4)

    def step() -> None:
        loss = F.binary_cross_entropy_with_logits(yes_no_logits(model, batch, answer_ids), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def run_one(saved: str, config: LlavaConfig, lora: LlavaLoRAConfig, args, device: str) -> dict:
    model = add_lora(load_base(saved, lora.dtype, lora.quantization), lora)
    if lora.quantization == "none":
        model.to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    batch = make_batch(config, args.batch_size, args.text_tokens, device)
    answer_ids = (1, 2) if args.tiny else ANSWER_IDS
    seconds = time_step(model, batch, answer_ids, args.steps, device)
    tokens = config.image_seq_length + args.text_tokens
    flops, flops_6nt = step_flops(parameter_counts(config, lora), args.batch_size, config.image_seq_length, tokens)
    row = {"run": "qlora" if lora.quantization == "4bit" else "lora", "batch": args.batch_size, "seq": tokens,
           "step_s": seconds, "tokens_per_s": args.batch_size * tokens / seconds,
           "peak_gb": peak_memory_gb(device), "tflops": flops / seconds / 1e12,
           "mfu": flops / seconds / H100_BF16_PEAK, "mfu_6nt": flops_6nt / seconds / H100_BF16_PEAK}
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def run(args) -> list[dict]:
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    config = tiny_config() if args.tiny else llava_15_7b_config()
    dtype = "float32" if device == "cpu" else "bfloat16"
    lora = LlavaLoRAConfig(dtype=dtype, gradient_checkpointing=args.gradient_checkpointing)
    runs = [lora]
    if device == "cuda" and importlib.util.find_spec("bitsandbytes") is not None:
        runs.append(dataclasses.replace(lora, quantization="4bit"))
    with tempfile.TemporaryDirectory() as saved:
        torch.manual_seed(0)
        with torch.device(device):
            LlavaForConditionalGeneration._from_config(config, dtype=getattr(torch, dtype)).save_pretrained(saved)
        return [run_one(saved, config, lora, args, device) for lora in runs]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny LLaVA on CPU (what the tests run)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--text-tokens", type=int, default=64, help="prompt + caption tokens after the image")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args)
    print(f"{'run':6s} {'batch':>5s} {'seq':>5s} {'step s':>8s} {'tokens/s':>9s} {'peak GB':>8s} "
          f"{'TFLOP/s':>8s} {'MFU':>6s} {'MFU 6NT':>8s}")
    for row in rows:
        print(f"{row['run']:6s} {row['batch']:5d} {row['seq']:5d} {row['step_s']:8.3f} {row['tokens_per_s']:9.0f} "
              f"{row['peak_gb']:8.2f} {row['tflops']:8.1f} {row['mfu']:6.1%} {row['mfu_6nt']:8.1%}")
    return rows


if __name__ == "__main__":
    main()
