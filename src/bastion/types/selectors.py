"""Validation of label selectors and trait templates as they appear in roles.

Only syntax is checked here; matching and template expansion live in :mod:`bastion.rbac`.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from bastion.types.templates import parse_template

__all__ = [
    "LabelSelector",
    "LabelValues",
    "SelectorValue",
    "validate_label_selector",
    "validate_string_value",
]

LabelValues = str | list[str]


def validate_string_value(value: str) -> str:
    """Check one selector value: plain text, ``*``, ``^regex$`` or a ``{{template}}``."""
    if "{{" in value or "}}" in value:
        parse_template(value)  # raises ValueError with a message naming the problem
        return value
    if value.startswith("^") or value.endswith("$"):
        # A selector value is a regular expression when anchored at both ends (Teleport's
        # convention); half-anchored text would silently be matched literally, so refuse it.
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f'invalid regular expression "{value}": {exc.msg}') from None
        if not (value.startswith("^") and value.endswith("$")):
            raise ValueError(
                f'invalid regular expression "{value}": anchor it at both ends (^...$) '
                "or remove the anchor to match the text exactly"
            )
    return value


def validate_label_selector(selector: dict[str, LabelValues]) -> dict[str, list[str]]:
    """Normalize ``{key: value | [values]}`` to lists and check every value."""
    out: dict[str, list[str]] = {}
    for key, raw in selector.items():
        values = [raw] if isinstance(raw, str) else list(raw)
        for value in values:
            try:
                validate_string_value(value)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        out[key] = values
    return out


def check_selector_keys(selector: dict[str, list[str]]) -> dict[str, list[str]]:
    """The wildcard key ``*`` only makes sense as ``'*': '*'`` (match every resource)."""
    if "*" in selector and selector["*"] != ["*"]:
        raise ValueError("the wildcard label key '*' only accepts the value '*'")
    return selector


def _selector_values(raw: object) -> list[str]:
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("expected a string or a list of strings")
    for value in values:
        validate_string_value(value)
    return list(values)


SelectorValue = Annotated[list[str], BeforeValidator(_selector_values)]
LabelSelector = Annotated[dict[str, SelectorValue], AfterValidator(check_selector_keys)]
"""``{label: value | [values]}``; errors are reported at ``...labels.<key>``."""
