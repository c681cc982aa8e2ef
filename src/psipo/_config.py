"""Dataclass configs: field docs, validation from YAML/dicts, and the generated CLI.

A config is a plain ``@dataclass`` whose fields carry a docstring on the line after them
(the attribute-docstring convention). From it this module derives

* :func:`from_dict` — build and type-check an instance; an unknown or ill-typed key is a
  :class:`~psipo.errors.PsipoInputError` naming the key (and file:line when known);
* :func:`load_config` — the same from a YAML file (``yaml.safe_load`` semantics) plus
  ``--key value`` overrides;
* :func:`add_arguments` / :func:`overrides_from_args` — one ``--key`` option per field,
  with the field's docstring as its help, for ``argparse``.

Nested dataclass fields are addressed with dots: ``--optim.learning_rate 1e-5``. A nested
field declared with :func:`flat` instead lends its fields to the parent's top level: the
config stays one dataclass per concern while its YAML and ``--key`` options stay flat
(``learning_rate: 1e-5``), and ``--help`` shows one group per concern.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from psipo.errors import PsipoInputError

T = TypeVar("T")

_FLAT = "psipo_flat"


def flat(factory: Callable[[], Any]) -> Any:
    """A nested-dataclass field whose keys live at the parent's top level (no dotted prefix).

    ``optim: OptimConfig = flat(OptimConfig)`` makes ``learning_rate`` a top-level key of the
    parent. Flattened key names must be unique across the parent.
    """
    return dataclasses.field(default_factory=factory, metadata={_FLAT: True})


def _is_flat(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get(_FLAT))


def _top_level_keys(cls: type) -> dict[str, str | None]:
    """Map each key the YAML of ``cls`` may use to the flattened field that owns it (or None)."""
    keys: dict[str, str | None] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if _is_flat(f):
            for key in _top_level_keys(hints[f.name]):
                keys[key] = f.name
        else:
            keys[f.name] = None
    return keys


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass ``cls`` to the docstring written under it."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, following in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _metavar(tp: Any) -> str:
    """How ``--help`` shows a value: ``{identity,logit}`` for a Literal, ``FLOAT`` for a number
    that may also be null (null is accepted but not advertised)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return _metavar(args[0])
    if typing.get_origin(tp) is typing.Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    return _type_name(tp).upper()


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check/convert ``value`` to type annotation ``tp``; raise naming ``key`` otherwise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> PsipoInputError:
        return PsipoInputError(f"{where}key '{key}': expected {expected}, got {value!r}")

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, where)
            except PsipoInputError as exc:
                errors.append(exc)
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is typing.Literal:
        if value in args:
            return value
        raise fail("one of " + ", ".join(repr(a) for a in args))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail(f"a list of {_type_name(args[0]) if args else 'values'}")
        item_type = args[0] if args else Any
        items = [_convert(v, item_type, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise fail(f"a mapping of {tp.__name__} fields")
        return from_dict(tp, value, where=where, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise fail("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail("a string")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise fail("a path")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and ill-typed values.

    ``where`` prefixes error messages (for example ``"run.yaml: "``); ``prefix`` is the
    dotted path of a nested config.
    """
    if not isinstance(data, Mapping):
        raise PsipoInputError(f"{where}expected a mapping of {cls.__name__} keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    owners = _top_level_keys(cls)
    unknown = [k for k in data if k not in owners]
    if unknown:
        key = str(unknown[0])
        close = difflib.get_close_matches(key, list(owners), n=1)
        hint = f"did you mean '{prefix}{close[0]}'?" if close else "known keys: " + ", ".join(prefix + k for k in owners)
        raise PsipoInputError(f"{where}unknown key '{prefix}{key}' ({hint})")
    kwargs = {
        name: _convert(value, hints[name], prefix + name, where)
        for name, value in data.items()
        if owners[name] is None
    }
    for name, f in fields.items():
        if _is_flat(f):
            own = {k: v for k, v in data.items() if owners[k] == name}
            kwargs[name] = from_dict(hints[name], own, where=where, prefix=prefix)
    missing = [
        name for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise PsipoInputError(f"{where}missing required key '{prefix}{missing[0]}'")
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain data (nested dataclasses become dicts, paths strings)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if _is_flat(f):
            out.update(to_dict(value))
        elif dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        else:
            out[f.name] = plain(value)
    return out


def _key_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    """Map dotted keys of a composed YAML mapping to their 1-based line numbers."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key + "."))
    return lines


def read_yaml_mapping(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Read a YAML mapping safely; return it with the line number of each (dotted) key."""
    path = Path(path)
    if not path.is_file():
        raise PsipoInputError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PsipoInputError(f"{path}{line}: invalid YAML: {problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise PsipoInputError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data, _key_lines(node) if node is not None else {}


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        data = data.setdefault(p, {})
    data[leaf] = value


def load_config(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` from an optional YAML file, then apply dotted-key ``overrides``.

    Errors name the file and line of the offending key when it came from the file.
    """
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is not None:
        data, lines = read_yaml_mapping(path)
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
        lines.pop(key, None)
    try:
        return from_dict(cls, data)
    except PsipoInputError as exc:
        message = str(exc)
        if path is not None:
            for key, line in sorted(lines.items(), key=lambda kv: -len(kv[0])):
                if f"'{key}'" in message:
                    raise PsipoInputError(f"{path}:{line}: {message}") from None
            raise PsipoInputError(f"{path}: {message}") from None
        raise


def _flat_fields(
    cls: type, prefix: str = "", *, include_flat: bool = True
) -> list[tuple[str, Any, dataclasses.Field, str]]:
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if _is_flat(f):
            if include_flat:
                out.extend(_flat_fields(tp, prefix))
        elif dataclasses.is_dataclass(tp):
            out.extend(_flat_fields(tp, prefix + f.name + "."))
        else:
            out.append((prefix + f.name, tp, f, docs.get(f.name, "")))
    return out


def _parse_cli_value(text: str) -> Any:
    """Parse a command-line value as a YAML scalar/list: ``0.1`` → 0.1, ``true`` → True."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, title: str | None = None) -> None:
    """Add one ``--key`` option per (nested) field of ``cls``; help text is the field doc.

    Each :func:`flat` concern of ``cls`` gets its own group, titled by its class docstring.
    """
    hints = typing.get_type_hints(cls)
    concerns = [f for f in dataclasses.fields(cls) if f.init and _is_flat(f)]
    for f in concerns:
        sub = hints[f.name]
        summary = (inspect.getdoc(sub) or sub.__name__).splitlines()[0].rstrip(".")
        add_arguments(parser, sub, title=summary)
    own_fields = _flat_fields(cls, include_flat=False)
    if not own_fields:
        return
    group = parser.add_argument_group(title or f"{cls.__name__} (any key of the YAML config)")
    for name, tp, f, doc in own_fields:
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "required"
        option_names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        extra: dict[str, Any] = {}
        metavar = _metavar(tp)
        if tp is bool:
            extra, metavar = {"nargs": "?", "const": "true"}, "BOOL"
        if typing.get_origin(tp) in (list, tuple):  # --taus 0.1 1 3
            extra, metavar = {"nargs": "+"}, _metavar(typing.get_args(tp)[0])
        group.add_argument(
            *option_names,
            dest=f"cfg:{name}",
            default=argparse.SUPPRESS,
            metavar=metavar,
            help=f"{doc} (default: {default!r})".replace("%", "%%"),  # argparse %-formats help
            **extra,
        )


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--key value`` options given on the command line, as dotted keys → values."""
    def parse(value: Any) -> Any:
        if isinstance(value, list):  # a list option: one word per item, or one YAML list
            items = [_parse_cli_value(v) for v in value]
            return items[0] if len(items) == 1 and isinstance(items[0], list) else items
        return _parse_cli_value(value)

    return {dest[len("cfg:"):]: parse(value) for dest, value in vars(args).items() if dest.startswith("cfg:")}


def save_yaml(config: Any, path: str | Path) -> None:
    """Write the config as YAML, atomically."""
    from psipo._io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
