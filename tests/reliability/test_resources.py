"""Resources: an output that cannot be written gives one line `STAGE: cannot write OUT: REASON (the
library's own error)` and exit status 1 instead of a traceback, and leaves nothing that looks complete;
a GPU-only option on CPU says what happens instead.

Tests run as root in CI, and chmod 0o555 stops nothing for root. So a read-only and a full disk are real
ones: a read-only / tiny tmpfs mounted in a private mount namespace (`unshare -rm`, no privileges needed
where user namespaces are allowed; skipped where not). chmod is used only when not root; a regular file in
place of the output's parent works for everyone. Disk full is also injected in-process (os.replace /
os.rename raising ENOSPC) at the last step of each stage, where a half output would do the most harm.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from stage_runs import (
    PARAMS,
    ROOT,
    evaluate_args,
    evaluate_main,
    fetch_stage,
    fetched,
    predictions_of,
    script_env,
    train_args,
    train_main,
    write_clip_features,
    write_official,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resources")
    memes = fetched(root)
    features = write_clip_features(memes, root / "features" / "clip").parent
    with torch.random.fork_rng():
        assert train_main(train_args(memes, features, root / "model")) == 0
    return {"raw": root / "raw", "memes": memes, "features": features, "model": root / "model"}


def stage_args(stage: str, data: dict[str, Path], out: Path) -> list[str]:
    if stage == "fetch":
        return ["--params", str(PARAMS), "--out", str(out), "--source", "local", "--path", str(data["raw"])]
    if stage == "train":
        return train_args(data["memes"], data["features"], out)
    return evaluate_args(data["memes"], data["model"], out)


MAINS = {"fetch": fetch_stage.main, "train": train_main, "evaluate": evaluate_main}


def one_line(pattern: str, **paths: Path) -> re.Pattern:
    """A literal message as a regex: `…` stands for the library's words, {name} for a path."""
    for name, path in paths.items():
        pattern = pattern.replace("{" + name + "}", str(path))
    return re.compile(".+".join(re.escape(part) for part in pattern.split("…")))


@pytest.mark.parametrize("stage", ["fetch", "train", "evaluate"])
def test_a_file_in_place_of_the_output_folder_is_named(stage, data, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where a folder should be")
    out = blocker / "out"
    capsys.readouterr()
    assert MAINS[stage](stage_args(stage, data, out)) == 1
    message = capsys.readouterr().err.strip()
    assert one_line("{stage}: cannot write {out}: {blocker} is a file, not a folder (…)", stage=Path(stage),
                    out=out, blocker=blocker).fullmatch(message), message


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits: see the read-only mount test")
def test_a_read_only_folder_is_named_when_not_root(data, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        assert fetch_stage.main(stage_args("fetch", data, locked / "memes")) == 1
    finally:
        locked.chmod(0o755)
    message = capsys.readouterr().err.strip()
    assert one_line("fetch: cannot write {out}: permission denied ({locked} is not writable) (…)",
                    out=locked / "memes", locked=locked).fullmatch(message), message


def fail_with_enospc(monkeypatch, pattern: str) -> None:
    """os.replace / os.rename into a path matching `pattern` fail as on a full disk."""
    for name in ("replace", "rename"):
        original = getattr(os, name)

        def patched(source, target, *args, _original=original, **kwargs):
            if fnmatch.fnmatch(os.path.abspath(target), pattern):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
            return _original(source, target, *args, **kwargs)

        monkeypatch.setattr(os, name, patched)


@pytest.mark.parametrize("stage, failing", [("fetch", "{tmp}/.out.partial/memes/manifest.json"),
                                            ("train", "{out}/params.json"), ("evaluate", "{out}/metrics.json")])
def test_disk_full_at_the_last_write_leaves_nothing_that_looks_complete(stage, failing, data, tmp_path, capsys,
                                                                        monkeypatch):
    out = tmp_path / "out"
    failing = failing.format(tmp=tmp_path, out=out)
    with monkeypatch.context() as patch:
        fail_with_enospc(patch, failing)
        capsys.readouterr()
        assert MAINS[stage](stage_args(stage, data, out)) == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars
    expected = "{stage}: cannot write {out}: disk full (OSError: [Errno 28] No space left on device: '{failing}')"
    assert one_line(expected, stage=Path(stage), out=out, failing=Path(failing)).fullmatch(message), message
    if stage == "train":  # the weights were written, the marker of a complete model was not
        assert (out / "model.safetensors").is_file() and not (out / "model.json").exists()
        assert not predictions_of(out).exists()  # scored after the model is complete
        with pytest.raises(FileNotFoundError, match=f"{predictions_of(out)}: no predictions for train, dev_seen"):
            evaluate_main(evaluate_args(data["memes"], out, tmp_path / "eval"))
    elif stage == "evaluate":  # roc/ is moved in whole; metrics.json, moved last, is not
        assert (out / "roc").is_dir() and not (out / "metrics.json").exists()
    else:
        assert not out.exists() and not (tmp_path / ".out.partial").exists()


def namespaces_work() -> bool:
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                           capture_output=True)  # the mount vanishes with the namespace
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(sys.platform != "linux" or not namespaces_work(),
                                  reason="no user + mount namespaces here (unshare -rm)")


def run_on_tmpfs(mount: Path, options: str, script: str, args: list[str]) -> tuple[int, str, list[str]]:
    """Run pipelines/SCRIPT on a tmpfs mounted at `mount` (private namespace); (status, stderr, files left)."""
    mount.mkdir()
    shell = ('mount -t tmpfs -o "$1" tmpfs "$2" || exit 99; shift 2; "$@"; status=$?; '
             'echo "--- left:"; find "$MOUNT" -mindepth 1; exit $status')
    command = ["unshare", "-rm", "sh", "-c", shell, "sh", options, str(mount),
               sys.executable, str(ROOT / "pipelines" / script), *args]
    result = subprocess.run(command, cwd=ROOT, env=script_env(MOUNT=str(mount)), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 99, result.stderr
    left = result.stdout.split("--- left:\n", 1)[1].split()
    return result.returncode, result.stderr, left


@needs_mounts
def test_a_read_only_file_system_is_named(data, tmp_path):
    mount = tmp_path / "mnt"
    status, stderr, left = run_on_tmpfs(mount, "ro,size=64k", "fetch.py", stage_args("fetch", data, mount / "memes"))
    assert status == 1 and "Traceback" not in stderr, stderr
    expected = "fetch: cannot write {out}: read-only file system (OSError: [Errno 30] Read-only file system: '{tmp}')"
    assert one_line(expected, out=mount / "memes", tmp=mount / ".memes.partial").fullmatch(stderr.strip()), stderr
    assert left == []


@needs_mounts
def test_a_full_disk_during_fetch_is_named_and_cleaned_up(tmp_path):
    write_official(tmp_path / "raw")  # 18 images: more 4 KiB pages than the 48 KiB file system holds
    mount = tmp_path / "mnt"
    args = ["--params", str(PARAMS), "--out", str(mount / "memes"), "--source", "local",
            "--path", str(tmp_path / "raw")]
    status, stderr, left = run_on_tmpfs(mount, "size=48k", "fetch.py", args)
    assert status == 1 and "Traceback" not in stderr, stderr
    expected = "fetch: cannot write {out}: disk full (OSError: [Errno 28] No space left on device…)"
    assert one_line(expected, out=mount / "memes").fullmatch(stderr.strip()), stderr
    assert left == []  # the staging copy is removed: the disk is as free as before


@needs_mounts
@pytest.mark.slow
def test_a_full_disk_while_checkpointing_is_named_and_no_model_looks_complete(data, tmp_path):
    mount = tmp_path / "mnt"
    status, stderr, left = run_on_tmpfs(mount, "size=32k", "train.py", stage_args("train", data, mount / "model"))
    assert status == 1 and "Traceback" not in stderr, stderr
    message = stderr.strip().splitlines()[-1]  # torch.save says only "unexpected pos …": the free space tells
    assert one_line("train: cannot write {out}: disk full (…)", out=mount / "model").fullmatch(message), message
    assert f"{mount}/model/model.json" not in left and any(".partial" in path for path in left)


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state and refuses another mixed precision once it is set."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_on_cpu(precision, data, tmp_path, capsys, fresh_accelerate_state):
    out = tmp_path / "model"
    capsys.readouterr()
    with torch.random.fork_rng():
        assert train_main(train_args(data["memes"], data["features"], out,
                                     "--set", f"train.clip_fusion.loop.mixed_precision={precision}")) == 0
    printed = capsys.readouterr().out
    notice = ("train: mixed_precision fp16 needs a GPU; on CPU this run trains in fp32 "
              "(bf16 is the mixed precision CPUs support)")
    fp32_weights = (data["model"] / "model.safetensors").read_bytes()
    if precision == "fp16":  # Accelerate drops it on CPU: said once, and the weights are exactly the fp32 ones
        assert printed.count(notice) == 1
        assert (out / "model.safetensors").read_bytes() == fp32_weights
    else:  # bf16 autocast is real on CPU: no notice, other numbers
        assert notice not in printed
        assert (out / "model.safetensors").read_bytes() != fp32_weights
