"""The full profile's real architectures, run through DVC: every stage of `dvc repro` with the full profile's
params, on a few memes per split, one optimizer step per model, random weights at the published sizes.

    pytest -m full_shapes          # about 10 minutes on 2 cores; prints each stage's time and peak RSS

The point is shapes, dtypes and formats, not numbers: the full profile has never run anywhere but on a GPU
with the licensed data, and this is the run that finds what would break there. A fresh copy of the
repository gets
- an official-layout folder (img/ + one jsonl per split; 2 memes a split, 4 in dev_seen, which the ensemble
  is fitted on), fetched with `fetch.source: local`;
- random weights at the real architectures, written to local files and named in the params exactly as an
  offline user names downloaded weights (tests/helpers/full_weights.py): open_clip ViT-L-14 (224 px), ResNet-152
  grid (448 px) and region (600 px, 36 boxes from a torchvision Faster R-CNN, its MobileNet-v3 variant: the
  ResNet-50 one costs 80 s more for the same code path) features, bert-base MMBT,
  VisualBERT as uclanlp/visualbert-vqa-coco-pre, Hate-CLIPper at its 1024 sizes, and LLaVA-1.5 with the real
  CLIP ViT-L/14-336 tower (336 px, width 1024) cut to 2 of its 24 layers, prompt and 576 image tokens on a
  Llama cut to 2 layers of width 4096, LoRA on the full profile's targets, and Qwen2-VL-7B-Instruct (its
  whole vision tower, its language model cut the same way, its chat template; the 24 x 20 px memes make 4
  image tokens each);
- params composed as `dvc exp run -S profile=full -S ...` composes them; the only overrides besides the
  weight paths and the data folder are one epoch per model, 2 ensemble folds, and LLaVA in float32 (bf16
  matmuls run at half the fp32 speed on this CPU: 29-43 s against 19 s per 615-token forward, measured);
  the zero-shot LMMs and the bf16 training loops run in bf16 where the CPU has native bf16 kernels, else in
  float32 (`native_bf16`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from full_weights import write_full_weights  # noqa: E402
from repo_copy import commit, copy_repository, run  # noqa: E402

from conftest import write_official  # noqa: E402

pytestmark = [pytest.mark.full_shapes, pytest.mark.slow]

def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX). Where it does, the zero-shot LMMs score
    in the full profile's bf16 (18 s for llava_zeroshot against 68 s in fp32, measured on such a CPU); where it does
    not, torch emulates bf16, and llava_zeroshot took 531 s (an AVX2 AMD EPYC, measured): they score in fp32 there,
    and the loops that train in bf16 autocast (mmbt's ResNet-152 among them: 152 s) train in fp32."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    return bool(flags & {"avx512_bf16", "amx_bf16"})


SIZES = {"train": 2, "dev_seen": 4, "dev_unseen": 2, "test_seen": 2, "test_unseen": 2}
TORCH_MODELS = ("clip_fusion", "rgcl", "rgcl_bce_only", "mmbt", "visualbert", "llava_lora", "lmm_lora", "lmm_rgcl",
                "course_lstm", "course_transformer", "image_grid", "image_region", "text_bert", "concat_bert")
OVERRIDES = [  # one epoch and one seed each: the point is shapes, dtypes and formats
    *(f"train.{model}.loop.epochs=1" for model in TORCH_MODELS),
    *(f"train.{model}.loop.seeds=[]" for model in TORCH_MODELS),
    "train.course_mlp.model.seeds=[]", "train.course_cnn.model.seeds=[]",
    *(f"train.{model}.model.dtype=float32" for model in ("llava_lora", "lmm_lora")),  # training: fp32 on CPU
    # where bf16 is emulated, the zero-shot LMMs score and the mixed-precision loops train in fp32 (below)
    *([] if native_bf16() else [f"train.{model}.model.dtype=float32" for model in ("llava_zeroshot", "lmm_zeroshot")]),
    *([] if native_bf16() else [f"train.{model}.loop.mixed_precision=no" for model in TORCH_MODELS]),
    *(f"train.{model}.loop.mixed_precision=no" for model in ("llava_lora", "lmm_lora")),
    "ensemble.n_folds=2",
]


def stage_names(repository: Path) -> list[str]:
    """Every stage of dvc.yaml in an order `dvc repro` may run them (each after what it depends on)."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repository)) as repo:
        return [stage.name for stage in reversed(list(nx.topological_sort(repo.index.graph)))]


def run_stage(repository: Path, stage: str) -> tuple[float, float, str]:
    """`dvc repro --single-item STAGE` in a process of its own: (seconds, peak RSS of its children in GB, log)."""
    probe = ("import resource, subprocess, sys\n"
             "result = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "sys.stdout.write(result.stdout + result.stderr)\n"
             "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.exit(result.returncode)\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", probe, "dvc", "repro", "--single-item", stage], cwd=repository,
                            env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    peak = next((int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("PEAK_RSS_KB")), 0)
    assert result.returncode == 0, f"{stage} failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    return seconds, peak / 2**20, result.stdout


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> dict:
    from hatememes.params import compose

    repository = copy_repository(tmp_path_factory.mktemp("full") / "hatememes")
    (repository / "dvc.lock").unlink(missing_ok=True)
    data = repository.parent / "hateful_memes"
    write_official(data, SIZES)
    started = time.perf_counter()
    weights = write_full_weights(repository.parent / "weights")
    print(f"\nrandom weights written in {time.perf_counter() - started:.0f} s")
    compose(["profile=full", f"fetch.path={data}", *weights, *OVERRIDES], repository / "conf",
            repository / "params.yaml")
    commit(repository, "the full profile, composed")
    timings = {}
    print(f"{'stage':<28} {'seconds':>8} {'peak RSS GB':>12}")
    for stage in stage_names(repository):
        seconds, peak, _ = run_stage(repository, stage)
        timings[stage] = (seconds, peak)
        print(f"{stage:<28} {seconds:8.1f} {peak:12.2f}", flush=True)
    print(f"{'all stages':<28} {sum(s for s, _ in timings.values()):8.1f}")
    memes = sum(SIZES.values())
    print(f"{'on disk':<28} {'MB':>8} {'MB per meme':>12}")
    for folder in [*sorted((repository / "data" / "features").iterdir()), *sorted((repository / "models").iterdir())]:
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
        per_meme = f"{size / memes:12.3f}" if folder.parent.name == "features" else ""
        print(f"{folder.relative_to(repository).as_posix():<28} {size:8.1f} {per_meme}")
    return {"repository": repository, "timings": timings}


def test_every_stage_runs_and_dvc_is_up_to_date(full_run):
    output = run(["dvc", "status"], full_run["repository"]).stdout
    assert "up to date" in output, output


def test_the_params_that_ran_are_the_full_profiles(full_run):
    """What DVC records is what ran: dvc.lock's params for a model equal its resolved params.json."""
    repository = full_run["repository"]
    from hatememes.params import read_yaml

    lock = read_yaml(repository / "dvc.lock")  # YAML 1.2, as DVC writes it (PyYAML reads 1e-05 as a string)
    for model in ("mmbt", "llava_lora", "clip_fusion"):
        ran = json.loads((repository / "models" / model / "params.json").read_text())
        assert ran["profile"] == "full"
        locked = lock["stages"][f"train@{model}"]["params"]["params.yaml"][f"train.{model}"]
        assert locked == ran["train"][model]
    mmbt = json.loads((repository / "models" / "mmbt" / "params.json").read_text())["train"]["mmbt"]
    assert mmbt["model"]["max_text_length"] == 128 and mmbt["model"]["image_features"] == "grid"  # the profile's
    assert mmbt["loop"]["epochs"] == 1  # the full profile sets 83; the -S override ran, not the profile's value


def test_features_have_the_real_shapes(full_run):
    from safetensors import safe_open

    features = full_run["repository"] / "data" / "features"
    meta = {kind: json.loads((features / kind / "meta.json").read_text()) for kind in ("clip", "grid", "regions")}
    assert meta["clip"]["dim"] == 768
    assert (meta["clip"]["image_pooled_dim"], meta["clip"]["text_pooled_dim"]) == (1024, 768)  # Hate-CLIPper's inputs
    lmm = json.loads((features / "lmm" / "meta.json").read_text())  # lmm_features.model: lmm_lora, the full's
    assert (lmm["model_name"], lmm["dim"]) == ("lmm_lora", 3584)  # Qwen2-VL-7B's hidden size
    assert "detector fasterrcnn_mobilenet_v3_large_fpn" in meta["regions"]["box_source"]
    shapes = {}
    for kind in ("grid", "regions"):
        (first,) = sorted((features / kind).glob("*.safetensors"))[:1]
        with safe_open(str(first), "pt") as file:
            shapes[kind] = {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}
    assert shapes["grid"]["grid"][1:] == (2048, 3, 3), shapes  # ResNet-152's 14 x 14 map at 448 px, pooled 3 x 3
    assert shapes["regions"]["regions"][1:] == (36, 2048) and shapes["regions"]["boxes"][1:] == (36, 6), shapes


def test_every_model_scored_every_meme(full_run):
    repository = full_run["repository"]
    for model in (*TORCH_MODELS, "clip_linear_image", "clip_linear_text", "clip_zeroshot", "course_mlp", "course_cnn",
                  "llava_zeroshot", "lmm_zeroshot", "rgcl_knn", "lmm_rgcl_knn", "ensemble", "late_fusion"):
        metrics = json.loads((repository / "eval" / model / "metrics.json").read_text())
        for split, size in SIZES.items():
            if split != "train" or model not in ("ensemble", "late_fusion"):
                assert metrics[split]["n"] == size, (model, split)
    assert (repository / "eval" / "report.html").is_file()


@pytest.mark.parametrize("model, weights", [("llava_lora", "llava-1.5-7b-hf"), ("lmm_lora", "Qwen2-VL-7B-Instruct")])
def test_the_lora_checkpoint_holds_the_adapters_not_the_base(full_run, model, weights):
    folder = full_run["repository"] / "models" / model
    base = sum(f.stat().st_size for f in (full_run["repository"].parent / "weights" / weights).rglob("*"))
    saved = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    # the adapters (r 128 on the 2 layers kept), their AdamW state and the best copy: a fifth of this cut base,
    # under a thousandth of the real one; a checkpoint that held the base would outweigh it
    assert saved < base / 2, f"models/{model} holds {saved / 1e9:.2f} GB against a {base / 1e9:.2f} GB base"


def test_peak_memory_is_printed_and_sane(full_run):
    assert all(peak > 0 for _, peak in full_run["timings"].values())
    assert max(peak for _, peak in full_run["timings"].values()) < 20, "more than 20 GB RSS on the CPU run"
