"""Stage `pretrain` (demo profile): the tiny CLIP backbones and the tiny LLaVA base, trained side by side on the
synthetic "web" corpus.

    python pipelines/pretrain.py --corpus data/corpus --out data/pretrain --llava-out data/llava-tiny
    python pipelines/pretrain.py --corpus data/corpus --out data/pretrain   # the CLIP backbones only
    python pipelines/pretrain.py --corpus some/corpus --reuse-corpus --out data/pretrain   # an existing corpus

Writes the corpus (`pairs.jsonl` + `images/`, params fetch.synthetic) to --corpus, then `<out>/<model>.safetensors`
for each of `pretrain.models` and `<out>/metrics.json` (zero-shot and linear-probe accuracy on the held-out pairs).
With --llava-out, `pipelines/pretrain_llava.py` builds the LLaVA base there in a process of its own, started once
the corpus is written, while this one trains the CLIP: both models are small, so a second torch thread speeds one up
by about a fifth (the CLIP's step: 40 against 51 ms) while a second core running the other model nearly halves the
pair's time (one thread each, `pretrain.threads` and `pretrain_llava.threads`: 114 s against 182 s one after the
other on the 2-core AVX2 machine, measured). The corpus has its own folder so that the stages reading only the
checkpoints do not depend on its 6000 images (DVC would check them for every such stage). With
`pretrain.enabled: false` (the full profile) it only writes an empty corpus folder and a metrics.json that says it
skipped; the LLaVA process follows `pretrain_llava.enabled` on its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from hatememes import params as P
from hatememes.data.synthetic import SyntheticConfig, generate_pretrain_corpus
from hatememes.pretrain import PretrainParams, pretrain
from hatememes.process import exit_after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the checkpoints go (data/pretrain)")
    parser.add_argument("--corpus", type=Path, required=True, help="the corpus folder (data/corpus)")
    parser.add_argument("--reuse-corpus", action="store_true", help="--corpus holds a corpus already: use it")
    parser.add_argument("--llava-out", type=Path, help="also build the tiny LLaVA base here, beside the CLIP")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    params = P.from_arguments(args)
    config = P.section(params, "pretrain", PretrainParams)
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus
    corpus.mkdir(parents=True, exist_ok=True)
    if config.enabled and not args.reuse_corpus:
        started = time.perf_counter()
        summary = generate_pretrain_corpus(corpus, P.section(params, "fetch.synthetic", SyntheticConfig))
        print(f"corpus: {summary['pairs']} pairs in {time.perf_counter() - started:.1f}s -> {corpus}")
    llava = start_llava(args, corpus) if args.llava_out else None
    started = time.perf_counter()
    try:
        metrics = pretrain(corpus, args.out, config)
    except BaseException:
        if llava is not None:
            llava.terminate()
            llava.wait()
        raise
    print(json.dumps(metrics, indent=2))
    print(f"pretrain: {time.perf_counter() - started:.1f}s -> {args.out}")
    if llava is not None and llava.wait() != 0:
        print(f"pretrain: the tiny LLaVA base failed (pipelines/pretrain_llava.py exited {llava.returncode}; "
              "its error is above)", file=sys.stderr)
        return 1
    return 0


def start_llava(args, corpus: Path) -> subprocess.Popen:
    """`pipelines/pretrain_llava.py` on the same corpus and params, in a process of its own (its output joins
    this one's)."""
    command = [sys.executable, str(Path(__file__).with_name("pretrain_llava.py")), "--corpus", str(corpus),
               "--out", str(args.llava_out), "--params", args.params,
               *(f"--set={override}" for override in args.overrides)]
    return subprocess.Popen(command)


if __name__ == "__main__":
    exit_after(main())  # without the interpreter's teardown (hatememes.process)
