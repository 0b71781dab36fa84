"""A parser for CEL ``where`` conditions, into a small tree the encoder reads.

Layer: policy (pure). The engine (``cel``) exposes no syntax tree, so the solver parses the
expressions itself. The grammar is CEL's (precedence: ``?:`` < ``||`` < ``&&`` < relations
< ``+ -`` < ``* / %`` < unary < member access < primary); the parser accepts every expression
of that shape, and the encoder (:mod:`bastion.rbac.solver.encode`) decides which nodes it can
encode exactly. Syntax outside it (bytes, raw or triple-quoted strings, floats, unsigned
literals, map literals) raises :class:`ParseError`: the encoder then treats the whole
condition as unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Binary",
    "Call",
    "Cond",
    "Index",
    "ListLit",
    "Lit",
    "Member",
    "Node",
    "ParseError",
    "Unary",
    "Var",
    "parse",
]


class ParseError(ValueError):
    """The expression is outside the syntax the solver reads."""


@dataclass(frozen=True, slots=True)
class Lit:
    value: str | int | bool | None


@dataclass(frozen=True, slots=True)
class Var:
    name: str


@dataclass(frozen=True, slots=True)
class Member:
    target: Node
    field: str


@dataclass(frozen=True, slots=True)
class Index:
    target: Node
    key: Node


@dataclass(frozen=True, slots=True)
class Call:
    """``name(args)`` when ``target`` is None, else the method ``target.name(args)``."""

    target: Node | None
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class ListLit:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Cond:
    test: Node
    then: Node
    other: Node


Node = Lit | Var | Member | Index | Call | ListLit | Unary | Binary | Cond

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<num>\d+(?![\w.]))
      | (?P<name>[A-Za-z_]\w*)
      | (?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\],.?:+\-*/%])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "`": "`"}
_RELATIONS = ("==", "!=", "<", "<=", ">", ">=", "in")


def _unquote(token: str) -> str:
    body = token[1:-1]

    def escape(match: re.Match[str]) -> str:
        char = match.group(1)
        if char not in _ESCAPES:
            raise ParseError(f"escape \\{char} in a string")
        return _ESCAPES[char]

    return re.sub(r"\\(.)", escape, body)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].isspace():
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            raise ParseError(f"syntax at {text[pos:].strip()[:20]!r}")
        kind = match.lastgroup
        token = match.group(kind)
        if kind == "name" and text[match.end() : match.end() + 1] in ('"', "'"):
            raise ParseError(f"string prefix {token!r} (raw or bytes strings)")
        out.append((kind, token))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, text: str) -> bool:
        token = self.peek()
        if token is not None and token[1] == text and token[0] in ("op", "name"):
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.take(text):
            raise ParseError(f"expected {text!r}")

    def expression(self) -> Node:
        test = self.binary(0)
        if self.take("?"):
            then = self.expression()
            self.expect(":")
            return Cond(test, then, self.expression())
        return test

    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("||",),
        ("&&",),
        _RELATIONS,
        ("+", "-"),
        ("*", "/", "%"),
    )

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            token = self.peek()
            if token is None or token[1] not in self._LEVELS[level] or token[0] == "str":
                return left
            self.pos += 1
            left = Binary(token[1], left, self.binary(level + 1))

    def unary(self) -> Node:
        if self.take("!"):
            return Unary("!", self.unary())
        if self.take("-"):
            return Unary("-", self.unary())
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.take("."):
                token = self.peek()
                if token is None or token[0] != "name":
                    raise ParseError("expected a field name after '.'")
                self.pos += 1
                if self.take("("):
                    node = Call(node, token[1], self.arguments(")"))
                else:
                    node = Member(node, token[1])
            elif self.take("["):
                key = self.expression()
                self.expect("]")
                node = Index(node, key)
            else:
                return node

    def arguments(self, close: str) -> tuple[Node, ...]:
        args: list[Node] = []
        if self.take(close):
            return ()
        while True:
            args.append(self.expression())
            if self.take(close):
                return tuple(args)
            self.expect(",")

    def primary(self) -> Node:
        token = self.peek()
        if token is None:
            raise ParseError("the expression ends early")
        kind, text = token
        self.pos += 1
        if kind == "str":
            return Lit(_unquote(text))
        if kind == "num":
            return Lit(int(text))
        if kind == "name":
            if text in ("true", "false"):
                return Lit(text == "true")
            if text == "null":
                return Lit(None)
            if self.take("("):
                return Call(None, text, self.arguments(")"))
            return Var(text)
        if text == "(":
            inner = self.expression()
            self.expect(")")
            return inner
        if text == "[":
            return ListLit(self.arguments("]"))
        raise ParseError(f"unexpected {text!r}")


def parse(text: str) -> Node:
    """The syntax tree of a ``where`` expression.

    Raises:
        ParseError: the expression uses syntax outside the parsed subset (or is malformed).
    """
    parser = _Parser(_tokens(text))
    node = parser.expression()
    if parser.peek() is not None:
        raise ParseError(f"unexpected {parser.peek()[1]!r}")  # type: ignore[index]
    return node
