"""Role mapping at a trust boundary: root roles -> leaf roles (``trusted_cluster.role_map``).

Layer: rbac (pure). Rules (docs/trusted-clusters.md):

* no mapping matches: no role, hence no access (the leaf never grants by default);
* ``remote`` is a regular expression matched against the **whole** role name (``fullmatch``:
  anchored at both ends whatever the pattern says);
* ``$1``..``$9`` in ``local`` are replaced by the match's groups, and the result must be a
  plain role name (letters, digits, ``._@+-``): a captured text that would make anything else
  (a glob, a path, an empty name) drops that one role instead of granting it.

Device trust across the boundary (:func:`remote_device_refusal`): a root user's device is in the
root's inventory, not the leaf's; where the leaf requires a trusted device it accepts the device
the root attested in the certificate (``device_id`` with a ``tpm`` attestation, or ``software``
where the leaf allows software keys), and refuses a certificate without one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from bastion.rbac.device_trust import DEVICE_REQUIRED_MESSAGE, DeviceRefusal
from bastion.types.devices import DeviceTrustPreference
from bastion.types.identity import Identity
from bastion.types.meta import NAME_PATTERN
from bastion.types.trust import RoleMapping

__all__ = ["expand_local", "map_roles", "remote_device_refusal"]

_PLACEHOLDER = re.compile(r"\$([0-9])")


def expand_local(template: str, match: re.Match[str]) -> str | None:
    """``template`` with ``$N`` replaced by group N of ``match``; None when the result is not a
    valid role name (an unknown group counts as empty)."""

    def group(m: re.Match[str]) -> str:
        index = int(m.group(1))
        if index > (match.re.groups or 0):
            return ""
        return match.group(index) or ""

    name = _PLACEHOLDER.sub(group, template)
    return name if NAME_PATTERN.match(name) else None


def map_roles(role_map: Sequence[RoleMapping], remote_roles: Iterable[str]) -> list[str]:
    """The leaf roles a root identity with ``remote_roles`` gets (sorted, no duplicates)."""
    granted: set[str] = set()
    for role in remote_roles:
        for mapping in role_map:
            try:
                match = re.fullmatch(mapping.remote, role)
            except re.error:
                continue
            if match is None:
                continue
            for template in mapping.local:
                name = expand_local(template, match)
                if name is not None:
                    granted.add(name)
    return sorted(granted)


def remote_device_refusal(
    identity: Identity, policy: DeviceTrustPreference
) -> DeviceRefusal | None:
    """Where this (leaf) cluster requires a trusted device: is the root-attested device in a
    trusted root's user certificate (``identity.origin_cluster``) good enough?"""
    root = identity.origin_cluster
    if not identity.device_id or identity.device_attestation not in ("tpm", "software"):
        return DeviceRefusal(
            f"no device attested by root cluster {root} in the certificate",
            DEVICE_REQUIRED_MESSAGE + f" (enroll it in cluster {root}, then bsh login again)",
        )
    if identity.device_attestation == "software" and not policy.allow_software:
        return DeviceRefusal(
            f"root cluster {root} attested device {identity.device_id} with a software key "
            "and this cluster does not allow software attestation",
            "access denied: this resource requires a TPM-attested device; software device keys "
            "are not allowed",
        )
    return None
