"""Multi-factor authentication: WebAuthn (security keys and passkeys) and TOTP.

* :mod:`.policy` (pure): which factors a cluster allows or requires, the relying party, the
  attestation policy, device removal.
* :mod:`.store` (backend): devices, user handles, single-use challenges.
* :mod:`.service` (IO): :class:`MFAService`, the relying party used by login, per-session MFA
  and admin-action MFA. Others use ``AuthServer.mfa``: ``begin_challenge(user, scope)`` then
  ``verify_challenge(user, scope, response)``.
* :mod:`.softkey`: Bastion's software authenticator (tests, headless machines).

The client side (a USB security key through python-fido2, or the software authenticator) is
:mod:`bastion.client.mfa`. See docs/mfa.md.
"""

from bastion.mfa.service import MFADeps, MFAService, MFAVerified
from bastion.mfa.softkey import SOFTWARE_AAGUID, SoftwareAuthenticator

__all__ = ["SOFTWARE_AAGUID", "MFADeps", "MFAService", "MFAVerified", "SoftwareAuthenticator"]
