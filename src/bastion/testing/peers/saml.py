"""A SAML 2.0 identity provider for tests, built on pysaml2's own IdP (``saml2.server.Server``).

It signs real XML with a real key (through ``xmlsec1``), so the SP under test verifies exactly
what a production IdP would send; knobs produce the bad cases (unsigned, another audience, a
wrong destination, an expired assertion, another IdP's key).
"""

from __future__ import annotations

import base64
import datetime as dt
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bastion.sso.saml import xmlsec_binary

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
    from saml2.config import IdPConfig, SPConfig
    from saml2.metadata import create_metadata_string
    from saml2.saml import AUTHN_PASSWORD_PROTECTED, NAMEID_FORMAT_PERSISTENT, NameID
    from saml2.server import Server

__all__ = ["SAMLTestIdP", "sp_metadata"]


def _key_and_cert(directory: Path, name: str) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def sp_metadata(entity_id: str, acs_url: str) -> str:
    """Metadata of an SP (what the IdP knows about Bastion)."""
    config = SPConfig()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config.load(
            {
                "entityid": entity_id,
                "xmlsec_binary": xmlsec_binary(),
                "service": {
                    "sp": {
                        "endpoints": {"assertion_consumer_service": [(acs_url, BINDING_HTTP_POST)]}
                    }
                },
            }
        )
    return str(create_metadata_string(None, config=config, sign=False).decode())


@dataclass
class SAMLTestIdP:
    """``SAMLTestIdP.create(tmp, sps=[(entity_id, acs_url)])``; ``metadata`` goes into the
    connector's ``entity_descriptor``; :meth:`respond` answers an AuthnRequest."""

    server: Any
    metadata: str
    entity_id: str

    @classmethod
    def create(
        cls,
        directory: Path,
        sps: list[tuple[str, str]],
        entity_id: str = "https://idp.test/metadata",
        sso_url: str = "https://idp.test/sso",
    ) -> SAMLTestIdP:
        key, cert = _key_and_cert(directory, "idp-" + str(abs(hash(entity_id)) % 10_000))
        config = IdPConfig()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config.load(
                {
                    "entityid": entity_id,
                    "xmlsec_binary": xmlsec_binary(),
                    "key_file": str(key),
                    "cert_file": str(cert),
                    "metadata": {"inline": [sp_metadata(e, a) for e, a in sps]},
                    "service": {
                        "idp": {
                            "endpoints": {
                                "single_sign_on_service": [(sso_url, BINDING_HTTP_REDIRECT)]
                            },
                            "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                            "policy": {"default": {"lifetime": {"minutes": 5}}},
                        }
                    },
                }
            )
            server = Server(config=config)
            metadata = str(create_metadata_string(None, config=config, sign=False).decode())
        return cls(server=server, metadata=metadata, entity_id=entity_id)

    def parse_request(self, url: str) -> tuple[str, str, str]:
        """``(request_id, acs_url, relay_state)`` of an HTTP-Redirect AuthnRequest URL."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = self.server.parse_authn_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT)
        message = parsed.message
        return str(message.id), str(message.assertion_consumer_service_url), query["RelayState"]

    def respond(
        self,
        request_id: str,
        acs_url: str,
        sp_entity_id: str,
        user: str = "alice",
        attributes: dict[str, list[str]] | None = None,
        *,
        sign_assertion: bool = True,
        sign_response: bool = False,
        lifetime_minutes: int | None = None,
    ) -> str:
        """A base64 ``SAMLResponse`` (as the IdP would POST it to ``acs_url``)."""
        restrictions = self.server.config.getattr("policy", "idp")._restrictions["default"]
        saved = restrictions["lifetime"]
        if lifetime_minutes is not None:  # pysaml2 has no per-response knob for this
            restrictions["lifetime"] = {"minutes": lifetime_minutes}
        try:
            return self._respond(
                request_id, acs_url, sp_entity_id, user, attributes, sign_assertion, sign_response
            )
        finally:
            restrictions["lifetime"] = saved

    def _respond(
        self,
        request_id: str,
        acs_url: str,
        sp_entity_id: str,
        user: str,
        attributes: dict[str, list[str]] | None,
        sign_assertion: bool,
        sign_response: bool,
    ) -> str:
        name_id = NameID(format=NAMEID_FORMAT_PERSISTENT, text=user)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            response = self.server.create_authn_response(
                attributes or {"groups": ["dev"]},
                request_id,
                acs_url,
                sp_entity_id,
                name_id=name_id,
                sign_assertion=sign_assertion,
                sign_response=sign_response,
                authn={"class_ref": AUTHN_PASSWORD_PROTECTED, "authn_auth": self.entity_id},
            )
        return base64.b64encode(str(response).encode()).decode()
