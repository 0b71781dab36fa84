"""Trait templates in role values: ``{{internal.logins}}``, ``{{external.team}}`` and friends.

Layer: ``types`` (pure): the syntax of role values, validated by :mod:`bastion.types.selectors`
and expanded by :mod:`bastion.rbac.checker`. This module knows strings and trait mappings only,
nothing with I/O.

Syntax (Teleport's)::

    value      := prefix? "{{" expr "}}" suffix?        at most one expression per value
    expr       := var | "email.local(" var ")" | "regexp.replace(" var "," string "," string ")"
    var        := ("internal" | "external") ( "." NAME | "[" string "]" )
    string     := '"' text with \\" and \\\\ escapes '"' | '`' raw text '`'

``internal.NAME`` reads the user trait ``NAME`` and is limited to :data:`INTERNAL_TRAITS`;
``external.NAME`` (or ``external["name.with.dots"]``) reads any trait. Missing traits expand to
nothing, so a role grants nothing from that value. ``email.local`` keeps the part before ``@``
(values without one are dropped); ``regexp.replace`` drops values the expression does not match
(searched, as Go's ``MatchString``) and replaces every match, with ``$1``/``${1}``/``${name}``
group references and ``$$`` for a literal dollar. Unknown backslash escapes inside ``"..."`` are
kept verbatim, so ``"\\.com$"`` and ``"\\\\.com$"`` both mean the regex ``\\.com$``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "INTERNAL_TRAITS",
    "EmailLocal",
    "RegexpReplace",
    "Template",
    "expand_values",
    "parse_template",
]

INTERNAL_TRAITS = frozenset(
    {
        "logins",
        "db_users",
        "db_names",
        "db_roles",
        "windows_logins",
        "kubernetes_users",
        "kubernetes_groups",
        "aws_role_arns",
    }
)
"""Trait names ``internal.NAME`` may read; anything else is most likely a typo."""

_NAMESPACES = ("internal", "external")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[.()\[\],])
      | (?P<dq>"(?:[^"\\]|\\.)*")
      | (?P<bq>`[^`]*`)
      | (?P<bad>\S)
    )""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_GROUP_REF = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z0-9_]+))")


@dataclass(frozen=True, slots=True)
class EmailLocal:
    """``email.local(var)``: the local part of an e-mail address."""

    def apply(self, value: str) -> str | None:
        """Return the part before ``@``, or ``None`` (drop) when ``value`` is not an address."""
        local, at, domain = value.rpartition("@")
        if not at or not local or not domain:
            return None
        return local


@dataclass(frozen=True, slots=True)
class RegexpReplace:
    """``regexp.replace(var, "re", "replacement")``."""

    pattern: re.Pattern[str]
    replacement: tuple[str | int, ...]
    """Literal text (``str``) and group numbers (``int``; names are resolved at parse time)."""

    def apply(self, value: str) -> str | None:
        """Replace every match; ``None`` (drop) when the expression does not match at all."""
        if self.pattern.search(value) is None:
            return None
        return self.pattern.sub(self._expand, value)

    def _expand(self, match: re.Match[str]) -> str:
        return "".join(
            part if isinstance(part, str) else (match.group(part) or "")
            for part in self.replacement
        )


Transform = EmailLocal | RegexpReplace


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed role value: literal text, or ``prefix{{expr}}suffix``."""

    text: str
    """The value as written in the role."""
    prefix: str = ""
    suffix: str = ""
    namespace: str | None = None
    """``internal``, ``external``, or ``None`` for a literal value without an expression."""
    trait: str = ""
    """Name of the trait the expression reads (``logins`` for ``internal.logins``)."""
    transform: Transform | None = field(default=None)

    @property
    def is_literal(self) -> bool:
        """True when the value holds no ``{{expression}}``."""
        return self.namespace is None

    def expand(self, traits: Mapping[str, Sequence[str]]) -> list[str]:
        """Interpolate the user's traits.

        Args:
            traits: trait name to values, as in ``User.spec.traits``.

        Returns:
            One value per trait value (deduplicated, in order), each wrapped in prefix and
            suffix. Empty when the trait is missing or no value survives the function; a
            literal template returns ``[text]``.
        """
        if self.namespace is None:
            return [self.text]
        out: list[str] = []
        for raw in traits.get(self.trait, ()):
            value = raw if self.transform is None else self.transform.apply(raw)
            if not value:
                continue  # an empty trait value must never turn into "prefix" + "" + "suffix"
            expanded = f"{self.prefix}{value}{self.suffix}"
            if expanded not in out:
                out.append(expanded)
        return out


def parse_template(text: str) -> Template:
    """Parse a role value that may hold one ``{{expression}}``.

    Args:
        text: the value as written in the role.

    Returns:
        The parsed template (cached: equal inputs return the same immutable object).

    Raises:
        ValueError: ``invalid template "<text>": <problem>`` for unbalanced braces, more than
            one expression, an unknown namespace, function or internal trait, or a bad regexp.
    """
    return _parse_cached(text)


def expand_values(values: Sequence[str], traits: Mapping[str, Sequence[str]]) -> list[str]:
    """Expand every template in ``values``; non-template values pass through.

    Args:
        values: role values (logins, label values, db users...).
        traits: the user's traits.

    Returns:
        The expanded values, deduplicated, in first-seen order.

    Raises:
        ValueError: a value is a malformed template (validated roles never have one).
    """
    out: dict[str, None] = {}
    for value in values:
        if "{{" in value or "}}" in value:
            out.update(dict.fromkeys(parse_template(value).expand(traits)))
        else:
            out[value] = None
    return list(out)


class _Invalid(Exception):
    """Internal: a problem found while parsing; wrapped into ValueError with the value."""


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Template:
    try:
        return _parse(text)
    except _Invalid as exc:
        raise ValueError(f'invalid template "{text}": {exc}') from None


def _parse(text: str) -> Template:
    opens, closes = text.count("{{"), text.count("}}")
    if opens == 0 and closes == 0:
        return Template(text=text)
    if opens > 1 or closes > 1:
        raise _Invalid("at most one {{expression}} is allowed per value")
    if closes == 0:
        raise _Invalid("missing }}")
    if opens == 0:
        raise _Invalid("missing {{")
    start, end = text.index("{{"), text.index("}}")
    if end < start:
        raise _Invalid("}} before {{")
    prefix, expr, suffix = text[:start], text[start + 2 : end], text[end + 2 :]
    tokens = _tokenize(expr)
    if not tokens:
        raise _Invalid("empty expression between {{ and }}")
    namespace, trait, transform = _Parser(tokens).expression()
    return Template(
        text=text,
        prefix=prefix,
        suffix=suffix,
        namespace=namespace,
        trait=trait,
        transform=transform,
    )


_Token = tuple[str, str]  # (kind, text): kind is "name", "punct" or "string"


def _tokenize(expr: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(expr):
        if expr[pos:].isspace():
            break
        match = _TOKEN.match(expr, pos)
        if match is None or match.lastgroup is None or match.lastgroup == "bad":
            bad = expr[pos:].strip()[:1] or expr[pos:]
            raise _Invalid(f"unexpected {bad!r} (strings need double quotes)")
        kind, token = match.lastgroup, match.group(match.lastgroup)
        if kind == "dq":
            tokens.append(("string", _unquote(token[1:-1])))
        elif kind == "bq":
            tokens.append(("string", token[1:-1]))
        else:
            tokens.append((kind, token))
        pos = match.end()
    return tokens


def _unquote(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), body, flags=re.DOTALL)


class _Parser:
    """Recursive descent over the tokens of one expression."""

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._pos = 0

    def expression(self) -> tuple[str, str, Transform | None]:
        head = self._expect("name", "internal, external, email.local or regexp.replace")
        if head in _NAMESPACES:
            namespace, trait = self._variable_after(head)
            transform: Transform | None = None
        elif head in _FUNCTIONS:
            namespace, trait, transform = self._function(head)
        else:
            raise _Invalid(
                f"unknown namespace {head!r}: use internal, external, "
                "email.local(...) or regexp.replace(...)"
            )
        if self._pos != len(self._tokens):
            raise _Invalid(f"unexpected {self._tokens[self._pos][1]!r} after the expression")
        return namespace, trait, transform

    def _function(self, namespace: str) -> tuple[str, str, Transform]:
        self._expect_punct(".")
        name = self._expect("name", f"a function name after {namespace}.")
        qualified = f"{namespace}.{name}"
        build = _FUNCTIONS[namespace].get(name)
        if build is None:
            raise _Invalid(f"unknown function {qualified}: use email.local or regexp.replace")
        self._expect_punct("(")
        var_ns = self._expect("name", f"a variable such as internal.logins in {qualified}()")
        if var_ns not in _NAMESPACES:
            raise _Invalid(f"{qualified}() takes a variable such as internal.logins or external.x")
        var = self._variable_after(var_ns)
        args: list[str] = []
        while self._peek() == ("punct", ","):
            self._pos += 1
            args.append(self._expect("string", f'a "quoted" argument to {qualified}()'))
        self._expect_punct(")")
        return var[0], var[1], build(qualified, args)

    def _variable_after(self, namespace: str) -> tuple[str, str]:
        token = self._next(f"a trait after {namespace}")
        if token == ("punct", "."):
            trait = self._expect("name", f"a trait name after {namespace}.")
        elif token == ("punct", "["):
            trait = self._expect("string", f'a "quoted" trait name in {namespace}[...]')
            self._expect_punct("]")
        else:
            raise _Invalid(f"expected . or [ after {namespace}, got {token[1]!r}")
        if not trait:
            raise _Invalid(f"empty trait name in {namespace}")
        if namespace == "internal" and trait not in INTERNAL_TRAITS:
            known = ", ".join(sorted(INTERNAL_TRAITS))
            raise _Invalid(f"unknown internal trait {trait!r}: use one of {known}, or external.")
        return namespace, trait

    def _peek(self) -> _Token | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _next(self, wanted: str) -> _Token:
        token = self._peek()
        if token is None:
            raise _Invalid(f"expression ends early: expected {wanted}")
        self._pos += 1
        return token

    def _expect(self, kind: str, wanted: str) -> str:
        token = self._next(wanted)
        if token[0] != kind:
            raise _Invalid(f"expected {wanted}, got {token[1]!r}")
        return token[1]

    def _expect_punct(self, punct: str) -> None:
        token = self._next(repr(punct))
        if token != ("punct", punct):
            raise _Invalid(f"expected {punct!r}, got {token[1]!r}")


def _build_email_local(qualified: str, args: list[str]) -> Transform:
    if args:
        raise _Invalid(f"{qualified}() takes exactly one argument, got {len(args) + 1}")
    return EmailLocal()


def _build_regexp_replace(qualified: str, args: list[str]) -> Transform:
    if len(args) != 2:
        raise _Invalid(
            f'{qualified}() takes a variable, a "regexp" and a "replacement", '
            f"got {len(args) + 1} arguments"
        )
    pattern_text, replacement = args
    try:
        pattern = re.compile(pattern_text)
    except re.error as exc:
        raise _Invalid(f"invalid regexp {pattern_text!r} in {qualified}(): {exc.msg}") from None
    return RegexpReplace(pattern, _parse_replacement(pattern, replacement, qualified))


def _parse_replacement(
    pattern: re.Pattern[str], replacement: str, qualified: str
) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    pos = 0
    for match in _GROUP_REF.finditer(replacement):
        parts.append(replacement[pos : match.start()])
        pos = match.end()
        if match.group("dollar"):
            parts.append("$")
            continue
        ref = match.group("braced") if match.group("braced") is not None else match.group("plain")
        parts.append(_group(pattern, ref, qualified))
    parts.append(replacement[pos:])
    return tuple(p for p in parts if p != "")


def _group(pattern: re.Pattern[str], ref: str, qualified: str) -> int:
    if ref.isdigit():
        if int(ref) > pattern.groups:
            raise _Invalid(
                f"replacement refers to ${ref} but the regexp in {qualified}() has "
                f"{pattern.groups} group(s)"
            )
        return int(ref)
    if ref not in pattern.groupindex:
        raise _Invalid(f"replacement refers to unknown group ${{{ref}}} in {qualified}()")
    return pattern.groupindex[ref]


_FUNCTIONS: dict[str, dict[str, Callable[[str, list[str]], Transform]]] = {
    "email": {"local": _build_email_local},
    "regexp": {"replace": _build_regexp_replace},
}
