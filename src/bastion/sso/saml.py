"""SAML 2.0 service provider (pysaml2): AuthnRequest by HTTP-Redirect, Response by HTTP-POST.

Layer: sso. pysaml2 (with the ``xmlsec1`` binary) verifies the XML signatures and the
conditions; the configuration here makes it strict:

* ``want_assertions_signed``: an assertion without a valid signature by the IdP's metadata
  certificate is refused (a signed response around an unsigned assertion is not enough);
* no unsolicited responses: ``InResponseTo`` must be the id of this login's AuthnRequest;
* the audience must be our ``service_provider_issuer``; ``Destination`` and the subject
  confirmation's ``Recipient`` must be our ACS URL; ``NotOnOrAfter`` / ``NotBefore`` are checked
  (pysaml2 reads the system clock, with its default 0 s skew widened to :data:`SKEW`).

The identity is keyed by (connector, IdP entity id, NameID); attributes become claims.
"""

from __future__ import annotations

import shutil
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any

from bastion.errors import AccessDenied, BadParameter
from bastion.sso.mapping import SSOIdentity, normalize_claims
from bastion.types.connectors import SAMLConnector

if TYPE_CHECKING:
    from saml2.mdstore import MetadataStore

__all__ = ["SKEW", "SAMLProvider", "xmlsec_binary"]

BINDING_HTTP_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
BINDING_HTTP_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"


def _saml2() -> tuple[ModuleType, ModuleType]:
    """``(saml2.client, saml2.config)``, imported on first use: pysaml2 takes most of a second
    of CPU to import, which every daemon start would pay without a SAML connector."""
    with warnings.catch_warnings():  # pysaml2 imports a cipher mode cryptography has deprecated
        warnings.simplefilter("ignore")
        import saml2.client
        import saml2.config
    return saml2.client, saml2.config


SKEW = 60
"""Seconds of clock skew tolerated on assertion conditions."""


def xmlsec_binary() -> str:
    """Path of ``xmlsec1``.

    Raises:
        BadParameter: not installed (``apt-get install xmlsec1``).
    """
    path = shutil.which("xmlsec1") or (
        "/usr/bin/xmlsec1" if shutil.which("/usr/bin/xmlsec1") else ""
    )
    if not path:
        raise BadParameter("SAML needs the xmlsec1 program: apt-get install xmlsec1")
    return path


class SAMLProvider:
    """One connector's SP, built per use from the connector (cheap; nothing cached)."""

    def __init__(self, connector: SAMLConnector, base_url: str) -> None:
        self.connector = connector
        spec = connector.spec
        self.acs_url = spec.acs or f"{base_url}/web/sso/{connector.name}/acs"
        config: dict[str, Any] = {
            "entityid": spec.service_provider_issuer,
            "xmlsec_binary": xmlsec_binary(),
            "accepted_time_diff": SKEW,
            "allow_unknown_attributes": True,
            "metadata": {"inline": [spec.entity_descriptor]},
            "service": {
                "sp": {
                    "endpoints": {
                        "assertion_consumer_service": [(self.acs_url, BINDING_HTTP_POST)]
                    },
                    "want_assertions_signed": True,
                    "want_response_signed": False,
                    "allow_unsolicited": False,
                    "authn_requests_signed": False,
                }
            },
        }
        client_mod, config_mod = _saml2()
        sp_config = config_mod.SPConfig()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sp_config.load(config)
        except Exception as exc:  # pysaml2 raises many types for bad metadata
            raise BadParameter(
                f'saml "{connector.name}": spec.entity_descriptor: cannot load it ({exc})'
            ) from None
        self._client = client_mod.Saml2Client(config=sp_config)
        metadata: MetadataStore = sp_config.metadata
        idps = list(metadata.identity_providers())
        if len(idps) != 1:
            raise BadParameter(
                f'saml "{connector.name}": spec.entity_descriptor must describe exactly one '
                f"identity provider (found {len(idps)})"
            )
        self.idp_entity_id: str = idps[0]

    def authn_request(self, relay_state: str) -> tuple[str, str]:
        """Returns ``(request_id, url)``: the AuthnRequest id and where to send the browser."""
        request_id, info = self._client.prepare_for_authenticate(
            entityid=self.idp_entity_id,
            relay_state=relay_state,
            binding=BINDING_HTTP_REDIRECT,
        )
        location = dict(info["headers"]).get("Location")
        if not location:
            raise AccessDenied("the IdP metadata has no HTTP-Redirect SingleSignOnService")
        return str(request_id), str(location)

    def identity(self, saml_response: str, request_id: str, acs_url: str) -> SSOIdentity:
        """Verify a base64 ``SAMLResponse`` posted to the ACS.

        Raises:
            AccessDenied: with pysaml2's reason (signature, audience, destination, time, ...).
        """
        if not saml_response or not request_id:
            raise AccessDenied("SAML: no response, or no login waiting for one")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                response = self._client.parse_authn_request_response(
                    saml_response, BINDING_HTTP_POST, outstanding={request_id: acs_url}
                )
        except Exception as exc:  # pysaml2 raises dozens of unrelated classes; all mean "reject"
            reason = str(exc) or type(exc).__name__
            raise AccessDenied(
                f"SAML response refused: {type(exc).__name__}: {reason[:300]}"
            ) from None
        if response is None:
            raise AccessDenied("SAML response refused: no valid assertion")
        destination = getattr(getattr(response, "response", None), "destination", None)
        if destination and destination != acs_url:
            raise AccessDenied(
                f"SAML response refused: Destination {destination!r} is not this ACS {acs_url!r}"
            )
        if not response.assertion or not getattr(response.assertion, "signature", None):
            raise AccessDenied("SAML response refused: the assertion is not signed")
        name_id = response.name_id.text if response.name_id is not None else ""
        issuer = response.issuer() or ""
        if issuer != self.idp_entity_id:
            raise AccessDenied(f"SAML response refused: issuer {issuer!r} is not the IdP")
        claims = normalize_claims(response.get_identity() or {})
        spec = self.connector.spec
        username = (
            (claims.get(spec.username_attribute) or [""])[0] if spec.username_attribute else name_id
        )
        if not name_id or not username:
            raise AccessDenied(
                "SAML response refused: no NameID"
                + (
                    f" or no {spec.username_attribute!r} attribute"
                    if spec.username_attribute
                    else ""
                )
            )
        return SSOIdentity(
            connector=self.connector.name,
            kind="saml",
            issuer=issuer,
            subject=name_id,
            username=username,
            claims=claims,
        )
