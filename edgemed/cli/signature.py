"""Turn a typed, documented function into an argparse parser (litgpt-style: the signature is the CLI).

Parameters without a default are positional; the rest are ``--options``. ``bool`` becomes a
``--flag/--no-flag`` pair, ``list[X]`` takes several values, ``Literal[...]`` gives choices, and the
``Args:`` section of the docstring gives each option's help.
"""

from __future__ import annotations

import argparse
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


def add_function(parser: argparse.ArgumentParser, fn: Callable) -> None:
    hints = typing.get_type_hints(fn)
    _, helps = parse_doc(fn)
    for name, param in inspect.signature(fn).parameters.items():
        tp = _unwrap_optional(hints.get(name, str))
        origin = typing.get_origin(tp)
        kwargs: dict[str, Any] = {"help": helps.get(name, "")}
        positional = param.default is inspect.Parameter.empty
        if origin is list:
            inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
            kwargs["type"] = inner
            kwargs["nargs"] = "+" if positional else "*"
        elif origin is Literal:
            kwargs["choices"] = list(typing.get_args(tp))
            kwargs["type"] = type(kwargs["choices"][0])
        elif tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif tp in (int, float, str, Path):
            kwargs["type"] = tp
        if positional:
            parser.add_argument(name, **kwargs)
        else:
            kwargs["default"] = param.default
            if "action" not in kwargs and param.default is not None and kwargs["help"] is not None:
                kwargs["help"] = f"{kwargs['help']} (default: {param.default})".strip()
            kwargs["help"] = kwargs["help"].replace("%", "%%")  # argparse expands %-formats in help text
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, **kwargs)


def call(fn: Callable, ns: argparse.Namespace) -> Any:
    params = inspect.signature(fn).parameters
    return fn(**{k: getattr(ns, k) for k in params})
