"""What each config key accepts, in words: one translation of every bad value.

A key's type (from the constructors' signatures) becomes a small JSON *spec*, e.g.
`{"t": "float", "gt": 0}`. `check(spec, text)` says what is wrong with a value as typed
on the command line and `describe(spec)` what is allowed, whether the refusal comes from
the full parse or from the fast check (`config.fast_check`, which reads the catalog's
specs from `configs/keys.json`): the messages and the generated file are described in
docs/configuration.md (Overrides).

This module imports only the standard library and PyYAML at the top.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

#: The generated specs of every catalog experiment: {experiment: {public key: spec}}.
KEYS_FILE = Path(__file__).resolve().parent.parent / "configs" / "keys.json"

_BOUND_WORDS = {"gt": "above", "ge": "at least", "lt": "below", "le": "at most"}
_KIND_WORDS = {"bool": "true or false", "str": "text", "null": "null"}
_NULL_WORDS = ("null", "~")


# --- annotation -> spec (needs the live types; imported lazily) ----------------------------


def _restricted_bounds() -> dict[type, dict[str, float]]:
    """jsonargparse's restricted number types (public names) and their bounds."""
    from jsonargparse import typing as jt

    return {
        jt.PositiveInt: {"gt": 0},
        jt.PositiveFloat: {"gt": 0},
        jt.NonNegativeInt: {"ge": 0},
        jt.NonNegativeFloat: {"ge": 0},
        jt.ClosedUnitInterval: {"ge": 0, "le": 1},
        jt.OpenUnitInterval: {"gt": 0, "lt": 1},
    }


def spec_of(annotation: Any) -> dict[str, Any]:
    """A type annotation -> its JSON spec."""
    import collections.abc
    import datetime
    import os
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None) or annotation is None:
        return {"t": "null"}
    if origin in (typing.Union, types.UnionType):
        members: list[dict[str, Any]] = []
        for arg in args:
            spec = spec_of(arg)
            for member in spec["of"] if spec["t"] == "union" else [spec]:
                if member not in members:
                    members.append(member)
        choices = [c for m in members if m["t"] == "choice" for c in m["of"]]
        if choices:  # Literal[64, 32] | Literal['16-mixed', ...]: one choice
            merged = {"t": "choice", "of": list({str(c): c for c in choices}.values())}
            members = [merged, *(m for m in members if m["t"] != "choice")]
        return members[0] if len(members) == 1 else {"t": "union", "of": members}
    if origin is typing.Literal:
        return {"t": "choice", "of": list({str(a): a for a in args}.values())}
    sequences = (list, tuple, collections.abc.Sequence, collections.abc.Iterable, set)
    if origin in sequences:
        items = [spec_of(a) for a in args] if args and args[-1] is not Ellipsis else []
        same = bool(items) and all(i == items[0] for i in items)  # tuple[int, int]: int
        return {"t": "list", "of": items[0] if same else {"t": "any"}}
    if origin in (dict, collections.abc.Mapping) or annotation is dict:
        return {"t": "any", "what": "a mapping such as {hours: 1}"}
    if annotation is datetime.timedelta:
        return {"t": "any", "what": "a duration"}
    bounds = _restricted_bounds().get(annotation)
    for base, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(annotation, type) and issubclass(annotation, base):
            return {"t": name, **(bounds or {})}
    if annotation in (os.PathLike,) or getattr(annotation, "__name__", "") in ("Path", "PurePath"):
        return {"t": "str"}
    if isinstance(annotation, type):
        return {"t": "any", "what": f"a {annotation.__name__} (class path)"}
    return {"t": "any"}


# --- spec -> words ---------------------------------------------------------------------------


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def describe(spec: dict[str, Any]) -> str:
    """What `spec` allows, in words: "a number above 0", "a whole number, or null"."""
    kind = spec["t"]
    bounds = " and ".join(
        f"{_BOUND_WORDS[b]} {_number(spec[b])}" for b in ("gt", "ge", "lt", "le") if b in spec
    )
    if kind in ("int", "float"):
        words = "a whole number" if kind == "int" else "a finite number"
        return f"{words} {bounds}" if bounds else words
    if kind in _KIND_WORDS:
        return _KIND_WORDS[kind]
    if kind == "choice":
        if len(spec["of"]) == 1:
            return str(spec["of"][0])
        return "one of " + ", ".join(str(c) for c in spec["of"])
    if kind == "list":
        return f"a list of {_plural(describe(spec['of']))}, such as [{_example(spec['of'])}]"
    if kind == "union":
        numbers = {m["t"] for m in spec["of"]} >= {"int", "float"}  # a float takes an int too
        words = [
            describe(m)
            for m in spec["of"]
            if m["t"] != "null" and not (numbers and m == {"t": "int"})
        ]
        null = ", or null" if any(m["t"] == "null" for m in spec["of"]) else ""
        return " or ".join(dict.fromkeys(words)) + null
    return spec.get("what", "a value")


def _plural(words: str) -> str:
    return re.sub(r"^an? (whole number|finite number|number|value)", r"\1s", words)


def _example(spec: dict[str, Any]) -> str:
    return {"int": "64, 32", "float": "0.1, 0.2", "str": "a, b"}.get(spec["t"], "...")


# --- checking a value as typed ---------------------------------------------------------------


def typed_value(text: str) -> Any:
    """A command-line value as the config parser reads it: YAML, else the text itself."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _as_number(value: Any, text: str) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    try:
        number = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _bound_problem(spec: dict[str, Any], number: float) -> str | None:
    checks = {
        "gt": lambda b: number > b,
        "ge": lambda b: number >= b,
        "lt": lambda b: number < b,
        "le": lambda b: number <= b,
    }
    for name, holds in checks.items():
        if name in spec and not holds(spec[name]):
            return f"must be {_BOUND_WORDS[name]} {_number(spec[name])}"
    return None


def check(spec: dict[str, Any], text: str, value: Any = None) -> str | None:
    """None if `text` (a value as typed) is allowed by `spec`, else what is wrong with it."""
    value = typed_value(text) if value is None else value
    kind = spec["t"]
    if kind == "any":
        return None
    if kind == "str":  # YAML lists and mappings are not text to the parser
        return "not text" if isinstance(value, list | dict) else None
    if kind == "null":
        return None if value is None or str(text).strip().lower() in _NULL_WORDS else "not null"
    if kind == "bool":
        ok = isinstance(value, bool) or str(text).strip().lower() in ("true", "false")
        return None if ok else "not true or false"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return "not a whole number"
        return _bound_problem(spec, value)
    if kind == "float":
        number = _as_number(value, text)
        if number is None:
            return "not a number"
        return _bound_problem(spec, number) or (None if math.isfinite(number) else "not finite")
    if kind == "choice":
        ok = any(str(value) == str(c) or text == str(c) for c in spec["of"])
        if not ok and "aliases" in spec:  # names as people type them (`SELU`, `silu`)
            squashed = re.sub(r"[-_ ]", "", str(text).lower())
            ok = squashed in spec["aliases"] or any(
                re.sub(r"[-_ ]", "", str(c)) == squashed for c in spec["of"]
            )
        return None if ok else "not one of " + ", ".join(str(c) for c in spec["of"])
    if kind == "list":
        if not isinstance(value, list | tuple):
            return "not a list"
        for item in value:
            problem = check(spec["of"], json.dumps(item), item)
            if problem:
                return f"item {item!r} is {problem}"
        return None
    return _check_union(spec, text, value)


def _check_union(spec: dict[str, Any], text: str, value: Any) -> str | None:
    problems = [check(member, text, value) for member in spec["of"]]
    if any(p is None for p in problems):
        return None
    # A number outside a numeric member's bounds: say the bound (`--threads -1: must be above 0`);
    # else what the value is not, by the first member that is not null.
    bounded = [p for p in problems if p and p.startswith("must be")]
    if bounded:
        return bounded[0]
    first = next(p for m, p in zip(spec["of"], problems, strict=True) if m["t"] != "null")
    return first if first.startswith("not ") else "not " + describe(spec)


def refusal(key: str, text: str, spec: dict[str, Any]) -> str | None:
    """`--KEY VALUE: what is wrong; what is allowed[; did you mean ...]`, or None if allowed."""
    problem = check(spec, text)
    if problem is None:
        return None
    shown = text if text.strip() else repr(text)
    members = spec["of"] if spec["t"] == "union" else [spec]
    choices = {str(c).lower(): str(c) for m in members if m["t"] == "choice" for c in m["of"]}
    close = difflib.get_close_matches(str(text).lower(), list(choices), n=1)
    hint = f"; did you mean {choices[close[0]]}?" if close else ""
    allowed = describe(spec)
    if problem.startswith("not one of") or problem == f"not {allowed}":
        return f"--{key} {shown}: {problem}{hint}"
    return f"--{key} {shown}: {problem}; allowed: {allowed}{hint}"


# --- the generated file and the fast check --------------------------------------------------


@cache
def catalog_specs() -> dict[str, dict[str, dict[str, Any]]]:
    """{experiment: {public key: spec}} as generated into configs/keys.json ({} if absent)."""
    try:
        return json.loads(KEYS_FILE.read_text())
    except (OSError, ValueError):
        return {}


def dump(specs: dict[str, Any]) -> str:
    """keys.json's text: one line per key, sorted, so a change shows as a one-line diff."""
    blocks = []
    for name, keys in sorted(specs.items()):
        lines = [
            f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(keys.items())
        ]
        blocks.append(f" {json.dumps(name)}: {{\n" + ",\n".join(lines) + "\n }")
    return "{\n" + ",\n".join(blocks) + "\n}\n"
