"""How the web UI reaches a node: SSH through the proxy's own ``bastion-ssh/1`` route.

Layer: web (IO shell). The web terminal (:mod:`bastion.web.terminal`) acts as ``bsh ssh`` would
for the browser's session: it makes a fresh key pair in memory for one terminal, has it
certified (:func:`new_key`, :func:`credentials`), and dials the node with asyncssh over a TLS
connection to a proxy (:class:`Route`), so the proxy's RBAC, locks and live registry, the node's
checks, recording and audit are exactly those of ``bsh ssh``. The private key never leaves this
process.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar, cast

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.auth.issuer import UserCerts
from bastion.errors import AccessDenied, BastionError, ConnectionProblem, error_from_code
from bastion.protocols.alpn import ALPN_SSH
from bastion.protocols.sshroute import encode_request
from bastion.runtime import as_transport

__all__ = [
    "DIAL_TIMEOUT",
    "Creds",
    "NewKey",
    "Replying",
    "Route",
    "check_reply",
    "credentials",
    "dial_proxy",
    "new_key",
    "proxy_candidates",
    "route_tls_context",
]

DIAL_TIMEOUT: Final = 15.0


def proxy_candidates(request_host: str, known: list[str]) -> list[str]:
    """The proxy addresses to dial, in order: the one the browser reached when it is a known
    proxy (a Host header alone never chooses what the server connects to), then the others."""
    ordered = [request_host] if request_host in known else []
    return ordered + [a for a in known if a not in ordered]


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key pair made for one terminal: the private key as PEM (in memory only) and the
    public key in OpenSSH format (what the issuer certifies)."""

    private_pem: bytes
    public: str


def new_key() -> NewKey:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return NewKey(pem, public)


@dataclass(frozen=True, slots=True)
class Creds:
    key: asyncssh.SSHKey
    cert: asyncssh.SSHCertificate
    host_ca: list[asyncssh.SSHKey]
    tls: ssl.SSLContext


def credentials(key: NewKey, certs: UserCerts) -> Creds:
    """The asyncssh key, certificate and host CAs, and the mTLS context for the proxy.

    Raises:
        AccessDenied: the issuer certified no login.
    """
    if not certs.ssh_cert:
        raise AccessDenied("your roles allow no login, so there is nothing to certify")
    return Creds(
        key=asyncssh.import_private_key(key.private_pem),
        cert=asyncssh.import_certificate(certs.ssh_cert),
        host_ca=[asyncssh.import_public_key(k) for k in certs.ssh_host_ca],
        tls=route_tls_context(certs.tls_cert, key.private_pem, certs.tls_host_ca),
    )


def route_tls_context(certs_pem: str, key_pem: bytes, ca_pem: str) -> ssl.SSLContext:
    """mTLS to a proxy's ``bastion-ssh/1`` route with a web-held key (files exist only for the
    load, in a 0700 directory)."""
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="bastion-web-") as tmp:  # 0700; gone at once
        cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_file.write_text(certs_pem)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key_pem)
        ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols([ALPN_SSH])
    return ctx


class _RouteReply(asyncio.Protocol):
    """Reads the proxy's one-line reply, then hands the TLS transport to asyncssh."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.rest = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = as_transport(transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.rest += data
        if self.reply.done():
            return
        line, sep, after = self.rest.partition(b"\n")
        if sep:
            self.rest = after
            self.reply.set_result(line)
            assert self.transport is not None
            self.transport.pause_reading()
        elif len(self.rest) > 16 * 1024:
            self.reply.set_exception(ConnectionProblem("the proxy's reply is too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(
                ConnectionProblem(f"the proxy closed the connection ({exc or 'no reason'})")
            )


def check_reply(line: bytes) -> None:
    """The proxy's one-line JSON answer to the route request.

    Raises:
        BastionError: the proxy refused (its error category and message).
        ConnectionProblem: not an answer.
    """
    try:
        reply = json.loads(line)
    except ValueError:
        raise ConnectionProblem("the proxy did not answer the SSH route request") from None
    if not isinstance(reply, dict) or reply.get("ok") is not True:
        error = reply.get("error") if isinstance(reply, dict) else None
        code = reply.get("code") if isinstance(reply, dict) else None
        message = str(error or "the proxy refused the connection")
        raise error_from_code(str(code), message) if code else AccessDenied(message)


class Replying(Protocol):
    """A client protocol that resolves ``reply`` with the proxy's one-line answer."""

    reply: asyncio.Future[bytes]


P = TypeVar("P", bound=Replying)


async def dial_proxy(
    addrs: Sequence[str],
    tls: ssl.SSLContext,
    factory: Callable[[], P],
    request: bytes,
    *,
    what: str,
    per_proxy: float = DIAL_TIMEOUT,
) -> tuple[asyncio.Transport, P]:
    """Try each proxy address in turn (``per_proxy`` seconds each): TLS with ``tls``, write
    ``request`` and wait for the one-line answer; the first proxy that answers is used (a
    refusal is raised, not retried).

    Raises:
        BastionError: the proxy refused (its error category and message).
        ConnectionProblem: no address, or no proxy answered (``what`` says what for).
    """
    if not addrs:
        raise ConnectionProblem(f"no proxy address is known to {what} through")
    loop = asyncio.get_running_loop()
    failure: BaseException | None = None
    for addr in addrs:
        host, port = _split(addr)
        try:
            async with asyncio.timeout(per_proxy):
                transport, protocol = await loop.create_connection(
                    cast(Callable[[], asyncio.Protocol], factory),
                    host, port, ssl=tls, server_hostname=host,
                )  # fmt: skip
                transport.write(request)
                line = await cast(P, protocol).reply
        except (OSError, TimeoutError) as exc:
            failure = exc
            continue
        try:
            check_reply(line)
        except BastionError:
            transport.abort()
            raise
        return as_transport(transport), cast(P, protocol)
    raise ConnectionProblem(f"cannot reach a proxy to {what} ({failure})")


class Route:
    """asyncssh ``tunnel=``: the SSH connection runs over the proxy's ``bastion-ssh/1``."""

    def __init__(self, addrs: list[str], tls: ssl.SSLContext, node: str, login: str) -> None:
        self.addrs, self.tls, self.node, self.login = addrs, tls, node, login

    async def create_connection(
        self, session_factory: Any, host: str, port: int
    ) -> tuple[asyncio.Transport, Any]:
        request = encode_request(self.node, self.login, port)
        transport, reader = await dial_proxy(
            self.addrs, self.tls, _RouteReply, request, what="open the session"
        )
        protocol = session_factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if reader.rest:
            protocol.data_received(reader.rest)
        transport.resume_reading()
        return transport, protocol
