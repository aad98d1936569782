"""Dataclass configs loaded from YAML with strict validation: an unknown or mistyped key is one clear error."""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from focaltag.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance  # typeshed's "any dataclass" protocol; no runtime module

__all__ = ["from_dict", "to_dict", "load_yaml", "apply_overrides", "parse_override", "set_dotted", "resolve_config",
           "shipped_configs", "shipped_config_path", "is_config_file_argument", "check_seed", "CONFIG_KINDS",
           "SEED_LIMIT"]

T = TypeVar("T", bound="DataclassInstance")

SEED_LIMIT = 2**32  # numpy's legacy seeding and most RNGs take a 32-bit unsigned seed


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (``*name``, also inside ``<<:`` merges).

    Safe tags alone do not bound a document: a 1 KB file of nested aliases ("billion laughs") expands to
    gigabytes when the mapping is copied or walked. A config never needs aliases, so the first one is refused
    at parse time, before anything is expanded.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} is not allowed in a focaltag config (write the value out)",
                event.start_mark)
        return super().compose_node(parent, index)


def _safe_load(text: str) -> Any:
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def check_seed(value: Any, key: str = "seed") -> None:
    """Refuse a seed outside ``0 <= seed < 2**32`` at validation (numpy and torch would fail much later)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise ConfigError(f"{key}: expected an integer 0 <= seed < 2**32, got {value!r}")


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a file that is not a mapping is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = _safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (["a", "b"], value) with the value parsed as YAML (numbers, bools, lists)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = _safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(mapping: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a deep copy of ``mapping`` with each ``a.b=value`` override applied."""
    out = _deepcopy(mapping)
    for text in overrides:
        keys, value = parse_override(text)
        set_dotted(out, ".".join(keys), value, where=f"--set {text}")
    return out


def set_dotted(mapping: dict[str, Any], key: str, value: Any, *, where: str) -> None:
    """Set ``mapping["a"]["b"] = value`` for ``key="a.b"``, creating sections; a scalar in the way is an error."""
    parts = key.split(".")
    node = mapping
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {key!r} goes through {part!r}, which is not a section")
        node = child
    node[parts[-1]] = _deepcopy(value)


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict/list/scalars (Paths become strings) for YAML/JSON and checkpoints."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("deprecated") and getattr(obj, f.name) is None)}  # old spellings, unset
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, checking every key and value type; nested dataclasses recurse."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(fields)})"
        raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{where}: {err}") from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """``value`` as type ``tp`` (unions, literals, dataclasses, lists, mappings, scalars), or ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(args, value, where)
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{where}: must be one of {choices}, got {value!r}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    scalar = _SCALARS.get(tp)
    return value if scalar is None else scalar(value, where)


def _coerce_union(args: tuple[Any, ...], value: Any, where: str) -> Any:
    """The first member type of a union that takes ``value`` (None for an optional), else the first error."""
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(arg, value, where)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ConfigError(f"{where}: expected an integer, got {value!r}")


def _as_float(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected a number, got {value!r}")


def _as_str(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where}: expected a string, got {value!r}")


def _as_path(value: Any, where: str) -> Path:
    if isinstance(value, (str, Path)):
        return Path(value)
    raise ConfigError(f"{where}: expected a path, got {value!r}")


_SCALARS: dict[Any, Callable[[Any, str], Any]] = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str,
                                                  Path: _as_path}


# ------------------------------------------------------------------ shipped configs by name
CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
CONFIG_KINDS: tuple[str, ...] = ("train", "experiments")


def shipped_configs() -> dict[str, list[str]]:
    """Names of the configs installed with the package, by kind: ``{"train": ["demo", "paper"], ...}``."""
    return {kind: sorted(p.stem for p in (CONFIG_ROOT / kind).glob("*.yaml")) for kind in CONFIG_KINDS}


def is_config_file_argument(text: str | Path) -> bool:
    """An argument with a ``/`` (or ``\\``) or ending in ``.yaml`` / ``.yml`` is a file; anything else a name."""
    s = str(text)
    return "/" in s or "\\" in s or s.endswith((".yaml", ".yml"))


def shipped_config_path(kind: str, name: str) -> Path:
    """The installed file of a shipped config; an unknown kind or name is a ConfigError listing the choices."""
    if kind not in CONFIG_KINDS:
        raise ConfigError(f"unknown config kind {kind!r}; choose one of {', '.join(CONFIG_KINDS)}")
    path = CONFIG_ROOT / kind / f"{name}.yaml"
    if not path.is_file():
        names = shipped_configs()[kind]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"no shipped {kind} config named {name!r}{hint}; shipped: {', '.join(names)} "
                          f"(`focaltag config list`); a config file needs a '/' or a .yaml ending")
    return path


def resolve_config(arg: str | Path, kind: str) -> Path:
    """``--config`` / experiment argument: a file path (see :func:`is_config_file_argument`) or the name of a
    shipped config of ``kind`` (``paper`` -> ``<package>/configs/<kind>/paper.yaml``)."""
    if is_config_file_argument(arg):
        return Path(arg)
    return shipped_config_path(kind, str(arg))
