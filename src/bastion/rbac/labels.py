"""Label selectors of roles matched against resource labels, with an explanation on failure.

Layer: policy (pure). Knows strings and mappings only; templates are expanded before a selector
is compiled (see :class:`bastion.rbac.checker.RoleSet`).

Rules (a selector is ``{key: [values]}``; every key must match, a key matches if any value does):

* ``{"*": ["*"]}`` matches every resource, even one without labels;
* an empty selector matches nothing (a role must say what it grants);
* a key with no values (e.g. all its templates expanded to nothing) matches nothing;
* value ``*`` matches any value, but the resource must have the key;
* ``^...$`` (anchored at both ends) is a regular expression that must match the whole value;
* anything else is compared exactly (no globbing: ``web-*`` matches only ``web-*``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "WILDCARD",
    "LabelMatch",
    "LabelSelector",
    "ValueMatcher",
    "compile_regex",
    "is_regex",
    "match_labels",
]

WILDCARD = "*"


def is_regex(value: str) -> bool:
    """True when a selector value is a regular expression: ``^`` first and ``$`` last."""
    return len(value) >= 2 and value.startswith("^") and value.endswith("$")


@functools.lru_cache(maxsize=4096)
def compile_regex(value: str) -> re.Pattern[str]:
    """Compile (once, cached) a selector regular expression.

    Args:
        value: an anchored expression such as ``^web-[0-9]+$``.

    Returns:
        The compiled pattern.

    Raises:
        ValueError: the expression does not compile (validated roles never have one).
    """
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc.msg}") from None


@dataclass(frozen=True, slots=True)
class ValueMatcher:
    """A compiled list of selector values: ``*``, exact strings and ``^regex$``."""

    values: tuple[str, ...]
    """The values as written (after template expansion), for explanations."""
    any_value: bool
    exact: frozenset[str]
    regexes: tuple[re.Pattern[str], ...]

    @classmethod
    def compile(cls, values: Iterable[str]) -> ValueMatcher:
        """Compile selector values.

        Args:
            values: ``*``, exact strings and ``^regex$`` values.

        Returns:
            The matcher.

        Raises:
            ValueError: a regular expression does not compile.
        """
        listed = tuple(dict.fromkeys(values))
        return cls(
            values=listed,
            any_value=WILDCARD in listed,
            exact=frozenset(v for v in listed if not is_regex(v)),
            regexes=tuple(compile_regex(v) for v in listed if is_regex(v)),
        )

    def matches(self, value: str) -> bool:
        """True when ``value`` is matched by any of the selector values."""
        if self.any_value or value in self.exact:
            return True
        return any(regex.fullmatch(value) for regex in self.regexes)


@dataclass(frozen=True, slots=True)
class LabelMatch:
    """The outcome of matching a selector, with what failed for explanations."""

    matched: bool
    key: str | None = None
    """The selector key that failed (``None`` when matched or the selector is empty)."""
    value: str | None = None
    """The resource's value for ``key``; ``None`` when the resource lacks that label."""
    expected: tuple[str, ...] = ()
    """The selector values for ``key``."""

    @property
    def reason(self) -> str:
        """Human-readable explanation, e.g. ``label env=prod not in [staging, ^dev-.*$]``."""
        if self.matched:
            return "labels match"
        if self.key is None:
            return "no labels selected"
        wanted = "[" + ", ".join(self.expected) + "]"
        if not self.expected:
            return f"label {self.key} selects no values (templates expanded to nothing)"
        if self.value is None:
            return f"label {self.key} missing (wanted {wanted})"
        return f"label {self.key}={self.value} not in {wanted}"


_MATCHED = LabelMatch(matched=True)
_EMPTY = LabelMatch(matched=False)


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A compiled selector: use :meth:`compile`, then :meth:`matches` or :meth:`match`."""

    entries: tuple[tuple[str, ValueMatcher], ...]
    """Keys to check, in order; a ``*: *`` entry is folded into :attr:`match_all`."""
    match_all: bool
    """True for a selector holding ``*: *``: keys other than ``*`` must still match."""

    @classmethod
    def compile(cls, selector: Mapping[str, Sequence[str]]) -> LabelSelector:
        """Compile ``{key: [values]}``.

        Args:
            selector: a role's label selector (templates already expanded).

        Returns:
            The compiled selector.

        Raises:
            ValueError: a regular expression does not compile.
        """
        entries: list[tuple[str, ValueMatcher]] = []
        match_all = False
        for key, values in selector.items():
            if key == WILDCARD and WILDCARD in values:
                match_all = True
            else:
                entries.append((key, ValueMatcher.compile(values)))
        return cls(entries=tuple(entries), match_all=match_all)

    @property
    def is_empty(self) -> bool:
        """True when the selector selects nothing at all."""
        return not self.entries and not self.match_all

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Fast path: True when every key of the selector matches ``labels``."""
        if not self.entries:
            return self.match_all
        for key, matcher in self.entries:
            value = labels.get(key)
            if value is None or not matcher.matches(value):
                return False
        return True

    def match(self, labels: Mapping[str, str]) -> LabelMatch:
        """Like :meth:`matches`, with the first key that failed.

        Args:
            labels: the resource's labels.

        Returns:
            ``LabelMatch(matched=True)`` or the failing key, the resource value and the
            selector values.
        """
        if not self.entries:
            return _MATCHED if self.match_all else _EMPTY
        for key, matcher in self.entries:
            value = labels.get(key)
            if value is None or not matcher.matches(value):
                return LabelMatch(matched=False, key=key, value=value, expected=matcher.values)
        return _MATCHED


def match_labels(selector: Mapping[str, Sequence[str]], labels: Mapping[str, str]) -> LabelMatch:
    """Match one selector against resource labels (compiles each call; regexes are cached).

    Args:
        selector: ``{key: [values]}`` as in ``RoleConditions.node_labels``.
        labels: the resource's labels.

    Returns:
        The match with its reason.

    Raises:
        ValueError: a regular expression in the selector does not compile.
    """
    return LabelSelector.compile(selector).match(labels)
