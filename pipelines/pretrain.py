"""Stage `pretrain` (demo profile): the tiny CLIP backbones, trained on the synthetic "web" corpus.

    python pipelines/pretrain.py --corpus data/corpus --out data/pretrain   # corpus from params fetch.synthetic
    python pipelines/pretrain.py --corpus some/corpus --reuse-corpus --out data/pretrain   # an existing one

Writes the corpus (`pairs.jsonl` + `images/`) to --corpus, then `<out>/<model>.safetensors` for each of
`pretrain.models` and `<out>/metrics.json` (zero-shot and linear-probe accuracy on the held-out pairs).
The corpus has its own folder so that the stages reading only the checkpoints do not depend on its 6000
images (DVC would check them for every such stage). With `pretrain.enabled: false` (the full profile) it
only writes an empty corpus folder and a metrics.json that says it skipped.
"""

from __future__ import annotations

import argparse
import json
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
    started = time.perf_counter()
    metrics = pretrain(corpus, args.out, config)
    print(json.dumps(metrics, indent=2))
    print(f"pretrain: {time.perf_counter() - started:.1f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    exit_after(main())  # without the interpreter's teardown (hatememes.process)
