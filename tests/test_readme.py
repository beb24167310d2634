"""Every shell command the README shows is run by a test, or named here as needing what CI lacks.

The README's ```bash blocks are split into commands (`&&` and `;` separate them, `#` starts a comment).
Each one must be in exactly one of these lists:
- RUN_IN_THE_DEMO: run literally, in order, by `tests/test_e2e.py::test_every_readme_command_runs` in the
  copy where the demo was just reproduced (the files a user would bring, meme.png and new_memes.jsonl,
  are made there from demo memes first);
- RUN_BY_CI: run literally by `.ci/run` (checked below against its text);
- NOT_RUN: with the reason no machine of CI's kind can run it.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]

RUN_IN_THE_DEMO = [
    "dvc repro",
    "dvc metrics show",
    "dvc plots show",
    "dvc exp run -S train.clip_fusion.loop.epochs=5 -S train.clip_fusion.model.fusion=cross",
    "dvc exp show",
    "python pipelines/compare.py",
    "python pipelines/train.py clip_fusion",
    "python pipelines/evaluate.py clip_fusion",
    "python pipelines/report.py --eval eval --memes data/memes --models models --out eval",
    'python pipelines/predict.py --model models/clip_fusion --image meme.png --text "look at this"',
    "python pipelines/predict.py --model models/clip_fusion --input new_memes.jsonl --out scores.jsonl",
]
RUN_BY_CI = {
    "pip install -r requirements.txt": "python -m pip install --quiet -r requirements.txt",
    "pytest": "run_pytest\n",
    "pytest -m e2e": "python -m pytest -m e2e",
}
NOT_RUN = {
    "dvc exp run -S profile=full -S fetch.source=zip -S fetch.path=data/raw/hateful_memes.zip":
        "the full profile needs the licensed Hateful Memes data and a GPU (tests/test_full_shapes.py runs its "
        "stages at the real sizes on random weights, and test_dvc_deps its zip fetch)",
    "dvc exp run -S profile=full -S fetch.fine_grained=data/raw/annotations "
    "-S train.visualbert.model.fine_grained.enabled=true":
        "the full profile, as above; tests/test_fine_grained_data.py fetches a local release with annotation "
        "files, and the demo trains fine-grained heads",
}


def readme_commands(text: str) -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            code = line[:first_unquoted_hash(line)]  # a comment starts at an unquoted #
            for command in re.split(r"\s*(?:&&|;)\s*", code.strip()):
                if command:
                    commands.append(" ".join(command.split()))
    return commands


def first_unquoted_hash(line: str) -> int:
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#":
            return index
    return len(line)


def test_the_parser_splits_and_strips_comments():
    text = 'x\n```bash\npip install -r r.txt && dvc repro  # demo\nA --text "a # b"; B\n```\n'
    assert readme_commands(text) == ["pip install -r r.txt", "dvc repro", 'A --text "a # b"', "B"]


def test_every_readme_command_is_run_by_a_test_or_says_why_not():
    shown = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    classified = [*RUN_IN_THE_DEMO, *RUN_BY_CI, *NOT_RUN]
    assert len(classified) == len(set(classified)), "a command is in two lists"
    unclassified = [command for command in shown if command not in classified]
    assert not unclassified, f"README commands no test runs (add them to a list in {__file__}): {unclassified}"
    stale = [command for command in classified if command not in shown]
    assert not stale, f"listed here but no longer in the README: {stale}"


def test_ci_runs_the_commands_it_is_credited_with():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command, line in RUN_BY_CI.items():
        assert line in script, f".ci/run does not run {command!r} (expected {line!r} in it)"


def test_the_readme_stays_short():
    """A README for users, at most 10 KB: design notes and measurement history live in docs/."""
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 10 * 1024, f"README.md is {size} bytes; move details to docs/"
