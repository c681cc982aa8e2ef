"""Dataclass configs: field docs, validation from YAML/dicts, and the generated CLI.

A config is a plain ``@dataclass`` whose fields carry a docstring on the line after them
(the attribute-docstring convention). From it this module derives

* :func:`from_dict` — build and type-check an instance; an unknown or ill-typed key is a
  :class:`~psipo.errors.PsipoInputError` naming the key (and file:line when known);
* :func:`load_config` — the same from a YAML file (``yaml.safe_load`` semantics) plus
  ``--key value`` overrides;
* :func:`add_arguments` / :func:`overrides_from_args` — one ``--key`` option per field,
  with the field's docstring as its help, for ``argparse``.

Nested dataclass fields are addressed with dots: ``--grid.learning_rate 1e-3`` (``psipo
experiment lm``). A nested field declared with :func:`flat` instead lends its fields to the parent's top level: the
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
import json
import re
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from psipo._io import readable_file
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
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # INT | auto: words as typed
        return " | ".join(
            ",".join(str(v) for v in typing.get_args(a)) if typing.get_origin(a) is typing.Literal else _metavar(a)
            for a in args
        )
    return _type_name(tp).upper()


def _is_text(tp: Any) -> bool:
    """Whether a field takes a string or a path (maybe also null), and nothing else."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return len(args) == 1 and _is_text(args[0])
    return tp in (str, Path)


class _Text(str):
    """The command-line value of a string or path field, taken as written: ``--output_dir 2024``
    is the folder '2024', not the number (only ``null`` keeps its YAML meaning)."""


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
        # YAML's null is also what an empty value reads as (`key:`, `--key ""`): "got None" named neither
        got = "null (an empty value)" if value is None else repr(value)
        return PsipoInputError(f"{where}key '{key}': expected {expected}, got {got}")

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
        number = value
        if isinstance(value, str):  # YAML 1.1 reads "1e3" as a string, as for floats below
            try:
                number = int(value) if value.strip().lstrip("+-").isdigit() else float(value)
            except ValueError:
                raise fail("an integer") from None
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if isinstance(number, int) and not isinstance(number, bool):
            if -(2**63) <= number < 2**63:  # what torch and numpy take (seeds, counts)
                return number
            raise fail("an integer of at most 64 bits")
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


def _field_default(f: dataclasses.Field) -> Any:
    """A field's default value (its factory called); MISSING when it has none."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` written over it, nested mappings merged key by key."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def _over_default(f: dataclasses.Field, value: Any) -> Any:
    """A nested section given as a mapping changes only the keys it names: the others keep the
    field's own default (its ``default_factory``'s), not the section class's defaults."""
    default = _field_default(f)
    if isinstance(value, Mapping) and dataclasses.is_dataclass(default) and not isinstance(default, type):
        return _merged(to_dict(default), value)
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
        name: _convert(_over_default(fields[name], value), hints[name], prefix + name, where)
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


MAX_NESTING = 100
"""Deepest nesting of YAML lists and mappings psipo reads (its own files nest 3 deep)."""

MAX_ALIAS_EXPANSION = 100_000
"""Most nodes that YAML aliases may add to a document when expanded. An alias costs as much
as what it stands for wherever the data is used (type checks, tensors, the saved config),
so a few bytes of nested aliases ("billion laughs") would otherwise expand to billions of
nodes; a document over the bound is refused before it is used."""


def decode_utf8(data: bytes, where: str | Path, first_line: int = 1) -> str:
    """``data`` as text; bytes that are not UTF-8 are a PsipoInputError naming ``where:line``.

    ``first_line`` is the line number of the first byte (for one line of a JSONL file). A
    leading byte-order mark is dropped.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise PsipoInputError(
            f"{where}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); "
            "save the file as UTF-8"
        ) from None


def read_text_file(path: Path) -> str:
    """The text of a UTF-8 file (see :func:`decode_utf8`)."""
    return decode_utf8(path.read_bytes(), path)


def _unique_keys(where: str | Path, line: int, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict, refusing a key given twice (``json`` keeps the last)."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise PsipoInputError(f"{where}:{line}: key {key!r} is given twice in one object")
        data[key] = value
    return data


def parse_json(text: str, where: str | Path, first_line: int = 1) -> Any:
    """``json.loads`` with one-line errors naming ``where:line``."""
    try:
        return json.loads(text, object_pairs_hook=functools.partial(_unique_keys, where, first_line))
    except json.JSONDecodeError as exc:
        raise PsipoInputError(f"{where}:{first_line + exc.lineno - 1}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise PsipoInputError(f"{where}:{first_line}: JSON nested too deeply to read") from None


class _RefusedYAML(yaml.MarkedYAMLError):
    """Valid YAML that psipo will not read (too deep, too many alias expansions)."""


class _BoundedComposer(yaml.composer.Composer):
    """Builds the node graph from parser events, bounding its nesting and its alias expansion.

    libyaml's own composer recurses in C and crashes the interpreter on a few thousand
    nested ``[``, so the graph is composed here, from libyaml's events when it is available.
    Each node's expanded size (nodes, aliases counted as what they stand for) is known as soon
    as the node is complete, so an alias adds its target's size to the running total without
    anything being expanded.
    """

    def __init__(self) -> None:
        yaml.composer.Composer.__init__(self)  # not super(): the loader bases take the stream
        self.depth = 0
        self.expanded_sizes: dict[yaml.Node, int] = {}
        self.alias_nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            target = super().compose_node(parent, index)
            if target not in self.expanded_sizes:
                raise _RefusedYAML(None, None, "an alias refers to a node that contains it (recursive alias)", mark)
            self.alias_nodes += self.expanded_sizes[target]
            if self.alias_nodes > MAX_ALIAS_EXPANSION:
                raise _RefusedYAML(
                    None, None, f"aliases expand to more than {MAX_ALIAS_EXPANSION} nodes", mark
                )
            return target
        if self.depth >= MAX_NESTING:
            raise _RefusedYAML(None, None, f"nested deeper than {MAX_NESTING} levels", mark)
        self.depth += 1
        node = super().compose_node(parent, index)
        self.depth -= 1
        if isinstance(node, yaml.MappingNode):
            _refuse_repeated_keys(node)
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        self.expanded_sizes[node] = 1 + sum(self.expanded_sizes[child] for child in children)
        return node


def _refuse_repeated_keys(node: yaml.MappingNode) -> None:
    """A key given twice in one mapping: YAML says that is an error, PyYAML keeps the last
    silently, and a user who edits the first one would see no effect."""
    first_lines: dict[str, int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        line = key.start_mark.line + 1
        if key.value in first_lines:
            message = f"key '{key.value}' is given twice (first on line {first_lines[key.value]})"
            raise _RefusedYAML(None, None, message, key.start_mark)
        first_lines[key.value] = line


_LOADER_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when PyYAML has it


class _SafeLoader(_BoundedComposer, _LOADER_BASE):  # type: ignore[valid-type,misc]
    """``yaml.safe_load`` semantics (no tags that run code) with :class:`_BoundedComposer`."""

    def __init__(self, text: str) -> None:
        _LOADER_BASE.__init__(self, text)
        _BoundedComposer.__init__(self)


def _node_lines(root: yaml.Node) -> dict[str, int]:
    """Map the path of every key and list item (``optim.lr``, ``contexts[1].mu[0]``) to its 1-based line.

    Each composed node is walked once: a node reached again through an alias is not walked
    again, so the cost is that of the file, not of its expansion.
    """
    lines: dict[str, int] = {}
    walked: set[yaml.Node] = set()
    pending: list[tuple[str, yaml.Node]] = [("", root)]
    while pending:
        path, node = pending.pop()
        if node in walked:
            continue
        walked.add(node)
        if isinstance(node, yaml.MappingNode):
            children = [
                (f"{path}.{key.value}" if path else str(key.value), key, value)
                for key, value in node.value
                if isinstance(key, yaml.ScalarNode)
            ]
        elif isinstance(node, yaml.SequenceNode):
            children = [(f"{path}[{i}]", item, item) for i, item in enumerate(node.value)]
        else:
            continue
        for child, marked, value in children:
            lines.setdefault(child, marked.start_mark.line + 1)
            pending.append((child, value))
    return lines


def read_yaml_mapping(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Read a YAML mapping safely; return it with the line number of each key and list item.

    Parsed once, with ``yaml.safe_load`` semantics; nesting deeper than :data:`MAX_NESTING`
    and alias expansion beyond :data:`MAX_ALIAS_EXPANSION` nodes are refused.
    """
    path = readable_file(path, "config file")
    loader = _SafeLoader(read_text_file(path))
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _RefusedYAML as exc:
        raise PsipoInputError(f"{path}:{exc.problem_mark.line + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PsipoInputError(f"{path}{line}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise PsipoInputError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data, _node_lines(node)


_QUOTED_KEY = re.compile(r"key '([^']+)'")
_LEADING_PATH = re.compile(r"([^\s:']+)[:\s]")


def _ancestors(path: str) -> Iterator[str]:
    """``path`` and the paths that contain it: ``a.b[0]``, ``a.b``, ``a``."""
    while path:
        yield path
        path = path[: max(path.rfind("."), path.rfind("["), 0)]


def blame(
    message: str, path: str | Path | None, lines: Mapping[str, int], overrides: Iterable[str] = ()
) -> str:
    """Say where the key that ``message`` is about was set.

    The key is the one quoted as ``key '...'``, else the path the message starts with. Set by
    a command-line option (in ``overrides``, itself or a key containing it): the message names
    ``--key``. Otherwise ``path:line`` from ``lines``, or just ``path:`` when the key has no
    line (a missing key, say).
    """
    overrides = set(overrides)
    quoted = _QUOTED_KEY.search(message)
    leading = _LEADING_PATH.match(message)
    for named in [m.group(1) for m in (quoted, leading) if m is not None]:
        chain = list(_ancestors(named))
        if overrides.intersection(chain):
            if message.startswith(named):
                return f"--{message}"
            return message.replace(f"key '{named}'", f"--{named}", 1)
        line = next((lines[key] for key in chain if key in lines), None)
        if line is not None:
            return f"{path}:{line}: {message}"
    return f"{path}: {message}" if path is not None else message


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested ``data``; a section that holds something else (``a: 3`` in a
    file) is a PsipoInputError naming it, not a TypeError."""
    *parents, leaf = dotted.split(".")
    for i, p in enumerate(parents):
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise PsipoInputError(f"key '{'.'.join(parents[: i + 1])}': expected a mapping of its keys, got {data!r}")
    data[leaf] = value


def _merge(data: dict[str, Any], over: Mapping[str, Any]) -> None:
    """Set every key of ``over`` in ``data``, into the sections both have."""
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            _merge(data[key], value)
        else:
            data[key] = value


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    check: Callable[[T], None] | None = None,
) -> T:
    """Build ``cls`` from dotted-key ``defaults``, an optional YAML file over them, then
    dotted-key ``overrides`` over both.

    ``defaults`` are a preset (``--quick``), ``overrides`` the command line's ``--key value``
    options. ``check`` validates the built config further (value ranges, keys that contradict
    each other). Errors name the option when the key came from the command line, else the
    file and line of the key.
    """
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key, value in (defaults or {}).items():
        _set_dotted(data, key, value)
    if path is not None:
        from_file, lines = read_yaml_mapping(path)
        _merge(data, from_file)
    overrides = dict(overrides or {})
    try:
        for key, value in overrides.items():
            _set_dotted(data, key, value)
        config = from_dict(cls, data)
        if check is not None:
            check(config)
    except PsipoInputError as exc:
        raise PsipoInputError(blame(str(exc), path, lines, overrides)) from None
    return config


def _flat_fields(
    cls: type, prefix: str = "", *, include_flat: bool = True, defaults: Any = None
) -> list[tuple[str, Any, str, Any]]:
    """(dotted key, type, doc, default) of every leaf field; ``defaults``: the instance whose
    values are the defaults (a nested section's default from its parent), else the fields' own."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        if _is_flat(f):
            if include_flat:
                out.extend(_flat_fields(tp, prefix, defaults=default))
        elif dataclasses.is_dataclass(tp):
            out.extend(_flat_fields(tp, prefix + f.name + ".", defaults=default))
        else:
            out.append((prefix + f.name, tp, docs.get(f.name, ""), default))
    return out


def _parse_cli_value(text: str) -> Any:
    """Parse a command-line value as a YAML scalar/list: ``0.1`` → 0.1, ``true`` → True; the
    value of a string field (:class:`_Text`) stays as written, but for ``null``: a quoted ``'~'``
    is the home folder a path means, not YAML's other spelling of null."""
    if isinstance(text, _Text):
        return None if text == "null" else str(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _list_type(tp: Any) -> Any:
    """``list[X]`` (or tuple) of a field that takes one, maybe null too; None for any other."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    return tp if typing.get_origin(tp) in (list, tuple) else None


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
    summary = (inspect.getdoc(cls) or cls.__name__).splitlines()[0].rstrip(".")
    group = parser.add_argument_group(title or f"{summary}; any key of the YAML config")
    for name, tp, doc, default in own_fields:
        if default is dataclasses.MISSING:
            default = "required"
        option_names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        extra: dict[str, Any] = {}
        metavar = _metavar(tp)
        if tp is bool:
            extra, metavar = {"nargs": "?", "const": "true"}, "BOOL"
        listed = _list_type(tp)
        if listed is not None:  # --taus 0.1 1 3 (or null, for a list that may be null)
            extra, metavar = {"nargs": "+"}, _metavar(typing.get_args(listed)[0])
            if _is_text(typing.get_args(listed)[0]):
                extra["type"] = _Text
        elif _is_text(tp):
            extra["type"] = _Text
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
            if len(value) == 1 and value[0].lstrip().startswith("["):
                value = [str(value[0])]  # the YAML list form, for string items too
            items = [_parse_cli_value(v) for v in value]
            return items[0] if len(items) == 1 and (isinstance(items[0], list) or items[0] is None) else items
        return _parse_cli_value(value)

    return {dest[len("cfg:"):]: parse(value) for dest, value in vars(args).items() if dest.startswith("cfg:")}


def save_yaml(config: Any, path: str | Path) -> None:
    """Write the config as YAML, atomically."""
    from psipo._io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
