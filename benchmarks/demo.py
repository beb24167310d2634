"""Wall time of the demo as a newcomer meets it: `dvc repro` in fresh clones, per stage, median of N runs.

    python benchmarks/demo.py                     # 3 clean runs of HEAD, then a no-op `dvc repro` in the last
    python benchmarks/demo.py --runs 1 --keep /tmp/demo-run

The issue's protocol: a fresh clone of the committed HEAD (no data, models or DVC cache from elsewhere), the
default scale, pretraining included, one run after the other with nothing else on the machine. A stage's
seconds run from the line where DVC starts it to the line where DVC starts the next one (or exits), so DVC's
own bookkeeping between stages is counted. Prints a markdown table (every run, the median) and whether the
runs' outputs were identical (dvc.lock's hashes: determinism on this machine).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
STAGE = re.compile(r"^Running stage '([^']+)'")


def timed_repro(clone: Path) -> tuple[dict[str, float], float]:
    """(seconds per stage, total seconds) of one `dvc repro` in `clone`, read off its output as it streams."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(clone / "src")}  # the clone's code, whatever the venv's editable install points at
    started = time.perf_counter()
    marks: list[tuple[str, float]] = []
    with subprocess.Popen(["dvc", "repro"], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:
        log = []
        for line in process.stdout:
            log.append(line)
            if match := STAGE.match(line):
                marks.append((match.group(1), time.perf_counter() - started))
    total = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"dvc repro failed in {clone} (exit {process.returncode}):\n{''.join(log[-40:])}")
    ends = [at for _, at in marks[1:]] + [total]
    return {stage: end - start for (stage, start), end in zip(marks, ends, strict=True)}, total


def fresh_clone(destination: Path) -> Path:
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(destination)], check=True)
    return destination


def lock_hashes(clone: Path) -> dict[str, str]:
    """Every output's md5 as dvc.lock records it."""
    import yaml

    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    return {out["path"]: out.get("md5", "") for stage in lock["stages"].values() for out in stage.get("outs", [])}


def markdown(runs: list[dict[str, float]], totals: list[float]) -> str:
    header = ["stage", *(f"run {i + 1}" for i in range(len(runs))), "median"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for stage in runs[0]:
        values = [run.get(stage, float("nan")) for run in runs]
        cells = [f"{value:.1f}" for value in values] + [f"{statistics.median(values):.1f}"]
        lines.append(f"| `{stage}` | " + " | ".join(cells) + " |")
    cells = [f"**{total:.0f}**" for total in [*totals, statistics.median(totals)]]
    lines.append("| **total** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="clean runs, one after the other (default 3)")
    parser.add_argument("--keep", type=Path, help="keep the last run's clone here (default: deleted)")
    args = parser.parse_args(argv)
    runs, totals, hashes = [], [], []
    with tempfile.TemporaryDirectory(prefix="hatememes-demo-") as scratch:
        for run in range(args.runs):
            clone = fresh_clone(Path(scratch) / f"run{run}")
            stages, total = timed_repro(clone)
            runs.append(stages)
            totals.append(total)
            hashes.append(lock_hashes(clone))
            print(f"run {run + 1}: {total:.0f} s", flush=True)
            if run < args.runs - 1:
                shutil.rmtree(clone)
        started = time.perf_counter()
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        subprocess.run(["dvc", "repro"], cwd=clone, env=env, check=True, capture_output=True)
        noop = time.perf_counter() - started
        if args.keep:
            shutil.copytree(clone, args.keep, symlinks=True)
    print(markdown(runs, totals))
    print(f"\nno-op `dvc repro` (everything up to date): {noop:.1f} s")
    differing = sorted(path for path in hashes[0] if any(h.get(path) != hashes[0][path] for h in hashes[1:]))
    print("outputs identical across runs" if not differing else f"outputs that differ between runs: {differing}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
