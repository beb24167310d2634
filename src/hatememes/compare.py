"""Experiments side by side: what `dvc exp run` made, as one table and one figure per split.

    python pipelines/compare.py                     # reads `dvc exp show --json` in the repository
    python pipelines/compare.py --json shown.json   # or a saved copy of it

DVC records, for the workspace, each commit and each experiment, the params.yaml it ran with and every
tracked metrics file (git tracks eval/<model>/metrics.json, so experiments carry them). From that this
module writes eval/compare.md and eval/compare.html (self-contained) and eval/compare/<split>.png:

- one table per split: a row per experiment, its AUROC per model, and the params that differ between the
  experiments (only those: the rest is shared);
- one figure per split: each experiment's AUROC per model, so that a change shows as a shift.

The dev splits come first and are the ones to choose on; the test splits are shown last, labelled as read
only to report (a setting chosen on them is tuned on test).
"""

from __future__ import annotations

import base64
import html
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hatememes.report import md_table

DEV_SPLITS = ("dev_seen", "dev_unseen")
TEST_SPLITS = ("test_seen", "test_unseen")
METRICS = "eval/{model}/metrics.json"
MISSING = "—"


@dataclass(frozen=True)
class Experiment:
    name: str  # "workspace", a branch or commit, or the experiment's name
    rev: str
    params: dict  # params.yaml as the experiment ran it
    aurocs: dict[str, dict[str, float]]  # model -> split -> AUROC


def read_shown(shown: list[dict]) -> list[Experiment]:
    """`dvc exp show --json` (DVC 3): the workspace, each commit, and each commit's experiments, in that
    order; entries whose run failed or left no metrics are skipped."""
    found = []
    for entry in shown:
        rev = entry["rev"]
        found.append(experiment(entry, entry.get("name") or (rev if rev == "workspace" else rev[:7])))
        for group in entry.get("experiments") or []:
            for revision in group.get("revs") or []:
                data = revision.get("data") or {}
                found.append(experiment(revision, revision.get("name") or data.get("name") or revision["rev"][:7]))
    return [e for e in found if e is not None and e.aurocs]


def experiment(entry: dict, name: str) -> Experiment | None:
    data = entry.get("data") or {}
    if data.get("status") == "Failed" or entry.get("error"):
        return None
    params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
    aurocs = {}
    for path, content in (data.get("metrics") or {}).items():
        parts = Path(path).parts
        if len(parts) == 3 and parts[0] == "eval" and parts[2] == "metrics.json":
            splits = (content or {}).get("data") or {}
            aurocs[parts[1]] = {split: row["auroc"] for split, row in splits.items()
                                if isinstance(row, dict) and isinstance(row.get("auroc"), (int, float))}
    return Experiment(name, entry.get("rev", name), params, {m: a for m, a in aurocs.items() if a})


def flatten(params: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differing_params(experiments: list[Experiment]) -> list[str]:
    """The dotted params whose values are not the same in every experiment (missing counts as different)."""
    flat = [flatten(e.params) for e in experiments]
    keys = sorted(set().union(*flat)) if flat else []
    return [k for k in keys if len({json.dumps(f.get(k, MISSING), sort_keys=True) for f in flat}) > 1]


def splits_with_aurocs(experiments: list[Experiment]) -> list[str]:
    present = {split for e in experiments for splits in e.aurocs.values() for split in splits}
    return [s for s in DEV_SPLITS + TEST_SPLITS if s in present]


def split_table(experiments: list[Experiment], split: str, models: list[str],
                params: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["experiment", *models, *params]
    rows = []
    for e in experiments:
        flat = flatten(e.params)
        cells = [f"{e.aurocs[m][split]:.3f}" if split in e.aurocs.get(m, {}) else MISSING for m in models]
        rows.append([e.name, *cells, *(json.dumps(flat[k]) if k in flat else MISSING for k in params)])
    return header, rows


def plot_split(experiments: list[Experiment], split: str, models: list[str], path: Path) -> None:
    """One row per experiment, one marker per model at its AUROC: a change between experiments is a shift."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 1.2 + 0.45 * len(experiments)), layout="constrained")
    axes = figure.subplots()
    markers = "osD^vP*Xh<>p"
    for index, model in enumerate(models):
        points = [(e.aurocs[model][split], row) for row, e in enumerate(experiments)
                  if split in e.aurocs.get(model, {})]
        if points:
            x, y = zip(*points, strict=True)
            axes.scatter(x, y, marker=markers[index % len(markers)], s=45, label=model, zorder=3)
    axes.axvline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    axes.set_yticks(range(len(experiments)), [e.name for e in experiments])
    axes.invert_yaxis()
    axes.set_xlabel(f"AUROC on {split}")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def split_heading(split: str) -> str:
    if split in TEST_SPLITS:
        return f"{split} (read only to report: a setting chosen here is tuned on test)"
    return f"{split} (choose settings here)"


def compare(experiments: list[Experiment], out_dir: Path) -> dict:
    """Write compare.md, compare.html and compare/<split>.png into `out_dir`; return what they show."""
    if not experiments:
        raise ValueError("no experiment with metrics: run `dvc repro` or `dvc exp run` first "
                         "(each experiment's eval/<model>/metrics.json is what is compared)")
    models = sorted({m for e in experiments for m in e.aurocs})
    params = differing_params(experiments)
    out_dir = Path(out_dir)
    splits = splits_with_aurocs(experiments)
    tables, figures = {}, {}
    for split in splits:
        tables[split] = split_table(experiments, split, models, params)
        figures[split] = out_dir / "compare" / f"{split}.png"
        plot_split(experiments, split, models, figures[split])
    intro = (f"{len(experiments)} runs: " + ", ".join(f"`{e.name}`" for e in experiments) + ". "
             + (f"Params that differ between them: {', '.join(f'`{p}`' for p in params)}."
                if params else "They ran with the same params."))
    markdown = ["# Experiments side by side", "", intro, ""]
    for split in splits:
        markdown += [f"## {split_heading(split)}", "", md_table(*tables[split]), "",
                     f"![AUROC per model and experiment on {split}](compare/{split}.png)", ""]
    (out_dir / "compare.md").write_text("\n".join(markdown), encoding="utf-8")
    (out_dir / "compare.html").write_text(render_html(intro, splits, tables, figures), encoding="utf-8")
    return {"experiments": [e.name for e in experiments], "models": models, "params": params, "splits": splits}


def render_html(intro: str, splits: list[str], tables: dict, figures: dict) -> str:
    body = ["<h1>Experiments side by side</h1>", f"<p>{html.escape(intro)}</p>"]
    for split in splits:
        header, rows = tables[split]
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        image = base64.b64encode(figures[split].read_bytes()).decode("ascii")
        body += [f"<h2>{html.escape(split_heading(split))}</h2>",
                 f'<table id="compare-{split}"><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>',
                 f'<figure><img alt="AUROC per model and experiment on {split}" src="data:image/png;base64,{image}">'
                 f"<figcaption>Each row an experiment, each marker a model's AUROC on {split}: look for the "
                 f"markers that move between rows.</figcaption></figure>"]
    style = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px}table{border-collapse:"
             "collapse;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em}th{background:#f0f0f0}"
             "figcaption{font-size:.85em;color:#555}img{max-width:100%}")
    policy = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{policy}"><title>hatememes: experiments</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def dvc_exp_show(repository: Path) -> list[dict]:
    """`dvc exp show --json` in `repository`, parsed; a clear error when DVC fails."""
    result = subprocess.run(["dvc", "exp", "show", "--json"], cwd=repository, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`dvc exp show --json` failed in {repository}: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)
