"""Resource models and the identity document.

Every resource is ``kind``, ``version``, ``metadata`` and ``spec`` (see :mod:`.meta`); models are
pydantic with ``extra="forbid"`` so a typo is an error, never silently ignored. This package knows
nothing about storage, HTTP or policy evaluation.
"""

from bastion.types.access import (
    AuthPreference,
    Lock,
    ProvisionToken,
    Role,
    User,
)
from bastion.types.authority import CertAuthority
from bastion.types.codec import RESOURCE_KINDS, dump_resource, load_resources, parse_resource
from bastion.types.duration import format_duration, parse_duration
from bastion.types.identity import Identity
from bastion.types.inventory import Node
from bastion.types.meta import Metadata, Resource

__all__ = [
    "RESOURCE_KINDS",
    "AuthPreference",
    "CertAuthority",
    "Identity",
    "Lock",
    "Metadata",
    "Node",
    "ProvisionToken",
    "Resource",
    "Role",
    "User",
    "dump_resource",
    "format_duration",
    "load_resources",
    "parse_duration",
    "parse_resource",
]
