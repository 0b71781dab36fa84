"""The common shape of every resource: kind, version, metadata, spec."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["NAME_PATTERN", "Metadata", "Resource", "StrictModel"]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,252}$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9/._*-]{1,253}$")


class StrictModel(BaseModel):
    """Base for every model: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class Metadata(StrictModel):
    name: str
    """Unique within the kind; letters, digits and ``._@+-``."""
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    """Static labels, matched by role label selectors."""
    expires: datetime | None = None
    """The backend deletes the resource at this time."""
    revision: str = ""
    """Opaque; set by the server. Sending it back on update makes the update conditional."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                f"invalid name {value!r}: use letters, digits and ._@+- (at most 253 characters)"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _LABEL_KEY.match(key):
                raise ValueError(f"invalid label key {key!r}: use letters, digits and /._-")
        return value


class Resource(StrictModel):
    """A resource: subclasses pin ``kind`` and give ``spec`` a type."""

    KIND: ClassVar[str] = ""
    kind: str
    version: str = "v1"
    metadata: Metadata
    spec: Any = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @field_validator("kind")
    @classmethod
    def _check_kind(cls, value: str) -> str:
        if cls.KIND and value != cls.KIND:
            raise ValueError(f"expected kind {cls.KIND!r}, got {value!r}")
        return value

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if value != "v1":
            raise ValueError(f"unsupported version {value!r}: this server speaks v1")
        return value
