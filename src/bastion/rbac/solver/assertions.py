"""The assertion file of ``bctl policy verify`` (docs/policy.md): schema and loading.

Layer: policy (pure): text in, models out; the CLI reads the file. Example::

    assertions:
      - name: only-dbas-reach-prod-as-root
        resource: {labels: {env: prod}}
        login: root
        expect: only
        only: {traits: {team: [dba]}}
      - name: prod-requires-session-mfa
        resource: {labels: {env: prod}}
        expect: session_mfa
      - name: contractor-never-pci
        user: {roles: [contractor], other_roles: false}
        resource: {labels: {pci: "yes"}}
        expect: unreachable

``user``, ``resource`` and ``login`` narrow the accesses the assertion is about (omitted: every
user, every node, every login); ``expect`` says what must be true of each of them.
"""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bastion.errors import BadParameter

__all__ = ["Assertion", "AssertionFile", "ResourceScope", "UserScope", "load_assertions"]


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UserScope(_Strict):
    """Users: every field given must hold (omitted: any user)."""

    name: str | None = None
    """The user's name (``user.name`` in conditions)."""
    roles: list[str] = Field(default_factory=list)
    """Roles the user holds (all of them)."""
    other_roles: bool = True
    """May the user hold roles besides ``roles``? ``false``: exactly ``roles``."""
    traits: dict[str, list[str]] = Field(default_factory=dict)
    """Trait values the user has: ``{team: [dba]}``: ``dba`` is among the ``team`` values."""

    @field_validator("traits", mode="before")
    @classmethod
    def _trait_lists(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: _as_list(v) for k, v in value.items()}
        return value


class ResourceScope(_Strict):
    """Nodes: every field given must hold (omitted: any node)."""

    name: str | None = None
    labels: dict[str, list[str]] = Field(default_factory=dict)
    """``{env: prod}``: the node has label env=prod; a list means any one of the values."""

    @field_validator("labels", mode="before")
    @classmethod
    def _label_lists(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: _as_list(v) for k, v in value.items()}
        return value


class Assertion(_Strict):
    """One question about the role set, answered for every user, node, login and request."""

    name: str = Field(min_length=1)
    description: str = ""
    user: UserScope = Field(default_factory=UserScope)
    resource: ResourceScope = Field(default_factory=ResourceScope)
    login: list[str] = Field(default_factory=list)
    """The logins concerned (a string or a list); omitted: every login."""
    expect: Literal["unreachable", "session_mfa", "only"]
    """``unreachable``: no access in scope is allowed; ``session_mfa``: every allowed access in
    scope needs per-session MFA; ``only``: every allowed access in scope is by a user matching
    ``only``."""
    only: UserScope | None = None

    @field_validator("login", mode="before")
    @classmethod
    def _login_list(cls, value: object) -> object:
        return _as_list(value)

    @model_validator(mode="after")
    def _only_with_expect_only(self) -> Assertion:
        if self.expect == "only" and self.only is None:
            raise ValueError("expect: only needs 'only:' (the users allowed, e.g. traits)")
        if self.expect != "only" and self.only is not None:
            raise ValueError(f"'only:' is for expect: only, not expect: {self.expect}")
        return self


class AssertionFile(_Strict):
    assertions: list[Assertion] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> AssertionFile:
        seen: set[str] = set()
        for item in self.assertions:
            if item.name in seen:
                raise ValueError(f"assertion {item.name!r} is defined twice")
            seen.add(item.name)
        return self


def _where(error: ValidationError) -> str:
    first = error.errors()[0]
    path = ""
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = first["msg"].removeprefix("Value error, ")
    return f"{path}: {message}" if path else message


def load_assertions(text: str, source: str = "assertions") -> list[Assertion]:
    """Parse and validate an assertion file.

    Args:
        text: the YAML (or JSON) text.
        source: the file name, for messages.

    Returns:
        The assertions, in file order.

    Raises:
        BadParameter: one line naming the file and the field, e.g.
            ``a.yaml: assertions[0].expect: Input should be 'unreachable', ...``.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise BadParameter(f"{source}:{where} not valid YAML") from None
    if not isinstance(data, dict):
        raise BadParameter(f"{source}: expected a mapping with 'assertions:'")
    try:
        return AssertionFile.model_validate(data).assertions
    except ValidationError as exc:
        raise BadParameter(f"{source}: {_where(exc)}") from None
