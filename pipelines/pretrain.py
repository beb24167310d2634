"""Stage `pretrain` (demo profile): the tiny CLIP backbones, trained on the synthetic "web" corpus.

    python pipelines/pretrain.py --out data/pretrain                       # corpus from params fetch.synthetic
    python pipelines/pretrain.py --out data/pretrain --corpus some/corpus  # an existing corpus (pairs.jsonl)

Writes `<out>/corpus/` (unless --corpus is given), `<out>/<model>.safetensors` for each of `pretrain.models`
and `<out>/metrics.json` (zero-shot and linear-probe accuracy on the held-out pairs). With
`pretrain.enabled: false` (the full profile) it only writes a metrics.json that says it skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hatememes import params as P
from hatememes.data.synthetic import SyntheticConfig, generate_pretrain_corpus
from hatememes.pretrain import PretrainParams, pretrain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the checkpoints go (data/pretrain)")
    parser.add_argument("--corpus", type=Path, help="an existing corpus folder; default: generate <out>/corpus")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    params = P.from_arguments(args)
    config = P.section(params, "pretrain", PretrainParams)
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus
    if config.enabled and corpus is None:
        corpus = args.out / "corpus"
        started = time.perf_counter()
        summary = generate_pretrain_corpus(corpus, P.section(params, "fetch.synthetic", SyntheticConfig))
        print(f"corpus: {summary['pairs']} pairs in {time.perf_counter() - started:.1f}s -> {corpus}")
    metrics = pretrain(corpus, args.out, config)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
