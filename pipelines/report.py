"""Stage `report`: compare every evaluated model in one report (tables, DeLong tests, plots, error gallery).

    python pipelines/report.py --eval eval --memes data/memes --models models --out eval

Writes report.md, report.html (self-contained), summary.json, summary.md (the README's results table) and
plots/*.png into --out; numbers come from params.yaml `report` (hatememes.report.ReportParams), paths from
dvc.yaml.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hatememes import params as P
from hatememes.report import ReportParams, build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, required=True, help="the eval/ folder: eval/<model>/predictions/")
    parser.add_argument("--memes", type=Path, required=True, help="data/memes (manifest.json and meme images)")
    parser.add_argument("--out", type=Path, required=True, help="where report.md/.html, summary.json, plots/ go")
    parser.add_argument("--models", type=Path, help="models/ folder, to cite each model's params.json")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    params = P.from_arguments(args)
    config = P.section(params, "report", ReportParams)
    summary = build_report(args.eval, args.memes, args.out, config, P.resolved(params), args.models)
    for split, info in summary["splits"].items():
        best = info["best"]
        if best is not None:
            print(f"{split:12s} best {best} AUROC {info['rows'][best]['auroc']:.3f}")
    print(f"report: {args.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
