"""Copy the results tables into README.md, or check that they are current.

    python -m hatememes.readme_results                          # rewrite README.md's results blocks
    python -m hatememes.readme_results --second-world ../world  # record a demo reproduced in another world
    python -m hatememes.readme_results --check                  # exit 1 when a block is stale

The first block (between `<!-- results:start -->` and `<!-- results:end -->`) is rebuilt with
`hatememes.report.results_markdown` from the eval/<name>/metrics.json files (git tracks them; no
predictions needed), grouped by family (params.yaml `report.families`) as the report's tables: the table the
report stage writes to eval/summary.md. The second (`<!-- second-world:... -->`) shows the test_unseen
AUROCs of the demo reproduced in another world (params `WORLD_SEEDS` set to another seed, as the e2e test
does), recorded in docs/second-world.json by `--second-world REPOSITORY` from that repository's params.yaml
and eval/*/metrics.json. Not a DVC stage: it edits files the user commits, after `dvc repro`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hatememes import params as P
from hatememes.report import FAMILIES, MISSING, ReportParams, grouped_order, results_markdown

START, END = "<!-- results:start -->", "<!-- results:end -->"
SECOND_START, SECOND_END = "<!-- second-world:start -->", "<!-- second-world:end -->"
SECOND_WORLD = Path("docs/second-world.json")


def block_span(text: str, start_marker: str = START, end_marker: str = END) -> tuple[int, int]:
    """Where the block's content starts and ends in `text` (between the two marker lines)."""
    start, end = text.find(start_marker + "\n"), text.find("\n" + end_marker)
    if start < 0 or end < start or text.count(start_marker) != 1 or text.count(end_marker) != 1:
        raise ValueError(f"expected one line {start_marker!r}, then one line {end_marker!r}")
    return start + len(start_marker) + 1, end + 1


def replace_block(text: str, table: str, start_marker: str = START, end_marker: str = END) -> str:
    start, end = block_span(text, start_marker, end_marker)
    return text[:start] + table + text[end:]


def report_params(params_path: str, overrides: list[str]) -> ReportParams:
    return P.section(P.load_params(params_path, overrides), "report", ReportParams)


def second_world_record(repository: Path) -> dict:
    """The seeds and every model's metrics of the demo reproduced in `repository`."""
    params = P.load_params(repository / "params.yaml")
    paths = sorted((repository / "eval").glob("*/metrics.json"))
    if not paths:
        raise FileNotFoundError(f"{repository / 'eval'}: no */metrics.json (run `dvc repro` there first)")
    return {"seeds": {key: P.lookup(params, key) for key in P.WORLD_SEEDS},
            "metrics": {path.parent.name: json.loads(path.read_text(encoding="utf-8")) for path in paths}}


SECOND_WORLD_SPLITS = ("test_unseen",)  # what the bars read; the first table has every split


def second_world_table(record: dict, models: tuple[str, ...] = (), families: dict[str, str] | None = None) -> str:
    """AUROC of every model on test_unseen in the second world (no intervals: the first table has them),
    in the first table's order (grouped by family, best first on test_unseen), as one paragraph: the README
    stays short."""
    metrics = record["metrics"]
    names = [n for n in models if n in metrics] if models else sorted(metrics)
    auroc = {n: metrics[n]["test_unseen"]["auroc"] for n in names
             if (metrics[n].get("test_unseen") or {}).get("auroc") is not None}
    names = grouped_order(names, auroc, FAMILIES if families is None else families)

    def cell(entry: dict | None) -> str:
        return MISSING if not entry or entry.get("auroc") is None else f"{entry['auroc']:.3f}"

    seeds = ", ".join(f"`{key}={value}`" for key, value in record["seeds"].items())
    values = ", ".join(f"{name} " + " / ".join(cell(metrics[name].get(split)) for split in SECOND_WORLD_SPLITS)
                       for name in names)
    return f"Second world ({seeds}), AUROC on {' / '.join(SECOND_WORLD_SPLITS)}: {values}.\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="default: README.md")
    parser.add_argument("--eval", type=Path, default=Path("eval"), help="the eval/ folder (default: eval)")
    parser.add_argument("--second-world", type=Path, metavar="REPOSITORY",
                        help=f"a copy of this repository reproduced in another world: record it in {SECOND_WORLD}")
    parser.add_argument("--record", type=Path, default=SECOND_WORLD, help=f"default: {SECOND_WORLD}")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a block is stale")
    P.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.second_world and args.check:
        parser.error("--second-world writes a record; --check changes nothing")
    if args.second_world:
        args.record.write_text(json.dumps(second_world_record(args.second_world), indent=1) + "\n", encoding="utf-8")
        print(f"{args.record}: the second world of {args.second_world}")
    text = args.readme.read_text(encoding="utf-8")
    report = report_params(args.params, args.overrides)
    models = report.models
    try:
        updated = replace_block(text, results_markdown(args.eval, models, report.families))
        if args.record.is_file():
            record = json.loads(args.record.read_text(encoding="utf-8"))
            updated = replace_block(updated, second_world_table(record, models, report.families), SECOND_START,
                                    SECOND_END)
    except ValueError as error:
        print(f"{args.readme}: {error}", file=sys.stderr)
        return 2
    if updated == text:
        print(f"{args.readme}: results blocks are current")
        return 0
    if args.check:
        print(f"{args.readme}: a results block differs from {args.eval}/*/metrics.json or {args.record}; run "
              f"`python -m hatememes.readme_results` and commit README.md with eval/ and dvc.lock", file=sys.stderr)
        return 1
    args.readme.write_text(updated, encoding="utf-8")
    print(f"{args.readme}: results blocks rewritten from {args.eval}/*/metrics.json and {args.record}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
