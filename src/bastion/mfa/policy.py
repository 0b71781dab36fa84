"""Pure MFA policy: which factors a cluster allows or requires, the relying party settings, the
attestation policy and whether a device may be removed.

Layer: decisions (no IO, no clock). Every function returns a value or a reason string; the
service turns reasons into :class:`bastion.errors.AccessDenied` and audit events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from bastion.types.access import AuthPreferenceSpec, WebAuthnPreference
from bastion.types.mfa import MFADevice

__all__ = [
    "RelyingParty",
    "attestation_refusal",
    "default_relying_party",
    "relying_party",
    "removal_refusal",
    "required_kinds",
    "totp_enabled",
    "webauthn_enabled",
]

ZERO_AAGUID = "00000000-0000-0000-0000-000000000000"


def webauthn_enabled(second_factor: str) -> bool:
    return second_factor in ("webauthn", "on", "optional")


def totp_enabled(second_factor: str) -> bool:
    return second_factor in ("otp", "on", "optional")


def required_kinds(second_factor: str) -> frozenset[str]:
    """Device types of which a user must keep at least one (empty: no second factor needed)."""
    return {
        "otp": frozenset({"totp"}),
        "webauthn": frozenset({"webauthn"}),
        "on": frozenset({"totp", "webauthn"}),
    }.get(second_factor, frozenset())


@dataclass(frozen=True, slots=True)
class RelyingParty:
    rp_id: str
    origins: tuple[str, ...]
    user_verification: str


def default_relying_party(public_addrs: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """RP id and origins from ``host:port`` public addresses (the proxy's first).

    The RP id is the host of the first address; every address becomes an ``https://`` origin.
    """
    origins: list[str] = []
    rp_id = ""
    for addr in public_addrs:
        if not addr:
            continue
        origin = addr if addr.startswith("https://") else f"https://{addr}"
        host = urlsplit(origin).hostname or ""
        rp_id = rp_id or host
        if origin not in origins:
            origins.append(origin)
    return rp_id or "localhost", tuple(origins)


def relying_party(
    pref: WebAuthnPreference, default_rp_id: str, default_origins: Sequence[str]
) -> RelyingParty:
    return RelyingParty(
        rp_id=pref.rp_id or default_rp_id,
        origins=tuple(pref.origins or default_origins),
        user_verification=pref.user_verification,
    )


def attestation_refusal(
    pref: WebAuthnPreference, fmt: str, has_certificate_chain: bool, aaguid: str
) -> str | None:
    """Why a registration's attestation breaks the cluster's policy, or None when it passes.

    The ``webauthn`` library has already verified the statement's signature and, when roots are
    configured, its chain; this adds what the library leaves to the RP: ``direct`` needs a real
    statement (not ``none``), roots need a certificate chain (self attestation proves nothing),
    and the model must be on the allow list.
    """
    if pref.attestation == "none":
        return None
    if fmt == "none":
        return "the cluster requires attestation (attestation: direct) and the key sent none"
    if pref.attestation_roots and not has_certificate_chain:
        return "self attestation is not accepted: the key's attestation must chain to a root"
    if pref.allowed_aaguids and aaguid not in pref.allowed_aaguids:
        return f"authenticator model {aaguid} is not in allowed_aaguids"
    return None


def removal_refusal(
    devices: Sequence[MFADevice], removing: MFADevice, spec: AuthPreferenceSpec
) -> str | None:
    """Why removing ``removing`` would leave the user without a required second factor."""
    kinds = required_kinds(spec.second_factor)
    if not kinds or removing.cloned:
        return None
    remaining = [d for d in devices if d.id != removing.id and not d.cloned and d.type in kinds]
    if remaining:
        return None
    what = " or ".join(sorted(kinds))
    return (
        f"cannot remove {removing.name!r}: it is your last {what} device and the cluster "
        f"requires a second factor (second_factor: {spec.second_factor}); add another device "
        "first (bsh mfa add)"
    )
