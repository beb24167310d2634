"""The memory estimate of benchmarks/llava.py: its terms, and its peak against a measured one on CPU.

The measured peak is the peak of tensor memory: the live tensors when the profiled call starts plus the running
sum of the allocations and frees the profiler records during it (RSS would add the allocator's caches).
"""

import importlib.util
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from hatememes.models.lmm import LMMLoRAConfig, add_lora, llava_15_7b_config, yes_no_logits

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from full_weights import llava_smoke_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def load_benchmark():
    path = Path(__file__).parents[1] / "benchmarks" / "llava.py"
    spec = importlib.util.spec_from_file_location("llava_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_benchmark()


def small_config() -> LlavaConfig:
    """llava-1.5's CLIP ViT-L/14-336 cut to 2 layers + a 2-layer Llama of width 1024 (head_dim 128, as in 7B)."""
    full = llava_15_7b_config()
    vision = CLIPVisionConfig(**{**full.vision_config.to_dict(), "num_hidden_layers": 2})
    text = LlamaConfig(hidden_size=1024, intermediate_size=2752, num_hidden_layers=2, num_attention_heads=8,
                       num_key_value_heads=8, vocab_size=32064, max_position_embeddings=4096)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000, image_seq_length=576,
                       vision_feature_layer=-2, vision_feature_select_strategy="default")


def test_kv_cache_is_two_layers_tokens_width_bytes_batch():
    config, layers, hidden = llava_15_7b_config(), 32, 4096
    for batch, text_tokens in ((1, 64), (16, 40), (256, 64)):
        seq = 576 + text_tokens
        scoring = bench.estimate_scoring(config, bench.ScoringSetup(batch, text_tokens, use_cache=True))
        assert scoring["kv_cache"] == 2 * layers * seq * hidden * 2 * batch
        no_cache = bench.ScoringSetup(batch, text_tokens)  # the default, as yes_no_logits runs
        assert bench.estimate_scoring(config, no_cache)["kv_cache"] == 0


def test_7b_scoring_cache_at_batch_256_is_about_86_gb():
    config = llava_15_7b_config()
    with_cache = bench.estimate_scoring(config, bench.ScoringSetup(256, text_tokens=64, use_cache=True))
    without = bench.estimate_scoring(config, bench.ScoringSetup(256, text_tokens=64, use_cache=False))
    assert 0.9 * 86e9 < with_cache["kv_cache"] < 1.1 * 86e9
    assert sum(with_cache.values()) > 0.9 * 80e9 > sum(without.values())  # the cache alone rules out an 80 GB GPU


def test_checkpointing_lowers_the_training_estimate():
    config = llava_15_7b_config()
    for quantization in ("none", "4bit"):
        for batch in (1, 8, 16):
            peaks = [sum(bench.estimate_training(config, bench.TrainingSetup(
                batch, quantization=quantization, gradient_checkpointing=on)).values()) for on in (False, True)]
            assert peaks[1] < peaks[0]


def test_qlora_keeps_the_language_model_in_under_a_third_of_the_bf16_bytes():
    config = llava_15_7b_config()
    bf16 = bench.estimate_training(config, bench.TrainingSetup(8))
    nf4 = bench.estimate_training(config, bench.TrainingSetup(8, quantization="4bit"))
    assert nf4["lm_weights"] < 0.35 * bf16["lm_weights"]
    assert nf4["vision_weights"] == 2 * bf16["vision_weights"]  # prepare_model_for_kbit_training: fp32


@pytest.mark.parametrize("make_config", [llava_15_7b_config, small_config, bench.tiny_config])
def test_weight_counts_from_the_config_match_the_model(make_config):
    config = make_config()
    counts = bench.weight_counts(config)
    model_counts = bench.parameter_counts(config, LMMLoRAConfig(lora_r=16))  # counted on the meta device
    norms = 2 * config.text_config.num_hidden_layers * config.text_config.hidden_size
    assert counts["lm_linear"] + norms == model_counts["lm"]
    assert bench.lora_count(config, bench.TrainingSetup(1, lora_r=16)) == model_counts["lora"]
    assert sum(counts.values()) == model_counts["all"] - model_counts["lora"]


@pytest.mark.parametrize("lora_dropout", [0.05, 0.0])
def test_saved_activations_are_what_autograd_keeps(lora_dropout):
    """The per-layer formula against the tensors autograd saves in a tiny LLaVA's forward (fp32, CPU)."""
    config, batch_size, text_tokens = bench.tiny_config(), 3, 12
    torch.manual_seed(0)
    model = add_lora(LlavaForConditionalGeneration(config), LMMLoRAConfig(dtype="float32", lora_dropout=lora_dropout))
    batch = bench.make_batch(config, batch_size, text_tokens, "cpu")
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        F.binary_cross_entropy_with_logits(yes_no_logits(model, batch, (1, 2)), batch["labels"])
    setup = bench.TrainingSetup(batch_size, text_tokens, dtype="float32", lora_dropout=lora_dropout, device="cpu")
    estimated = bench.estimate_training(config, setup)["saved_activations"]
    assert estimated == pytest.approx(sum(saved.values()), rel=0.01)


def live_bytes(*groups) -> int:
    """Bytes of the distinct storages behind the given tensors."""
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for g in groups for t in g}.values())


def tensor_peak_bytes(fn) -> int:
    """The highest running sum of tensor allocations minus frees while fn() runs (CPU profiler)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
        fn()

    def walk(nodes):
        for node in nodes:
            yield node
            yield from walk(node.children)

    events = walk(prof.profiler.kineto_results.experimental_event_tree())
    allocations = sorted((e.start_time_ns, e.extra_fields.alloc_size) for e in events if e.tag == _EventType.Allocation)
    total = peak = 0
    for _, size in allocations:
        total += size
        peak = max(peak, total)
    return peak


def check(name: str, measured: int, estimated: int) -> None:
    print(f"{name}: measured {measured / 1e6:.1f} MB, estimated {estimated / 1e6:.1f} MB ({estimated / measured:.2f}x)")
    assert estimated == pytest.approx(measured, rel=0.3)


def check_training_step(config: LlavaConfig, batch_size: int, lora: LMMLoRAConfig, name: str) -> None:
    """One LoRA step (yes/no logits, BCE, backward, AdamW) under the profiler against `estimate_training`, in
    all and above the weights and AdamW's states."""
    torch.manual_seed(0)
    model = add_lora(LlavaForConditionalGeneration(config), lora)
    batch = bench.make_batch(config, batch_size, bench.TEXT_TOKENS, "cpu")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1.0e-4)
    for p in trainable:  # AdamW's states exist from the first step on: make them without a forward
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    def step():
        logits = yes_no_logits(model, batch, bench.ANSWER_IDS)
        F.binary_cross_entropy_with_logits(logits, batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    states = [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    static = live_bytes(model.parameters(), model.buffers(), batch.values(), states)
    measured = static + tensor_peak_bytes(step)
    setup = bench.TrainingSetup(batch_size, dtype=lora.dtype, gradient_checkpointing=lora.gradient_checkpointing,
                                lora_r=lora.lora_r, lora_dropout=lora.lora_dropout, device="cpu")
    parts = bench.estimate_training(config, setup)
    static_parts = ("lm_weights", "vision_weights", "adapters", "adamw_states")
    check(name, measured, sum(parts.values()))
    check(f"{name}, above weights and AdamW", measured - static,
          sum(parts.values()) - sum(parts[key] for key in static_parts))


def check_scoring(config: LlavaConfig, batch_size: int, use_cache: tuple[bool, ...], name: str) -> None:
    """One scoring forward (the last position's logits) under the profiler against `estimate_scoring`."""
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    batch = bench.make_batch(config, batch_size, bench.TEXT_TOKENS, "cpu")
    static = live_bytes(model.parameters(), model.buffers(), batch.values())
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")}
    for cache in use_cache:
        with torch.no_grad():
            peak = tensor_peak_bytes(partial(model, **inputs, logits_to_keep=1, use_cache=cache))
        parts = bench.estimate_scoring(config, bench.ScoringSetup(batch_size, dtype="float32", use_cache=cache))
        check(f"{name}, use_cache {cache}", static + peak, sum(parts.values()))
        check(f"{name}, use_cache {cache}, above weights", peak, sum(parts.values()) - parts["weights"])


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_step_peak_matches_the_estimate(checkpointing):
    lora = LMMLoRAConfig(dtype="float32", gradient_checkpointing=checkpointing)  # lora_dropout 0.05, as params
    check_training_step(small_config(), 2, lora, f"training, checkpointing {checkpointing}")


@pytest.mark.slow
def test_scoring_forward_peak_matches_the_estimate():
    check_scoring(small_config(), 2, (True, False), "scoring")


@pytest.mark.slow
def test_the_estimate_holds_at_the_smoke_runs_shapes():
    """The estimate against the profiler at the full-shapes smoke run's LLaVA: the full profile's LoRA (r 128,
    gradient checkpointing) in fp32, as the smoke run trains it on CPU, on its 2 training memes a step; and its
    scoring forward, without the cache, as the pipeline scores."""
    lora = LMMLoRAConfig(dtype="float32", lora_r=128, lora_alpha=256, gradient_checkpointing=True)
    check_training_step(llava_smoke_config(), 2, lora, "smoke-run shapes, training")
    check_scoring(llava_smoke_config(), 2, (False,), "smoke-run shapes, scoring")


def test_estimate_mode_prints_and_writes_the_7b_table(tmp_path, capsys):
    rows = bench.main(["--estimate", "--markdown", str(tmp_path / "memory.md")])
    table = (tmp_path / "memory.md").read_text()
    assert table == capsys.readouterr().out
    assert len([row for row in rows if row["table"] == "training"]) == 2 * 2 * 5
    assert len([row for row in rows if row["table"] == "scoring"]) == 5 * 2
    assert table.count("| LoRA bf16 |") == 10 and table.count("| QLoRA 4-bit |") == 10
    assert "(estimated" in table


def test_the_docs_memory_tables_are_the_estimate_modes_output(tmp_path):
    """docs/llava.md shows `python benchmarks/llava.py --estimate --markdown FILE`'s tables, as they stand."""
    bench.main(["--estimate", "--markdown", str(tmp_path / "memory.md")])
    tables = (tmp_path / "memory.md").read_text().strip()
    docs = (Path(__file__).parents[1] / "docs" / "llava.md").read_text()
    assert tables in docs, "docs/llava.md's memory tables are stale: rerun the estimate mode and paste them"


def test_the_full_profile_scores_llava_7b_in_batches_that_fit_without_the_cache(tmp_path):
    """LLaVA-7B scores at most 16 memes a forward pass in the full profile (the estimate: 15.3 GB at 16, no
    KV cache), whichever model scores it."""
    from hatememes.params import compose, load_params

    full = load_params(compose(["profile=full"], Path(__file__).parents[1] / "conf", tmp_path / "params.yaml"))
    assert full["train"]["llava_lora"]["loop"]["eval_batch_size"] <= 16
    assert full["train"]["llava_zeroshot"]["model"]["batch_size"] <= 16
