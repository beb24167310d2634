"""The tiny LLaVA base that `llava_zeroshot` and `llava_lora` start from (demo profile); the `pretrain` stage runs
it beside the tiny CLIP (`pipelines/pretrain.py --llava-out`).

    python pipelines/pretrain_llava.py --corpus data/corpus --out data/llava-tiny

Builds a LLaVA (CLIP vision tower + Llama, hidden 64) from a config, trains its BPE tokenizer and pretrains
it on the corpus that `pipelines/pretrain.py` writes (`hatememes.models.llava_tiny`), then saves model and processor
with `save_pretrained`: `train.llava_*.model.base` points at `<out>` exactly as the full profile points at
`llava-hf/llava-1.5-7b-hf`. With `pretrain_llava.enabled: false` (the full profile) it only writes
`<out>/pretrain_log.json` saying it skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hatememes import params as P
from hatememes.models.llava_tiny import PretrainLlavaParams, build_tiny_base
from hatememes.process import exit_after
from hatememes.progress import quiet_library_bars
from hatememes.threads import cpu_threads


def main(argv: list[str] | None = None) -> int:
    quiet_library_bars()  # transformers' and the Hub's bars would write carriage returns into a log
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="the pretrain stage's corpus (pairs.jsonl)")
    parser.add_argument("--out", type=Path, required=True, help="where the base goes (data/llava-tiny)")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    config = P.section(P.from_arguments(args), "pretrain_llava", PretrainLlavaParams)
    args.out.mkdir(parents=True, exist_ok=True)
    if not config.enabled:
        log = {"skipped": True, "reason": "pretrain_llava.enabled is false (a published base is used)"}
        (args.out / "pretrain_log.json").write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
        print(log["reason"])
        return 0
    if not (args.corpus / "pairs.jsonl").is_file():
        print(f"pretrain_llava: {args.corpus / 'pairs.jsonl'}: not found (run the pretrain stage)", file=sys.stderr)
        return 1
    started = time.perf_counter()
    with cpu_threads(config.threads):
        build_tiny_base(args.corpus, args.out, config.tiny)
    seconds = time.perf_counter() - started
    log = json.loads((args.out / "pretrain_log.json").read_text(encoding="utf-8"))
    probe = {key: figure(value) for key, value in (log["answer_probe"] or {}).items()}
    print(f"tiny LLaVA base in {seconds:.1f} s: held-out match question AUROC {figure(log['heldout_match_auroc'])}; "
          f"linear probes of the meme prompt's answer position: image object {probe.get('image_object', 'n/a')}, "
          f"quoted text's object {probe.get('text_object', 'n/a')} -> {args.out}")
    return 0


def figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    exit_after(main())  # without the interpreter's teardown (hatememes.process)
