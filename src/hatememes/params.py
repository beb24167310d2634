"""Strict, typed parameters: params.yaml (+ overrides) into frozen dataclasses.

    params = load_params("params.yaml")                 # dict, exactly as DVC tracks it
    fetch = section(params, "fetch", FetchParams)       # frozen dataclass, every key checked
    python -m hatememes.params compose profile=full     # write params.yaml from conf/ (what `dvc exp run -S` does)

params.yaml is what runs and what DVC records. Hydra composes it from conf/config.yaml (the demo, with its
comments) and conf/profile/<profile>.yaml (`profile=full`: the real benchmark's values over it), the way
`dvc exp run -S` does with `hydra.enabled` in .dvc/config, so a `-S` value always lands in params.yaml after
the profile's, and an override of a key that does not exist fails before any stage runs. A dataclass
rejects missing, unknown and mistyped keys, and every message names the key and the file it came from.

YAML is read as DVC reads and writes it: YAML 1.2 (ruamel.yaml, DVC's own library). `dvc exp run -S`
rewrites params.yaml with `mixed_precision: no` and `lr: 1e-4`; in YAML 1.2 those are the string "no" and
the float 0.0001, as DVC records them. (PyYAML follows YAML 1.1, where `no` is False and `1e-4` a string.)
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

T = TypeVar("T")


class ParamsError(ValueError):
    """A parameter file does not match what the code expects."""


def parse_yaml(text: str) -> Any:
    """YAML 1.2 text as plain Python (dict, list, str, int, float, bool, None), the way DVC reads it."""
    return YAML(typ="safe").load(text)


def read_yaml(path: Path) -> dict:
    try:
        data = parse_yaml(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_params(path: str | Path = "params.yaml", overrides: typing.Sequence[str] = ()) -> dict:
    """params.yaml, then `key.path=value` overrides (a script's `--set`; `dvc exp run -S` writes the file).

    The result remembers where it came from in the key `_sources` (dropped by `resolved()`)."""
    path = Path(path)
    params = read_yaml(path)
    sources = [str(path)]
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ParamsError(f"override {item!r}: expected key.path=value")
        params = merge(params, nested(key.split("."), parse_yaml(value)), where=f"override {item!r}")
        sources.append(f"override {item}")
    params["_sources"] = sources
    return params


def compose(overrides: typing.Sequence[str] = (), conf_dir: str | Path = "conf",
            out: str | Path = "params.yaml") -> Path:
    """Write `out` from Hydra's composition of `conf_dir`/config.yaml with `overrides` (`profile=full`,
    `train.mmbt.loop.lr=2e-5`), by the function `dvc exp run -S` calls: the file is the same either way."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(out, str(Path(conf_dir).resolve()), None, "config", "", list(overrides))
    return Path(out)


def resolved(params: dict) -> dict:
    """The parameters without bookkeeping keys: what a model folder or a report records."""
    return {key: value for key, value in params.items() if not key.startswith("_")}


def nested(keys: list[str], value: Any) -> dict:
    return {keys[0]: nested(keys[1:], value) if len(keys) > 1 else value}


def merge(base: dict, overlay: dict, where: str, prefix: str = "") -> dict:
    """Deep-merge `overlay` into a copy of `base`; every overlay key must already exist in `base`."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ParamsError(f"{where}: unknown key {dotted!r} (not in params.yaml)")
        if isinstance(value, dict) and isinstance(base[key], dict):
            merged[key] = merge(base[key], value, where, prefix=f"{dotted}.")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def section(params: dict, name: str, cls: type[T]) -> T:
    """`params[name]` (a dotted path like `train.clip_fusion` works too) as a `cls` instance."""
    where = " + ".join(params.get("_sources", ["params"]))
    node: Any = params
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(f"{where}: missing section {name!r}")
        node = node[part]
    return from_dict(cls, node, where=where, prefix=f"{name}.")


def from_dict(cls: type[T], data: Any, where: str, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking every field's presence and type."""
    if not isinstance(data, dict):
        raise ParamsError(f"{where}: {prefix.rstrip('.')!r} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(f"{where}: unknown key {prefix}{unknown[0]} (valid keys: {', '.join(fields)})")
    values = {}
    for name, field in fields.items():
        if name not in data:
            has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
            if has_default:
                continue
            raise ParamsError(f"{where}: missing key {prefix}{name}")
        values[name] = convert(hints[name], data[name], where, f"{prefix}{name}")
    return cls(**values)


def convert(hint: Any, value: Any, where: str, key: str) -> Any:
    """Check `value` against the type `hint`, converting lists to tuples and nested mappings to dataclasses."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def fail(expected: str) -> typing.NoReturn:
        raise ParamsError(f"{where}: {key} must be {expected}, got {value!r}")

    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where, prefix=f"{key}.")
    if origin is Literal:
        if value not in args:
            fail("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin in (Union, types.UnionType):
        for option in args:
            if option is type(None) and value is None:
                return None
        for option in args:
            if option is type(None):
                continue
            try:
                return convert(option, value, where, key)
            except ParamsError:
                pass
        fail(" or ".join(getattr(a, "__name__", str(a)) for a in args))
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            fail("a list")
        if origin is tuple and len(args) > 1 and args[1] is not Ellipsis:  # fixed length: tuple[float, float]
            if len(value) != len(args):
                fail(f"a list of {len(args)}")
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(convert(item, v, where, f"{key}[{i}]") for i, (item, v) in pairs)
        item = args[0] if args else Any
        return tuple(convert(item, v, where, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            fail("a mapping")
        return types.MappingProxyType({k: convert(args[1], v, where, f"{key}.{k}") for k, v in value.items()})
    if hint is bool:
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            fail("a string")
        return value
    raise TypeError(f"params.py cannot check the type {hint!r} of {key}")


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """The `train` section's own key (the models' sections are checked by hatememes.training.train_params)."""

    dev_split: str = "dev_seen"


# the params a demo world's seed sets: the memes and the corpus, the tiny CLIP, the tiny LLaVA. The e2e test
# reproduces the demo in a second world with all three set to another seed.
WORLD_SEEDS = ("fetch.synthetic.seed", "pretrain.seed", "pretrain_llava.tiny.seed")


def lookup(params: dict, dotted: str) -> Any:
    """params["a"]["b"]["c"] for "a.b.c"; a KeyError names the dotted key."""
    value = params
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(f"{dotted!r}: not in the params")
        value = value[key]
    return value


def dev_split(params: dict) -> str:
    """`train.dev_split` alone, checked, without reading (or importing) the models' sections."""
    where = " + ".join(params.get("_sources", ["params"]))
    raw = params.get("train", {})
    return from_dict(TrainParams, {k: v for k, v in raw.items() if k == "dev_split"}, where, "train.").dev_split


def add_arguments(parser) -> None:
    """The two options every pipeline script takes: which params file, and `key.path=value` overrides."""
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a parameter, e.g. --set train.clip_fusion.loop.epochs=3 (repeatable)",
    )


def from_arguments(args) -> dict:
    return load_params(args.params, args.overrides)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m hatememes.params",
                                     description="Compose params.yaml from conf/ (Hydra), as `dvc exp run -S` does.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("compose", help="write params.yaml from conf/config.yaml and the overrides")
    command.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                         help="Hydra overrides, e.g. profile=full train.mmbt.loop.lr=2e-5")
    command.add_argument("--conf", default="conf", help="the Hydra config folder (default: conf)")
    command.add_argument("--out", default="params.yaml", help="the file to write (default: params.yaml)")
    args = parser.parse_args(argv)
    from hydra.errors import HydraException

    try:
        out = compose(args.overrides, args.conf, args.out)
        section_names = sorted(set(resolved(load_params(out))))
    except (HydraException, ParamsError) as error:
        print(f"params: {error}", file=sys.stderr)
        return 1
    print(f"{out}: composed from {args.conf}/ with {' '.join(args.overrides) or 'no overrides'} "
          f"(sections: {', '.join(section_names)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
