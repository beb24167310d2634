"""Stage `lmm_features`: the fine-tuned LMM's last-token hidden state of every meme, for LMM-RGCL's second stage.

    python pipelines/lmm_features.py --model models/llava_lora --memes data/memes --out data/features/lmm

Writes `<out>/<split>.safetensors` ("hidden" (N, H) and the ids, rows in the order of `<memes>/<split>.jsonl`)
and `<out>/meta.json` (`hatememes.features.lmm`). Scores in batches of the model's own
`train.<model>.loop.eval_batch_size`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hatememes.files import report_write_error
from hatememes.process import exit_after
from hatememes.progress import quiet_library_bars


def main(argv: list[str] | None = None) -> int:
    quiet_library_bars()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/llava_lora"), help="a trained llava_lora folder")
    parser.add_argument("--memes", type=Path, default=Path("data/memes"))
    parser.add_argument("--out", type=Path, default=Path("data/features/lmm"))
    args = parser.parse_args(argv)
    try:
        from hatememes.features.lmm import extract_lmm_features
        from hatememes.inference import eval_batch_size

        meta = extract_lmm_features(args.model, args.memes, args.out, eval_batch_size(args.model))
    except Exception as error:
        return report_write_error("lmm_features", args.out, error)
    print(f"lmm_features: hidden ({meta['dim']},) per meme from {args.model} -> {args.out}")
    return 0


if __name__ == "__main__":
    exit_after(main())  # without the interpreter's teardown (hatememes.process)
