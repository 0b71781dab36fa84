"""SCIM 2.0 filters (RFC 7644 section 3.4.2.2): the subset identity providers send.

Layer: protocols (pure: text in, a tree out; a tree and a document in, a boolean out).

Supported: ``attrPath op value`` with ``eq ne co sw ew gt ge lt le``, ``attrPath pr``,
``and`` / ``or`` (``and`` binds tighter), ``not (...)`` and parentheses. ``attrPath`` is an
attribute name with at most one sub-attribute (``emails.value``, ``name.givenName``); a URN
prefix (``urn:ietf:params:scim:schemas:core:2.0:User:userName``) is dropped. Values are
JSON strings, numbers, ``true``, ``false`` and ``null``. Value filters in brackets
(``emails[type eq "work"]``) are not supported: they are refused with :class:`FilterError`, as is
any other malformed filter, never another exception (``tests/unit/protocols/test_scim_filter.py``
fuzzes this). Attribute names compare case-insensitively (RFC 7643 section 2.1); string values
too, except ``id`` and ``externalId`` (``caseExact``).
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MAX_FILTER",
    "And",
    "Compare",
    "Filter",
    "FilterError",
    "Not",
    "Or",
    "Present",
    "matches",
    "parse_filter",
    "render",
]

MAX_FILTER = 2048
"""Longest filter accepted (characters)."""
MAX_DEPTH = 16
"""Deepest nesting of ``not``/parentheses accepted."""
CASE_EXACT = frozenset({"id", "externalid"})

Scalar = str | int | float | bool | None
CompareOp = Literal["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"]
_OPS: frozenset[str] = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})


class FilterError(ValueError):
    """A filter outside the supported grammar (SCIM ``scimType: invalidFilter``)."""


@dataclass(frozen=True, slots=True)
class Compare:
    path: str
    op: CompareOp
    value: Scalar


@dataclass(frozen=True, slots=True)
class Present:
    path: str


@dataclass(frozen=True, slots=True)
class And:
    left: Filter
    right: Filter


@dataclass(frozen=True, slots=True)
class Or:
    left: Filter
    right: Filter


@dataclass(frozen=True, slots=True)
class Not:
    inner: Filter


Filter = Compare | Present | And | Or | Not

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lp>\() | (?P<rp>\)) | (?P<lb>\[) |
        (?P<string>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*") |
        (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![\w.:])) |
        (?P<word>[A-Za-z][\w:.$-]*)
    )""",
    re.VERBOSE,
)
_ATTR = re.compile(r"[A-Za-z][\w$-]*(?:\.[A-Za-z][\w$-]*)?")
_URN = re.compile(r"urn:[\w.:-]*:", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.lastgroup is None:
            raise FilterError(f"unexpected character at position {pos}: {text[pos : pos + 12]!r}")
        if m.lastgroup == "lb":
            raise FilterError("value filters in brackets ([...]) are not supported")
        out.append(_Tok(m.lastgroup, m.group(m.lastgroup), m.start(m.lastgroup)))
        pos = m.end()
    return out


def _attr_path(word: str) -> str:
    urn = _URN.match(word)
    path = word[urn.end() :] if urn else word
    if not _ATTR.fullmatch(path):
        raise FilterError(f"invalid attribute path {word!r}")
    return path


class _Parser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise FilterError("the filter ends too early")
        self.i += 1
        return tok

    def keyword(self, tok: _Tok | None, word: str) -> bool:
        return tok is not None and tok.kind == "word" and tok.text.lower() == word

    def expr(self, depth: int) -> Filter:
        if depth > MAX_DEPTH:
            raise FilterError(f"the filter nests deeper than {MAX_DEPTH} levels")
        node = self.term(depth)
        while self.keyword(self.peek(), "or"):
            self.take()
            node = Or(node, self.term(depth))
        return node

    def term(self, depth: int) -> Filter:
        node = self.factor(depth)
        while self.keyword(self.peek(), "and"):
            self.take()
            node = And(node, self.factor(depth))
        return node

    def factor(self, depth: int) -> Filter:
        tok = self.take()
        if self.keyword(tok, "not"):
            if self.take().kind != "lp":
                raise FilterError("'not' must be followed by a parenthesised filter")
            inner = self.expr(depth + 1)
            self.close()
            return Not(inner)
        if tok.kind == "lp":
            inner = self.expr(depth + 1)
            self.close()
            return inner
        if tok.kind != "word":
            raise FilterError(f"expected an attribute at position {tok.pos}, got {tok.text!r}")
        path = _attr_path(tok.text)
        op_tok = self.take()
        op = op_tok.text.lower()
        if op_tok.kind != "word" or (op != "pr" and op not in _OPS):
            raise FilterError(f"unknown operator {op_tok.text!r} at position {op_tok.pos}")
        if op == "pr":
            return Present(path)
        return Compare(path, op, self.value())  # type: ignore[arg-type]

    def value(self) -> Scalar:
        tok = self.take()
        if tok.kind == "string":
            try:
                text: str = json.loads(tok.text)
            except ValueError:
                raise FilterError(f"invalid string at position {tok.pos}") from None
            return text
        if tok.kind == "number":
            if not any(c in tok.text for c in ".eE"):
                return int(tok.text)
            number = float(tok.text)
            if math.isinf(number):
                raise FilterError(f"number out of range at position {tok.pos}")
            return number
        words: dict[str, Scalar] = {"true": True, "false": False, "null": None}
        if tok.kind == "word" and tok.text.lower() in words:
            return words[tok.text.lower()]
        raise FilterError(f"expected a value at position {tok.pos}, got {tok.text!r}")

    def close(self) -> None:
        tok = self.peek()
        if tok is None or tok.kind != "rp":
            raise FilterError("a parenthesis is not closed")
        self.take()


def parse_filter(text: str) -> Filter:
    """Parse a SCIM filter.

    Raises:
        FilterError: empty, too long, or outside the supported grammar (the message says where).
    """
    if len(text) > MAX_FILTER:
        raise FilterError(f"the filter is longer than {MAX_FILTER} characters")
    tokens = _tokens(text)
    if not tokens:
        raise FilterError("the filter is empty")
    parser = _Parser(tokens)
    node = parser.expr(0)
    rest = parser.peek()
    if rest is not None:
        raise FilterError(f"unexpected {rest.text!r} at position {rest.pos}")
    return node


def render(node: Filter) -> str:
    """The filter as text (``parse_filter(render(f)) == f``)."""
    if isinstance(node, Compare):
        return f"{node.path} {node.op} {json.dumps(node.value)}"
    if isinstance(node, Present):
        return f"{node.path} pr"
    if isinstance(node, Not):
        return f"not ({render(node.inner)})"
    word = "and" if isinstance(node, And) else "or"
    return f"({render(node.left)}) {word} ({render(node.right)})"


# ---- evaluation ----------------------------------------------------------------------------------


def _lookup(doc: Mapping[str, object], name: str) -> object:
    lowered = name.lower()
    for key, value in doc.items():
        if key.lower() == lowered:
            return value
    return None


def _values(doc: Mapping[str, object], path: str) -> list[object]:
    """Every value at ``path`` (multi-valued attributes and sub-attributes flattened)."""
    head, _, sub = path.partition(".")
    found = _lookup(doc, head)
    items = found if isinstance(found, list) else [found]
    if not sub:
        # A filter on a complex multi-valued attribute without a sub-attribute means its value.
        return [_lookup(i, "value") if isinstance(i, Mapping) else i for i in items]
    return [_lookup(i, sub) for i in items if isinstance(i, Mapping)]


def _compare(actual: object, op: str, expected: Scalar, exact: bool) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        a, e = (actual, expected) if exact else (actual.lower(), expected.lower())
        checks = {
            "eq": a == e,
            "ne": a != e,
            "co": e in a,
            "sw": a.startswith(e),
            "ew": a.endswith(e),
            "gt": a > e,
            "ge": a >= e,
            "lt": a < e,
            "le": a <= e,
        }
        return checks[op]
    if op == "eq":
        return actual == expected and type(actual) is type(expected)
    if op == "ne":
        return not (actual == expected and type(actual) is type(expected))
    ordered = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}
    if op in ordered and _number(actual) and _number(expected):
        return bool(ordered[op](float(actual), float(expected)))  # type: ignore[arg-type]
    return False


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def matches(node: Filter, doc: Mapping[str, object]) -> bool:
    """Does the SCIM document ``doc`` (a resource as JSON) match ``node``?"""
    if isinstance(node, And):
        return matches(node.left, doc) and matches(node.right, doc)
    if isinstance(node, Or):
        return matches(node.left, doc) or matches(node.right, doc)
    if isinstance(node, Not):
        return not matches(node.inner, doc)
    values = [v for v in _values(doc, node.path) if v is not None and v != "" and v != []]
    if isinstance(node, Present):
        return bool(values)
    exact = node.path.split(".", 1)[0].lower() in CASE_EXACT
    if node.op == "ne":
        return all(_compare(v, "ne", node.value, exact) for v in values)
    if node.value is None:
        return node.op == "eq" and not values
    return any(_compare(v, node.op, node.value, exact) for v in values)
