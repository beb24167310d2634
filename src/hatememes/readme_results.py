"""Copy the results table into README.md, or check that it is current.

    python -m hatememes.readme_results            # rewrite README.md's results block
    python -m hatememes.readme_results --check    # exit 1 when the block differs from eval/*/metrics.json

The block is the text between `<!-- results:start -->` and `<!-- results:end -->`. It is rebuilt with
`hatememes.report.results_markdown` from the eval/<name>/metrics.json files (git tracks them; no
predictions needed), in the order of params.yaml `report.models`: the table the report stage writes to
eval/summary.md. Not a DVC stage: it edits a file the user commits, after `dvc repro`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hatememes import params as P
from hatememes.report import ReportParams, results_markdown

START, END = "<!-- results:start -->", "<!-- results:end -->"


def block_span(text: str) -> tuple[int, int]:
    """Where the block's content starts and ends in `text` (between the two marker lines)."""
    start, end = text.find(START + "\n"), text.find("\n" + END)
    if start < 0 or end < start or text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"expected one line {START!r}, then one line {END!r}")
    return start + len(START) + 1, end + 1


def replace_block(text: str, table: str) -> str:
    start, end = block_span(text)
    return text[:start] + table + text[end:]


def current_table(eval_dir: Path, params_path: str, overrides: list[str]) -> str:
    config = P.section(P.load_params(params_path, overrides), "report", ReportParams)
    return results_markdown(eval_dir, config.models)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="default: README.md")
    parser.add_argument("--eval", type=Path, default=Path("eval"), help="the eval/ folder (default: eval)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when the block is stale")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    table = current_table(args.eval, args.params, args.overrides)
    try:
        updated = replace_block(text, table)
    except ValueError as error:
        print(f"{args.readme}: {error}", file=sys.stderr)
        return 2
    if updated == text:
        print(f"{args.readme}: results block is current")
        return 0
    if args.check:
        print(f"{args.readme}: the results block differs from {args.eval}/*/metrics.json; run "
              f"`python -m hatememes.readme_results` and commit README.md with eval/ and dvc.lock", file=sys.stderr)
        return 1
    args.readme.write_text(updated, encoding="utf-8")
    print(f"{args.readme}: results block rewritten from {args.eval}/*/metrics.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
