"""Selector regular expressions (``^...$``) as Z3 regular expressions, or why not.

Layer: policy (pure). The checker matches a selector value ``^...$`` with Python's
``re.fullmatch`` (:mod:`bastion.rbac.labels`); this module translates the part of Python's
syntax whose meaning Z3's regular expressions express exactly, and refuses the rest with a
reason (the encoder then treats the match as unknown, never as a guess).

Encoded exactly: literals, ``.`` (any character but a newline), character classes with
ranges and negation, alternation, groups (capturing or not, without flags), repetition
(``*``, ``+``, ``?``, ``{m,n}``, greedy or lazy: the same set of strings), and ``^`` / ``$``
at the very start and end. Refused: flags (``(?i)``...), back references, look-arounds,
anchors elsewhere, ``\\b``, ``\\A``, ``\\Z``, the classes ``\\d``/``\\w``/``\\s`` (Unicode
sets too large to solve quickly: write ``[0-9]``), possessive and atomic forms, characters
above U+2FFFF (Z3's alphabet).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import z3

__all__ = ["MAX_CHAR", "Unsupported", "to_z3"]

MAX_CHAR = 0x2FFFF
"""The largest code point of Z3's string alphabet (``encoding=unicode``)."""

_C: Any = re._constants  # type: ignore[attr-defined]
_P: Any = re._parser  # type: ignore[attr-defined]
_RE_SORT = z3.ReSort(z3.StringSort())


class Unsupported(Exception):
    """The expression uses a construct outside the encoded fragment (the message says which)."""


def _char(code: int) -> Any:
    if code > MAX_CHAR:
        raise Unsupported(f"character U+{code:X} is above Z3's alphabet (U+{MAX_CHAR:X})")
    return z3.Re(z3.StringVal(chr(code)))


def _range(lo: int, hi: int) -> Any:
    if hi > MAX_CHAR:
        raise Unsupported(f"range up to U+{hi:X} is above Z3's alphabet (U+{MAX_CHAR:X})")
    return z3.Range(chr(lo), chr(hi))


def _complement(re_set: Any) -> Any:
    return z3.Intersect(z3.AllChar(_RE_SORT), z3.Complement(re_set))


def _class(items: list[tuple[Any, Any]]) -> Any:
    negate = False
    parts: list[Any] = []
    for op, arg in items:
        if op is _C.NEGATE:
            negate = True
        elif op is _C.LITERAL:
            parts.append(_char(arg))
        elif op is _C.RANGE:
            parts.append(_range(arg[0], arg[1]))
        else:
            raise Unsupported(f"{op} in a character class")
    union = z3.Empty(_RE_SORT) if not parts else parts[0] if len(parts) == 1 else z3.Union(*parts)
    return _complement(union) if negate else union


def _seq(items: list[Any], *, start: bool = False, end: bool = False) -> Any:
    """A sequence; ``start``/``end``: it begins/ends the whole match (where ``^``/``$`` are
    no-ops under ``fullmatch``)."""
    out = []
    ops = [op for op, _ in items]
    for i, (op, arg) in enumerate(items):
        first = start and all(o is _C.AT for o in ops[:i])
        last = end and all(o is _C.AT for o in ops[i + 1 :])
        if op is _C.AT:
            if (first and arg is _C.AT_BEGINNING) or (last and arg is _C.AT_END):
                continue
            raise Unsupported(f"anchor {str(arg).lower()} inside the expression")
        out.append(_item(op, arg, start=first, end=last))
    if not out:
        return z3.Re(z3.StringVal(""))
    return out[0] if len(out) == 1 else z3.Concat(*out)


def _item(op: Any, arg: Any, *, start: bool, end: bool) -> Any:
    if op is _C.LITERAL:
        return _char(arg)
    if op is _C.NOT_LITERAL:
        return _complement(_char(arg))
    if op is _C.ANY:
        return _complement(z3.Re(z3.StringVal("\n")))
    if op is _C.IN:
        return _class(list(arg))
    if op is _C.BRANCH:
        alternatives = [_seq(list(alt), start=start, end=end) for alt in arg[1]]
        return z3.Union(*alternatives)
    if op is _C.SUBPATTERN:
        _group, add_flags, del_flags, sub = arg
        if add_flags or del_flags:
            raise Unsupported("a group with flags")
        return _seq(list(sub), start=start, end=end)
    if op in (_C.MAX_REPEAT, _C.MIN_REPEAT):
        lo, hi, sub = arg
        body = _seq(list(sub))
        if hi == _C.MAXREPEAT:
            star = z3.Star(body)
            return star if lo == 0 else z3.Concat(z3.Loop(body, lo, lo), star)
        return z3.Loop(body, lo, hi) if (lo, hi) != (0, 0) else z3.Re(z3.StringVal(""))
    raise Unsupported(f"{str(op).lower()}")


@functools.lru_cache(maxsize=1024)
def to_z3(pattern: str) -> Any:
    """The Z3 regular expression whose language is ``{s : re.fullmatch(pattern, s)}``.

    Args:
        pattern: a selector value anchored at both ends (``^...$``).

    Returns:
        A Z3 ``ReRef``.

    Raises:
        Unsupported: the pattern uses a construct outside the encoded fragment.
    """
    try:
        parsed = _P.parse(pattern)
    except re.error as exc:
        raise Unsupported(f"invalid regular expression: {exc.msg}") from None
    if parsed.state.flags & ~re.UNICODE.value:
        raise Unsupported("flags such as (?i)")
    return _seq(list(parsed), start=True, end=True)
