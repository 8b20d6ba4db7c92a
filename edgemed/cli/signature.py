"""Turn a typed, documented function into an argparse parser (litgpt-style: the signature is the CLI).

Parameters without a default are positional; the rest are ``--options``. ``bool`` becomes a
``--flag/--no-flag`` pair, an optional ``list[X]`` takes comma-separated values (and may be repeated, so it
never swallows a positional), ``Literal[...]`` gives choices, and the ``Args:`` section of the docstring gives
each option's help. A parameter typed with a dataclass (a command's config object) is expanded into one
option per field, documented by the class's own ``Args:`` section (a field typed with another dataclass adds that
class's fields; ``metadata["cli"] = False`` keeps a field off the command line); a field's ``metadata["flags"]`` adds
short flags (``-t``). :func:`call` builds the dataclass back and passes it whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def parse_doc(fn: Callable) -> tuple[str, dict[str, str]]:
    """(summary, {param: help}) from a Google-style docstring."""
    doc = inspect.getdoc(fn) or ""
    summary, _, rest = doc.partition("\n\n")
    helps: dict[str, str] = {}
    args = re.split(r"^Args:\s*$", rest, maxsplit=1, flags=re.M)
    if len(args) == 2:
        current = None
        for line in args[1].splitlines():
            m = re.match(r"^\s{2,4}(\w+):\s*(.*)$", line)
            if m:
                current = m.group(1)
                helps[current] = m.group(2).strip()
            elif current and line.strip():
                helps[current] += " " + line.strip()
    return summary.replace("\n", " ").strip(), helps


def comma_list(inner: type) -> Callable[[str], list[Any]]:
    """argparse type for 'a,b,c': a list of `inner` values (empty items refused)."""

    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",")]
        if any(not t for t in items):
            raise argparse.ArgumentTypeError(f"'{text}' has an empty item; give comma-separated values like a,b")
        return [inner(t) for t in items]

    parse.__name__ = f"comma-separated {getattr(inner, '__name__', 'value')} list"
    return parse


# Flags renamed in a release keep working for one more as hidden aliases that print one warning line (users' CI
# scripts call these commands): old flag -> new flag.
DEPRECATED_FLAGS = {"--repeats": "--repetitions", "--omp-wait-policy": "--wait-policy",
                    "--tolerance": "--max-logit-diff"}  # merge's: a logit difference, not bench's relative band


class _DeprecatedAlias(argparse.Action):
    """Stores like the flag it stands for, after one warning line on stderr."""

    def __init__(self, option_strings, dest, new_flag: str = "", **kwargs):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        import sys

        print(f"warning: {option_string} is deprecated and will be removed in the next release; use "
              f"{self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_aliases(parser: argparse.ArgumentParser, flag: str, dest: str, kwargs: dict[str, Any]) -> None:
    for old, new in DEPRECATED_FLAGS.items():
        if new == flag:
            same = {k: v for k, v in kwargs.items() if k in ("type", "choices")}
            parser.add_argument(old, dest=dest, action=_DeprecatedAlias, new_flag=new, default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS, **same)


def _add(parser: argparse.ArgumentParser, name: str, tp: Any, default: Any, help_text: str,
         flags: list[str] | None = None) -> None:
    tp = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    kwargs: dict[str, Any] = {"help": help_text}
    positional = default is inspect.Parameter.empty
    if origin in (list, tuple):
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
        if not positional and default is not None:  # argparse would extend the default: keep it in the help only
            kwargs["help"] = f"{help_text} (default: {','.join(map(str, default))})"
            default = None
        if positional:
            kwargs.update(type=inner, nargs="+")
        else:
            kwargs.update(type=comma_list(inner), action="extend")
    elif origin is Literal:
        kwargs["choices"] = list(typing.get_args(tp))
        kwargs["type"] = type(kwargs["choices"][0])
    elif tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif tp in (int, float, str, Path):
        kwargs["type"] = tp
    if positional:
        parser.add_argument(name, **kwargs)
        return
    kwargs["default"] = default
    if tp is bool:
        kwargs["help"] = f"{kwargs['help']} (default: {'on' if default else 'off'})".strip()
    elif default is not None:
        kwargs["help"] = f"{kwargs['help']} (default: {default})".strip()
    kwargs["help"] = kwargs["help"].replace("%", "%%")  # argparse expands %-formats in help text
    flag = f"--{name.replace('_', '-')}"
    parser.add_argument(*(flags or []), flag, dest=name, **kwargs)
    if "action" not in kwargs:
        _add_aliases(parser, flag, name, kwargs)


def _config_class(tp: Any) -> type | None:
    tp = _unwrap_optional(tp)
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _flag_fields(config: type) -> list[dataclasses.Field]:
    """The fields of a config class that are flags (``metadata["cli"] = False``: set by a calling command only)."""
    return [f for f in dataclasses.fields(config) if f.metadata.get("cli", True)]


def _add_config(parser: argparse.ArgumentParser, config: type) -> None:
    """One option per flag field of `config`; a field that is itself a config class adds its own fields."""
    field_hints = typing.get_type_hints(config)
    _, field_helps = parse_doc(config)
    for f in _flag_fields(config):
        inner = _config_class(field_hints[f.name])
        if inner is not None:
            _add_config(parser, inner)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        _add(parser, f.name, field_hints[f.name], default, field_helps.get(f.name, ""), f.metadata.get("flags"))


def add_function(parser: argparse.ArgumentParser, fn: Callable) -> None:
    hints = typing.get_type_hints(fn)
    _, helps = parse_doc(fn)
    for name, param in inspect.signature(fn).parameters.items():
        config = _config_class(hints.get(name))
        if config is None:
            _add(parser, name, hints.get(name, str), param.default, helps.get(name, ""))
        else:
            _add_config(parser, config)


def _build_config(config: type, ns: argparse.Namespace) -> Any:
    """The config object of the parsed options; an option left out (None) keeps the class's own default."""
    hints = typing.get_type_hints(config)
    values: dict[str, Any] = {}
    for f in _flag_fields(config):
        inner = _config_class(hints[f.name])
        values[f.name] = _build_config(inner, ns) if inner is not None else getattr(ns, f.name)
    return config(**{k: v for k, v in values.items() if v is not None})


def call(fn: Callable, ns: argparse.Namespace) -> Any:
    hints = typing.get_type_hints(fn)
    kwargs: dict[str, Any] = {}
    for name in inspect.signature(fn).parameters:
        config = _config_class(hints.get(name))
        kwargs[name] = getattr(ns, name) if config is None else _build_config(config, ns)
    return fn(**kwargs)
