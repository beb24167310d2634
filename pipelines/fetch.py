"""Stage `fetch`: the Hateful Memes data, validated, in the official layout under data/memes/.

    python pipelines/fetch.py --out data/memes                       # params.yaml `fetch` decides the source
    python pipelines/fetch.py --out data/memes --source local --path ~/hateful_memes

Sources: synthetic (the demo world), local (official, MMF or Phase-1 layout), zip (the official archive;
password in HATEMEMES_ZIP_PASSWORD), hub (a HuggingFace dataset repo; token in HF_TOKEN). The WOAH 2021
fine-grained annotations come from `fetch.fine_grained` (a folder), or from the demo world itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from hatememes import params as P
from hatememes.data.memes import BadRecordsError
from hatememes.data.sources import FetchParams, fetch
from hatememes.files import report_write_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the memes (data/memes)")
    parser.add_argument("--source", choices=["synthetic", "local", "zip", "hub"], help="override fetch.source")
    parser.add_argument("--path", help="override fetch.path (the folder or archive)")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    config = P.section(P.from_arguments(args), "fetch", FetchParams)
    changes = {key: value for key, value in (("source", args.source), ("path", args.path)) if value}
    config = dataclasses.replace(config, **changes)
    try:
        manifest = fetch(config, args.out)
    except BadRecordsError as error:
        print(f"fetch: {error}\n(set fetch.on_bad_record: skip to keep the valid records and list these "
              "in manifest.json)", file=sys.stderr)
        return 1
    except Exception as error:
        return report_write_error("fetch", args.out, error)
    for split, info in manifest["splits"].items():
        print(f"{split:12s} {info['count']:6d} memes  {info['hateful']:5d} hateful  {info['rejected']} rejected")
    for split, info in manifest.get("fine_grained", {}).get("splits", {}).items():
        categories = "  ".join(f"{label} {count}" for label, count in info["pc"].items())
        print(f"{split:12s} {info['count']:6d} annotated  {info['rejected']} rejected  {categories}")
    for split, oracle in manifest.get("oracles", {}).items():
        print(f"{split:12s} oracle AUROC: text-only {oracle['text_only']:.3f}  image-only {oracle['image_only']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
