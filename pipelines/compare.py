"""Compare DVC experiments side by side: AUROC per model and experiment, and the params that differ.

    dvc exp run -n wide -S train.clip_fusion.model.projection_dim=1024
    python pipelines/compare.py            # eval/compare.md, eval/compare.html, eval/compare/<split>.png

Reads `dvc exp show --json` (the workspace, each commit and its experiments), or a saved copy (--json).
Not a DVC stage: it reads across runs. Choose settings on the dev splits; the test splits are for reporting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hatememes.compare import compare, dvc_exp_show, read_shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("."), help="the repository whose experiments to read")
    parser.add_argument("--json", type=Path, help="a saved `dvc exp show --json` instead of running it")
    parser.add_argument("--out", type=Path, default=Path("eval"), help="where compare.md/.html go")
    args = parser.parse_args(argv)
    shown = json.loads(args.json.read_text(encoding="utf-8")) if args.json else dvc_exp_show(args.repo)
    result = compare(read_shown(shown), args.out)
    print(f"compare: {len(result['experiments'])} runs, {len(result['models'])} models, "
          f"params that differ: {', '.join(result['params']) or 'none'} -> {args.out / 'compare.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
