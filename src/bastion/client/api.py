"""Typed async client of the auth API (used by bsh, bctl, bbot and, later, agents).

Errors come back as the same BastionError classes the server raised (``error_from_code``);
network failures become ConnectionProblem with the address and what to check.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Awaitable, Callable, Collection
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ValidationError

from bastion.api.mfa_header import ADMIN_MFA_HEADER, encode_assertion
from bastion.client.stdhttp import api_error
from bastion.client.tls import unverified_context
from bastion.contract.base import Body, Endpoint, query_dict
from bastion.contract.core import PING
from bastion.errors import (
    BadParameter,
    BastionError,
    ConnectionProblem,
    MFARequired,
)
from bastion.types.codec import validation_problems

__all__ = [
    "AuthClient",
    "MFASolver",
    "connection_error_text",
    "fetch_cluster_ca",
    "pinned_certs",
    "spki_pin_of_pem",
]

MFASolver = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""Answers WebAuthn request options with an assertion (asks the security key)."""

TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)
B = TypeVar("B", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def spki_pin_of_pem(cert_pem: str) -> list[str]:
    """``sha256:<hex>`` of the SubjectPublicKeyInfo of every certificate in ``cert_pem``."""
    pins = []
    for cert in x509.load_pem_x509_certificates(cert_pem.encode()):
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        pins.append("sha256:" + hashlib.sha256(spki).hexdigest())
    return pins


class AuthClient:
    """``async with AuthClient(addr, ctx) as client: await client.send(WHOAMI)``.

    With ``mfa``, a request the server answers with ``mfa_required`` (MFA for admin actions) is
    retried once, the same bytes plus the assertion ``mfa`` produced for the server's challenge
    in the ``Bastion-MFA`` header.
    """

    def __init__(
        self, addr: str, ssl_context: ssl.SSLContext | bool, mfa: MFASolver | None = None
    ) -> None:
        self.addr = addr
        self._ssl = ssl_context
        self._mfa = mfa
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AuthClient:
        self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self,
        endpoint: Endpoint[B, R],
        body: B | None = None,
        *,
        path: dict[str, str] | None = None,
        query: Body | None = None,
    ) -> R:
        """Call one declared endpoint; returns its typed reply or raises the server's error
        class.

        Raises:
            MFARequired: the server wants an assertion and there is no solver (or the retry
                was answered the same way).
            BadParameter: the reply does not fit the endpoint's model (a server of another
                version).
        """
        url = endpoint.url(**(path or {}))
        payload = None
        if endpoint.method in _WITH_BODY:
            payload = (body or endpoint.body.model_validate({})).model_dump(
                mode="json", exclude_none=True
            )
        params = query_dict(query)
        try:
            data = await self._request(endpoint.method, url, payload, params, None)
        except MFARequired as exc:
            if self._mfa is None:
                raise
            assertion = await self._mfa(exc.challenge)
            headers = {ADMIN_MFA_HEADER: encode_assertion(assertion)}
            data = await self._request(endpoint.method, url, payload, params, headers)
        try:
            return endpoint.response.model_validate(data)
        except ValidationError as exc:
            raise BadParameter(
                f"{endpoint.method} {endpoint.path}: unexpected reply from {self.addr} "
                f"({validation_problems(exc)}); is the server the same version as this client?"
            ) from None

    async def fetch(
        self, endpoint: Endpoint[Any, Any], *, path: dict[str, str], query: Body | None = None
    ) -> bytes:
        """A streamed (non-JSON) reply's bytes, such as a recording; errors as in :meth:`send`."""
        data: bytes = await self._request(
            "GET", endpoint.url(**path), None, query_dict(query), None, raw=True
        )
        return data

    async def _request(
        self,
        method: str,
        path: str,
        body: Any,
        params: dict[str, str] | None,
        headers: dict[str, str] | None,
        *,
        raw: bool = False,
    ) -> Any:
        assert self._session is not None, "use AuthClient as an async context manager"
        url = f"https://{self.addr}{path}"
        try:
            async with self._session.request(
                method, url, json=body, params=params, ssl=self._ssl, headers=headers
            ) as resp:
                if raw and resp.status < 400:
                    return await resp.read()
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = None
                if resp.status >= 400:
                    err = (data or {}).get("error") if isinstance(data, dict) else None
                    if isinstance(err, dict):
                        raise api_error(err)
                    raise BastionError(f"{method} {path}: HTTP {resp.status}")
                return data
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ConnectionProblem(
                f"cannot verify the server at {self.addr}: {exc.certificate_error}; check "
                "--ca-pin / your profile (bsh login again if the cluster was re-created)"
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise ConnectionProblem(
                f"TLS handshake with {self.addr} failed ({exc}); your certificate may be "
                "expired or from another cluster: run bsh login again"
            ) from None
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise ConnectionProblem(
                f"cannot reach the server at {self.addr}: {connection_error_text(exc)}; is "
                "bastion running and is the address right?"
            ) from None


def connection_error_text(exc: BaseException) -> str:
    """A short reason (``Connection refused``), not aiohttp's repr of our SSL context."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        return os.strerror(err.errno) if err.errno else str(err) or type(err).__name__
    return str(exc) or ("timeout" if isinstance(exc, TimeoutError) else type(exc).__name__)


def pinned_certs(cert_pem: str, accepted: Collection[str]) -> str:
    """Only the certificates of ``cert_pem`` whose SPKI pin is in ``accepted`` (PEM, in order).

    An unverified server's bundle is trusted no further than the pins: a server in the middle
    that adds its own CA next to the real one gets nothing trusted for it."""
    wanted = {pin.strip().lower() for pin in accepted}
    certs = x509.load_pem_x509_certificates(cert_pem.encode())
    return "".join(
        cert.public_bytes(serialization.Encoding.PEM).decode()
        for cert, pin in zip(certs, spki_pin_of_pem(cert_pem), strict=True)
        if pin in wanted
    )


async def fetch_cluster_ca(
    addr: str, ca_pin: str | Collection[str] | None, insecure: bool
) -> dict[str, Any]:
    """Ping the server without trusting it yet, then check its host CA against ``ca_pin`` (one
    pin, or the pins an earlier verified login recorded).

    Returns:
        The ping document (cluster name, second factor, ``tls_host_ca`` PEM). With pins,
        ``tls_host_ca`` holds only the pinned certificates of the server's bundle.

    Raises:
        AccessDenied-like BadParameter when no pin matches; ConnectionProblem.
    """
    async with AuthClient(addr, unverified_context()) as client:
        ping = (await client.send(PING)).model_dump()
    accepted = [ca_pin] if isinstance(ca_pin, str) else list(ca_pin or ())
    # Never show the pins this (still unverified) server presents: a user would copy them,
    # and an attacker in the middle presents its own.
    if accepted:
        trusted = pinned_certs(ping["tls_host_ca"], accepted)
        if not trusted:
            raise BadParameter(
                f"the server at {addr} does not match --ca-pin: this may be an attack, or the "
                "wrong address or cluster; check the pin with your admin (bastion start and "
                "bctl status print it)"
            )
        ping["tls_host_ca"] = trusted
    elif not insecure:
        raise BadParameter(
            f"the server at {addr} is not known on this machine: pass --ca-pin=sha256:... as "
            "your admin gave it (bastion start, bctl status and bctl users add print it), or "
            "--insecure for development only"
        )
    return ping
