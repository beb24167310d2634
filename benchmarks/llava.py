"""One LoRA / QLoRA training step of LLaVA-1.5-7B: tokens/s, peak memory and MFU, on random weights.

    python benchmarks/llava.py                            # GPU: llava-1.5-7b's architecture, bf16, batch 8
    python benchmarks/llava.py --gradient-checkpointing --batch-size 16
    python benchmarks/llava.py --tiny                     # CPU: a tiny LLaVA through the same code (the test)

The model is built from `llava_15_7b_config()` (CLIP ViT-L/14-336 + Llama-2-7B; nothing is downloaded) with
random weights, which cost what trained ones cost. It is saved once to a temporary folder and loaded back by
`hatememes.models.lmm.load_base`, so QLoRA quantizes it as training does; `add_lora` adds the adapters and
one step (forward through `yes_no_logits`, BCE, backward, AdamW) is timed after a warm-up step. The QLoRA row
runs when bitsandbytes is importable and a GPU is present.

FLOPs per step, dense matmuls only (attention scores, norms and element-wise ops left out):
    vision    2 * N_vision * B * T_image        forward only: frozen, and nothing before it needs gradients
    language  (4 * N_lm + 6 * N_lora) * B * T   forward 2N; backward 2N for the activation gradients through
                                                the frozen weights; LoRA weights 2N forward + 4N backward
N_lm: the decoder layers (the embedding is a lookup; the LM head runs on the last position only). MFU = FLOPs
/ step time / peak, the peak being H100 SXM bf16 dense, 989 TFLOP/s. `mfu_6nt` is the usual 6 * N_all * B * T
estimate, which counts weight gradients LoRA never computes and so overstates the work.

    python benchmarks/llava.py --estimate --markdown memory.md   # no GPU, no weights: the estimated memory table

`estimate_training` / `estimate_scoring` give the bytes live at the peak, by part, from the config alone (nothing
is allocated): T = 576 image tokens + `text_tokens`, b = bytes of the residual stream (bf16 LoRA 2; QLoRA 4,
as prepare_model_for_kbit_training makes the embeddings and norms fp32), adapters fp32 as peft makes them.
Kept for backward, per token and decoder layer (SDPA attention keeps no T x T scores):
    2 (4 H + 4)                     the two RMSNorms: their input in fp32, 1/rms
    2 b (H_q + H_kv) + 4 heads      SDPA: q and k after RoPE, v, its output; logsumexp
    3 b I                           SiLU's input and output, up_proj's output
    sum (m + 4) d_in + 4 r          each adapter: dropout's mask (m = 1 byte on CUDA) and lora_A's fp32 input
Without checkpointing: L layers (layer 0 keeps no input norm or q/k/v masks: its input needs no gradient), the
final norm and the image features; a KV cache would add nothing, as it holds the k and v that SDPA keeps. With
checkpointing: each layer's input ((L + 1) b H per token) and one recomputed layer, plus, for LoRA, the vision
tower's layer inputs (peft's enable_input_require_grads puts the tower in the graph). Plus one layer's working
set, b I (+ 4 I, the adapter's fp32 copy, when b = 2) + (b + 12) H per token, and the logits of the last
position only, B V (not B T V). Scoring: the weights, the KV cache (2 L T H_kv b B) when use_cache, and the last
MLP's b (3 I + 4 H) per token.
tests/test_llava_memory.py checks these terms against autograd's saved tensors and a measured CPU peak.
"""

# No `from __future__ import annotations`: with it the dataclasses below fail to build when a test loads this
# script by path without registering it in sys.modules (tests/test_llava.py `load_script`).
import argparse
import dataclasses
import importlib.util
import itertools
import resource
import tempfile
import time
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from hatememes.models.lmm import LMMLoRAConfig, add_lora, llava_15_7b_config, load_base, yes_no_logits

H100_BF16_PEAK = 989e12  # FLOP/s, dense
ANSWER_IDS = (3869, 1939)  # "▁Yes", "▁No" of the llava-1.5 tokenizer; the cost does not depend on them


def tiny_config() -> LlavaConfig:
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              image_size=56, patch_size=14)
    text = LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=4000, max_position_embeddings=256)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=3999, image_seq_length=16)


def parameter_counts(config: LlavaConfig, lora: LMMLoRAConfig) -> dict[str, int]:
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


def run_one(saved: str, config: LlavaConfig, lora: LMMLoRAConfig, args, device: str) -> dict:
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
    setup = TrainingSetup(args.batch_size, args.text_tokens, lora.dtype, lora.quantization, lora.gradient_checkpointing,
                          lora.lora_r, lora.lora_dropout, device=device)
    row = {"run": "qlora" if lora.quantization == "4bit" else "lora", "batch": args.batch_size, "seq": tokens,
           "step_s": seconds, "tokens_per_s": args.batch_size * tokens / seconds,
           "peak_gb": peak_memory_gb(device), "estimated_gb": sum(estimate_training(config, setup).values()) / 2**30,
           "tflops": flops / seconds / 1e12,
           "mfu": flops / seconds / H100_BF16_PEAK, "mfu_6nt": flops_6nt / seconds / H100_BF16_PEAK}
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def run(args) -> list[dict]:
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    config = tiny_config() if args.tiny else llava_15_7b_config()
    dtype = "float32" if device == "cpu" else "bfloat16"
    lora = LMMLoRAConfig(dtype=dtype, gradient_checkpointing=args.gradient_checkpointing)
    runs = [lora]
    if device == "cuda" and importlib.util.find_spec("bitsandbytes") is not None:
        runs.append(dataclasses.replace(lora, quantization="4bit"))
    with tempfile.TemporaryDirectory() as saved:
        torch.manual_seed(0)
        with torch.device(device):
            LlavaForConditionalGeneration._from_config(config, dtype=getattr(torch, dtype)).save_pretrained(saved)
        return [run_one(saved, config, lora, args, device) for lora in runs]


# --- Memory estimate: a pure function of the config, nothing allocated ----------------------------------------

GPUS_GB = (24, 40, 80, 141)
HEADROOM = 0.10  # kept free on each GPU: CUDA context, allocator fragmentation, kernel workspaces
GB = 1e9
TEXT_TOKENS = 64  # after the 576 image tokens: ~33 of the prompt template (counted by hand for the Llama tokenizer,
# which is not available offline) + a meme text of 10-30 tokens, left-padded to the longest of the batch
BYTES = {"float32": 4, "bfloat16": 2}
ADAPTER_BYTES = 4  # peft keeps the adapters in fp32 on a bf16 or 4-bit base (get_peft_model(autocast_adapter_dtype))
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit codes, an 8-bit absmax per 64-block, an fp32 one per 256 blocks
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # = LORA_TARGETS
STATIC_PARTS = ("lm_weights", "vision_weights", "adapters", "adapter_grads", "adamw_states")  # held all step long
SAME_INPUT = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "o_proj": "o", "gate_proj": "mlp",
              "up_proj": "mlp", "down_proj": "down"}


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
    """One LoRA / QLoRA step as `run_one` runs it (forward through `yes_no_logits`, BCE, backward, AdamW)."""

    batch_size: int
    text_tokens: int = TEXT_TOKENS
    dtype: Literal["float32", "bfloat16"] = "bfloat16"  # of the frozen weights and activations
    quantization: Literal["none", "4bit"] = "none"  # "4bit": QLoRA, nf4 + double quantization (load_base)
    gradient_checkpointing: bool = False
    lora_r: int = 16
    lora_dropout: float = 0.05
    targets: tuple[str, ...] = PROJECTIONS
    device: Literal["cuda", "cpu"] = "cuda"  # the dropout masks: 1 byte on CUDA, 4 on CPU


@dataclasses.dataclass(frozen=True)
class ScoringSetup:
    """One no-grad forward of `LMMZeroShot.predict_proba` (no adapters)."""

    batch_size: int
    text_tokens: int = TEXT_TOKENS
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    use_cache: bool = False  # as yes_no_logits runs it; True: the forward also fills a KV cache


def linear_shapes(text: LlamaConfig) -> dict[str, tuple[int, int]]:
    """(in, out) features of each projection of one decoder layer."""
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    h, q, kv = text.hidden_size, text.num_attention_heads * head_dim, text.num_key_value_heads * head_dim
    i = text.intermediate_size
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def weight_counts(config: LlavaConfig) -> dict[str, int]:
    """Parameters: the decoder layers' projections, the rest of the language model, vision tower + projector."""
    text, vision = config.text_config, config.vision_config
    h, dv, iv = text.hidden_size, vision.hidden_size, vision.intermediate_size
    positions = (vision.image_size // vision.patch_size) ** 2 + 1
    clip_layer = 4 * (dv * dv + dv) + 2 * dv * iv + iv + dv + 4 * dv  # attention, MLP, two LayerNorms
    clip = 3 * vision.patch_size**2 * dv + dv + positions * dv + 4 * dv + vision.num_hidden_layers * clip_layer
    projector = dv * h + h * h + (2 * h if config.multimodal_projector_bias else 0)
    linear = sum(i * o for i, o in linear_shapes(text).values())
    lm_other = 2 * text.vocab_size * h + (2 * text.num_hidden_layers + 1) * h  # embeddings, head, RMSNorms
    return {"lm_linear": text.num_hidden_layers * linear, "lm_other": lm_other, "vision": clip + projector}


def lora_count(config: LlavaConfig, setup: TrainingSetup) -> int:
    shapes = linear_shapes(config.text_config)
    return config.text_config.num_hidden_layers * sum(setup.lora_r * sum(shapes[t]) for t in setup.targets)


def dropout_mask_bytes(setup: TrainingSetup) -> int:
    """Per element: CUDA's fused dropout keeps a bool mask; CPU's keeps one in the input's dtype (fp32 here)."""
    if setup.lora_dropout == 0:
        return 0  # peft puts nn.Identity in its place
    return 1 if setup.device == "cuda" else ADAPTER_BYTES


def adapter_inputs_bytes(text: LlamaConfig, setup: TrainingSetup, b: int) -> int:
    """Bytes per token that one layer's adapters keep: lora_A's input (fp32) and dropout's mask."""
    shapes, mask = linear_shapes(text), dropout_mask_bytes(setup)
    lora_a_outputs = ADAPTER_BYTES * setup.lora_r * len(setup.targets)  # kept by lora_B
    if setup.lora_dropout > 0:  # each adapter: its own dropout mask and dropped-out fp32 copy of the input
        return lora_a_outputs + sum((mask + ADAPTER_BYTES) * shapes[t][0] for t in setup.targets)
    if b == ADAPTER_BYTES:  # no cast, no dropout: adapters on one input keep it once; SDPA keeps o_proj's already
        inputs = {SAME_INPUT[t]: t for t in setup.targets if t != "o_proj"}
        return lora_a_outputs + sum(ADAPTER_BYTES * shapes[t][0] for t in inputs.values())
    return lora_a_outputs + sum(ADAPTER_BYTES * shapes[t][0] for t in setup.targets)  # one fp32 cast each


def layer_activation_bytes(text: LlamaConfig, setup: TrainingSetup, b: int) -> int:
    """Bytes per token one decoder layer keeps for backward, its residual stream in `b` bytes (SDPA: no T x T)."""
    shapes, heads = linear_shapes(text), text.num_attention_heads
    norms = 2 * (4 * text.hidden_size + 4)  # each RMSNorm keeps its input in fp32 and 1/rms
    attention = b * 2 * (shapes["q_proj"][1] + shapes["k_proj"][1]) + 4 * heads  # q, k (after RoPE), v, output, lse
    mlp = 3 * b * text.intermediate_size  # SiLU's input and output, up_proj's output
    return norms + attention + mlp + adapter_inputs_bytes(text, setup, b)


def first_layer_bytes_saved(text: LlamaConfig, setup: TrainingSetup) -> int:
    """Layer 0's input needs no gradient (frozen embeddings): its input norm and q/k/v dropout keep nothing."""
    attention_inputs = sum(1 for t in setup.targets if SAME_INPUT[t] == "attn")
    return 4 * text.hidden_size + 4 + attention_inputs * dropout_mask_bytes(setup) * text.hidden_size


def estimate_training(config: LlavaConfig, setup: TrainingSetup) -> dict[str, int]:
    """Estimated bytes live at the peak of one training step, by part (their sum is the peak).

    LoRA keeps the base in `dtype`; QLoRA keeps the decoder projections in nf4 and, as peft's
    prepare_model_for_kbit_training casts every other bf16 weight to fp32, the vision tower, projector,
    embeddings, head and norms in fp32, so its residual stream (and each activation below) is fp32 too.
    Without checkpointing the peak is at the end of the forward; with it, in the backward of the last layer.
    """
    text, vision = config.text_config, config.vision_config
    quantized = setup.quantization == "4bit"
    b, bv = (4, 4) if quantized else (BYTES[setup.dtype],) * 2  # residual stream, vision tower
    h, i, layers = text.hidden_size, text.intermediate_size, text.num_hidden_layers
    batch, seq = setup.batch_size, config.image_seq_length + setup.text_tokens
    tokens, patches = batch * seq, config.image_seq_length
    head_dim = linear_shapes(text)["q_proj"][1] // text.num_attention_heads
    counts, adapters = weight_counts(config), lora_count(config, setup)
    layer = layer_activation_bytes(text, setup, b)
    image = 2 * batch * patches * h * bv  # the projector's output and the features scattered into the prompt
    if setup.gradient_checkpointing:  # each layer's input and the embeddings, one layer recomputed
        saved = (layers + 1) * b * h * tokens + layer * tokens
        if not quantized:  # peft's enable_input_require_grads puts the (checkpointed) vision tower in the graph
            saved += vision.num_hidden_layers * batch * (patches + 1) * vision.hidden_size * bv + image
        handover = 0
    else:
        saved = (layers * layer - first_layer_bytes_saved(text, setup) + 4 * h + 4) * tokens  # + the final norm
        handover = 2 * batch * (patches + 1) * vision.hidden_size * bv + image  # two CLIP hidden states
    largest_linear = max(i * o for i, o in linear_shapes(text).values())
    working = (b * i + (ADAPTER_BYTES * i if b < ADAPTER_BYTES else 0) + (b + 12) * h) * tokens
    return {
        "lm_weights": round(counts["lm_linear"] * (NF4_BYTES if quantized else b) + counts["lm_other"] * b),
        "vision_weights": counts["vision"] * bv,
        "adapters": adapters * ADAPTER_BYTES,
        "adapter_grads": adapters * ADAPTER_BYTES,
        "adamw_states": 2 * adapters * ADAPTER_BYTES,
        "saved_activations": saved + 2 * seq * head_dim * b,  # + RoPE's cos and sin
        "image_features": handover,
        "working_set": working + (2 * largest_linear if quantized else 0),  # + a dequantized bf16 weight
        "logits": batch * text.vocab_size * (b + 4),  # the last position only (logits_to_keep=1), then fp32
    }


def estimate_scoring(config: LlavaConfig, setup: ScoringSetup) -> dict[str, int]:
    """Estimated bytes live at the peak of one no-grad scoring forward (the last decoder layer's MLP)."""
    text, vision = config.text_config, config.vision_config
    b, h, i = BYTES[setup.dtype], text.hidden_size, text.intermediate_size
    batch, seq, patches = setup.batch_size, config.image_seq_length + setup.text_tokens, config.image_seq_length
    tokens, kv = batch * seq, linear_shapes(text)["k_proj"][1]
    return {
        "weights": sum(weight_counts(config).values()) * b,
        "kv_cache": 2 * text.num_hidden_layers * kv * b * tokens if setup.use_cache else 0,
        "image_features": 2 * batch * (patches + 1) * vision.hidden_size * b + 2 * batch * patches * h * b,
        "working_set": b * (3 * i + 4 * h) * tokens,  # gate/up/product of the MLP, four residual-stream tensors
        "logits": batch * text.vocab_size * (b + 4),
    }


def fits(peak_bytes: float) -> list[str]:
    return ["yes" if peak_bytes <= (1 - HEADROOM) * size * GB else "no" for size in GPUS_GB]


def memory_rows(config: LlavaConfig, text_tokens: int) -> list[dict]:
    """The estimate table: training {LoRA bf16, QLoRA} x {checkpointing off, on} x micro-batch, then scoring."""
    rows = []
    for quantization, checkpointing, batch in itertools.product(("none", "4bit"), (False, True), (1, 2, 4, 8, 16)):
        setup = TrainingSetup(batch, text_tokens, quantization=quantization, gradient_checkpointing=checkpointing)
        parts = estimate_training(config, setup)
        static = sum(parts[key] for key in STATIC_PARTS)
        rows.append({"table": "training", "setup": "QLoRA 4-bit" if quantization == "4bit" else "LoRA bf16",
                     "checkpointing": checkpointing, "batch": batch, "static_gb": static / GB,
                     "activations_gb": (sum(parts.values()) - static) / GB, "peak_gb": sum(parts.values()) / GB})
    for batch, use_cache in itertools.product((1, 8, 16, 64, 256), (True, False)):
        parts = estimate_scoring(config, ScoringSetup(batch, text_tokens, use_cache=use_cache))
        rows.append({"table": "scoring", "batch": batch, "use_cache": use_cache, "kv_cache_gb": parts["kv_cache"] / GB,
                     "peak_gb": sum(parts.values()) / GB})
    return rows


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    align = ["---:" if isinstance(cell, (int, float)) and not isinstance(cell, bool) else "---" for cell in rows[0]]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|",
            *("| " + " | ".join(f"{c:.1f}" if isinstance(c, float) else str(c) for c in row) + " |" for row in rows)]


def memory_markdown(rows: list[dict], seq: int) -> str:
    """The two tables of `memory_rows`, every figure labelled estimated."""
    gpus = [f"fits {size} GB" for size in GPUS_GB]
    training = [[row["setup"], "on" if row["checkpointing"] else "off", row["batch"], row["static_gb"],
                 row["activations_gb"], row["peak_gb"], *fits(row["peak_gb"] * GB)]
                for row in rows if row["table"] == "training"]
    scoring = [[row["batch"], "on" if row["use_cache"] else "off", row["kv_cache_gb"], row["peak_gb"],
                *fits(row["peak_gb"] * GB)] for row in rows if row["table"] == "scoring"]
    lines = [f"Training step, {seq} tokens per row (estimated; GB = 10^9 bytes; fits: peak <= 90% of the GPU)", "",
             *markdown_table(["setup", "checkpointing", "micro-batch", "weights, adapters, grads, AdamW (estimated)",
                              "activations (estimated)", "peak (estimated)", *gpus], training),
             "", f"Scoring forward (no gradients, bf16, no adapters), {seq} tokens per row (estimated)", "",
             *markdown_table(["batch", "use_cache", "KV cache (estimated)", "peak (estimated)", *gpus], scoring)]
    return "\n".join(lines) + "\n"

def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny LLaVA on CPU (what the tests run)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--text-tokens", type=int, default=TEXT_TOKENS, help="prompt + caption tokens after the image")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--estimate", action="store_true", help="print the estimated memory table; runs nothing")
    parser.add_argument("--markdown", type=Path, help="with --estimate: also write the table to this file")
    args = parser.parse_args(argv)
    if args.markdown and not args.estimate:
        parser.error("--markdown needs --estimate")
    if args.estimate:
        config = llava_15_7b_config()
        rows = memory_rows(config, args.text_tokens)
        table = memory_markdown(rows, config.image_seq_length + args.text_tokens)
        print(table, end="")
        if args.markdown:
            args.markdown.write_text(table, encoding="utf-8")
        return rows
    rows = run(args)
    print(f"{'run':6s} {'batch':>5s} {'seq':>5s} {'step s':>8s} {'tokens/s':>9s} {'peak GB':>8s} {'est. GB':>8s} "
          f"{'TFLOP/s':>8s} {'MFU':>6s} {'MFU 6NT':>8s}")
    for row in rows:
        print(f"{row['run']:6s} {row['batch']:5d} {row['seq']:5d} {row['step_s']:8.3f} {row['tokens_per_s']:9.0f} "
              f"{row['peak_gb']:8.2f} {row['estimated_gb']:8.2f} {row['tflops']:8.1f} {row['mfu']:6.1%} "
              f"{row['mfu_6nt']:8.1%}")
    print("peak GB: torch.cuda.max_memory_allocated on a GPU (compare it with est., estimate_training's sum), the "
          "process's peak RSS on CPU; GB = 2^30 bytes")
    return rows


if __name__ == "__main__":
    main()
