"""Attribute conditions (``where:``) of roles: the CEL language, its variables, and its checks.

Layer: types (pure). A role side may carry ``where: <CEL expression>``; this module defines the
variables an expression sees (:data:`CONDITION_SCHEMA`), checks an expression when the role is
created (:func:`check_condition`) and compiles it once per expression text
(:func:`compile_condition`). Evaluation against a request lives in :mod:`bastion.rbac.conditions`,
next to the checker that consults it (the same split as trait templates: parsed here, expanded in
``rbac``).

The engine is ``common-expression-language`` (the ``cel`` module: Python bindings of the Rust
``cel`` crate): it evaluates in about a microsecond with a prepared context, where the
pure-Python ``cel-python`` takes hundreds (docs/policy.md has the comparison).

Checks, in order (each error names what is wrong; the caller prefixes role and field):

* length (:data:`MAX_CONDITION_LENGTH`) and comprehension nesting (:data:`MAX_MACRO_DEPTH`):
  together with the engine's linear-time regular expressions they bound the cost of one
  evaluation;
* syntax (the engine's parser);
* names: every variable is one of ``user``, ``resource``, ``device``, ``request`` (or a macro's
  loop variable), and every field of those is in the schema (``user.nme`` is refused);
* types: the expression is evaluated against two probe values of the schema (all booleans false,
  then all true, so both sides of ``&&``/``||`` run); an operator applied to the wrong types, or a
  result that is not a boolean, is refused. A missing trait or label key is not an error here:
  traits and labels are open maps, and at run time a missing key makes the condition fail
  (closed).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

__all__ = [
    "CONDITION_SCHEMA",
    "MAX_CONDITION_LENGTH",
    "MAX_MACRO_DEPTH",
    "ConditionProgram",
    "check_condition",
    "compile_condition",
]

MAX_CONDITION_LENGTH = 1000
"""Longest ``where`` expression accepted (characters)."""

MAX_MACRO_DEPTH = 2
"""Deepest nesting of comprehension macros (``all``, ``exists``, ``map``, ...)."""

CONDITION_SCHEMA: dict[str, dict[str, str]] = {
    "user": {"name": "string", "roles": "list(string)", "traits": "map(string, list(string))"},
    "resource": {"kind": "string", "name": "string", "labels": "map(string, string)"},
    "device": {"trusted": "bool", "attestation": "string", "os": "string", "compliance": "string"},
    "request": {"source_ip": "string", "time": "timestamp", "mfa_verified": "bool"},
}
"""Variables of a condition and their fields. ``device`` is a placeholder (empty values) until
device trust lands; ``request.time`` reads in the cluster's time zone (``getHours()`` is the
local hour)."""

_MACROS = ("all", "exists", "exists_one", "map", "filter")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_PATH = re.compile(r"(?<![\w.])([A-Za-z_]\w*)((?:\s*\.\s*[A-Za-z_]\w*)*)")
_LOOP_VAR = re.compile(r"\.\s*(?:" + "|".join(_MACROS) + r")\s*\(\s*([A-Za-z_]\w*)\s*,")
_MACRO_CALL = re.compile(r"\.\s*(?:" + "|".join(_MACROS) + r")\s*\(")


class ConditionProgram:
    """A compiled, checked condition; :func:`compile_condition` returns a shared one per text."""

    __slots__ = ("program", "source", "uses_resource")

    def __init__(self, source: str, program: Any, uses_resource: bool) -> None:
        self.source = source
        self.program = program
        """The engine's compiled program (``cel.Program``)."""
        self.uses_resource = uses_resource
        """False: the result depends only on user, device and request, so one evaluation
        serves every resource of a request."""


def _strip_strings(text: str) -> str:
    return _STRING.sub('""', text)


def _check_bounds(text: str) -> None:
    if not text.strip():
        raise ValueError("empty condition: remove 'where' or write an expression")
    if len(text) > MAX_CONDITION_LENGTH:
        raise ValueError(
            f"condition is {len(text)} characters long; at most {MAX_CONDITION_LENGTH} allowed"
        )
    code = _strip_strings(text)
    depth = best = 0
    opened: list[bool] = []  # per open parenthesis: does it start a macro?
    macro_starts = {m.end() - 1 for m in _MACRO_CALL.finditer(code)}
    for i, ch in enumerate(code):
        if ch == "(":
            is_macro = i in macro_starts
            opened.append(is_macro)
            depth += is_macro
            best = max(best, depth)
        elif ch == ")" and opened:
            depth -= opened.pop()
    if best > MAX_MACRO_DEPTH:
        raise ValueError(
            f"comprehensions nested {best} deep; at most {MAX_MACRO_DEPTH} allowed (bounded cost)"
        )


def _check_names(text: str) -> None:
    code = _strip_strings(text)
    loop_vars = set(_LOOP_VAR.findall(code))
    for match in _PATH.finditer(code):
        name = match.group(1)
        end = match.end()
        rest = code[end:].lstrip()
        parts = [p.strip() for p in match.group(2).split(".") if p.strip()]
        if rest.startswith("("):
            if not parts:
                continue  # a function call: size(...), timestamp(...), has(...)
            parts = parts[:-1]  # a method call on a path: user.name.startsWith(...)
        if name in CONDITION_SCHEMA:
            fields = CONDITION_SCHEMA[name]
            if parts and parts[0] not in fields:
                raise ValueError(f"unknown field {name}.{parts[0]}: {name} has {', '.join(fields)}")
            continue
        if name in loop_vars or name in ("true", "false", "null", "in") or _is_keyword(name):
            continue
        raise ValueError(f"unknown variable {name!r}: use {', '.join(CONDITION_SCHEMA)}")


def _is_keyword(name: str) -> bool:
    # Type names and conversion functions may appear bare (``type(x) == string``).
    return name in {"int", "uint", "double", "string", "bytes", "bool", "list", "map", "type"}


def _probe(flag: bool) -> dict[str, Any]:
    return {
        "user": {"name": "probe", "roles": ["probe"], "traits": {}},
        "resource": {"kind": "node", "name": "probe", "labels": {}},
        "device": {"trusted": flag, "attestation": "", "os": "", "compliance": ""},
        "request": {
            "source_ip": "192.0.2.1",
            "time": datetime(2026, 1, 1, 12, tzinfo=UTC),
            "mfa_verified": flag,
        },
    }


def _check_types(program: Any) -> None:
    for flag in (False, True):
        try:
            result = program.execute(_probe(flag))
        except KeyError:
            continue  # a trait or label key absent from the probe: fine at create time
        except TypeError as exc:
            raise ValueError(f"type error: {_first_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - the engine's runtime errors vary
            message = _first_line(exc)
            if "No such key" in message or "no such key" in message:
                continue
            raise ValueError(f"invalid condition: {message}") from None
        if not isinstance(result, bool):
            raise ValueError(
                f"a condition must be true or false; this one gives a {type(result).__name__}"
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


@lru_cache(maxsize=4096)
def compile_condition(text: str) -> ConditionProgram:
    """Check and compile ``text`` once; later calls with the same text share the program.

    Raises:
        ValueError: the expression is too long or too nested, malformed, names an unknown
            variable or field, applies an operator to the wrong types, or does not give a
            boolean; the message says which.
    """
    _check_bounds(text)
    try:
        import cel  # on first use: the package imports its CLI (~0.2 s)

        program = cel.compile(text)
    except Exception as exc:  # noqa: BLE001 - the engine raises ValueError or RuntimeError
        raise ValueError(f"syntax error: {_first_line(exc)}") from None
    _check_names(text)
    _check_types(program)
    uses_resource = "resource" in set(program.variables())
    return ConditionProgram(text, program, uses_resource)


def check_condition(text: str) -> str:
    """Validate a ``where`` expression (pydantic validator helper); returns it unchanged.

    Raises:
        ValueError: as :func:`compile_condition`.
    """
    compile_condition(text)
    return text
