"""One HTTPS request and its reply with the standard library's ``socket`` and ``ssl`` only.

Layer: client (transport; no policy). For the CLI paths that must start quickly:

* :func:`request` (stdlib only): ``bsh ssh``'s OpenSSH hand-off asks the session challenge
  with it before handing over (:mod:`bastion.cli.ssh_handoff`);
* :func:`send_sync`: one typed call of the contract (``bastion.contract``), as
  :meth:`bastion.client.api.AuthClient.send` makes it (same URL, query, body, reply model and
  errors) but blocking and without aiohttp or asyncio: ``bsh ls``. The contract's pydantic
  models load when it is called, not when this module is imported.

Everything else speaks :class:`~bastion.client.api.AuthClient`.

Why not ``http.client``: it imports the ``email`` package to parse headers, about half of the
hand-off's start-up. This module speaks the small part of HTTP/1.1 the auth API needs: one
request with ``Connection: close``, a reply framed by ``Content-Length``, chunked transfer
coding or the end of the connection. The reply is read up to its framing, not up to the
server's close, so the caller does not wait for the TLS shutdown.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from bastion.errors import BastionError, ConnectionProblem, MFARequired, error_from_code

if TYPE_CHECKING:
    from pydantic import BaseModel

    from bastion.contract.base import Body, Endpoint

    B = TypeVar("B", bound=BaseModel)
    R = TypeVar("R", bound=BaseModel)

__all__ = ["MAX_REPLY", "HTTPReply", "api_error", "request", "send_sync"]

MAX_REPLY = 16 * 1024 * 1024
"""Largest reply (head and body) accepted; larger ones are refused as a broken server."""
MAX_HEAD = 64 * 1024
CHUNK = 65536


class HTTPReply:
    """Status, lower-cased header names and the body of one reply."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Reader:
    """Buffered reads from a (TLS) socket; EOF on an unexpected close raises."""

    def __init__(self, sock: socket.socket, addr: str) -> None:
        self._sock = sock
        self._addr = addr
        self._buf = bytearray()
        self._total = 0
        self.eof = False

    def _fill(self) -> bool:
        try:
            data = self._sock.recv(CHUNK)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            data = b""  # a close without close_notify: the framing decides if that is fine
        if not data:
            self.eof = True
            return False
        self._total += len(data)
        if self._total > MAX_REPLY:
            raise _broken(self._addr, "oversized reply")
        self._buf += data
        return True

    def until(self, marker: bytes, limit: int) -> bytes:
        """Bytes up to and including ``marker``."""
        while (end := self._buf.find(marker)) < 0:
            if len(self._buf) > limit or not self._fill():
                raise _broken(self._addr, "truncated reply")
        end += len(marker)
        out = bytes(self._buf[:end])
        del self._buf[:end]
        return out

    def exactly(self, size: int) -> bytes:
        while len(self._buf) < size:
            if not self._fill():
                raise _broken(self._addr, "truncated reply")
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def rest(self) -> bytes:
        while self._fill():
            pass
        out = bytes(self._buf)
        self._buf.clear()
        return out


def _broken(addr: str, what: str) -> ConnectionProblem:
    return ConnectionProblem(f"the server at {addr} sent a broken HTTP reply ({what})")


def _head(reader: _Reader, addr: str) -> tuple[int, dict[str, str]]:
    lines = reader.until(b"\r\n\r\n", MAX_HEAD).decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest.partition(" ")[0]
    if not version.startswith("HTTP/1.") or not (code.isdigit() and len(code) == 3):
        raise _broken(addr, f"status line {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(code), headers


def _chunked(reader: _Reader, addr: str) -> bytes:
    body = bytearray()
    while True:
        size_text = reader.until(b"\r\n", MAX_HEAD).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _broken(addr, "chunk size") from None
        if size == 0:
            while reader.until(b"\r\n", MAX_HEAD) != b"\r\n":  # trailers, then the blank line
                pass
            return bytes(body)
        body += reader.exactly(size)
        if reader.exactly(2) != b"\r\n":
            raise _broken(addr, "chunk end")


def _read_reply(reader: _Reader, method: str, addr: str) -> HTTPReply:
    status, headers = _head(reader, addr)
    while 100 <= status < 200:  # an interim reply (100 Continue): the real one follows
        status, headers = _head(reader, addr)
    if method == "HEAD" or status in (204, 304):
        return HTTPReply(status, headers, b"")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return HTTPReply(status, headers, _chunked(reader, addr))
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit() or int(length) > MAX_REPLY:
            raise _broken(addr, f"Content-Length {length[:20]!r}")
        return HTTPReply(status, headers, reader.exactly(int(length)))
    return HTTPReply(status, headers, reader.rest())


def request(
    ctx: ssl.SSLContext,
    addr: str,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 20.0,
) -> HTTPReply:
    """Send one request to ``https://addr`` (``host:port``; IPv6 in brackets) and read the reply.

    ``target`` is the path with its query string. ``ctx`` decides the trust and the client
    certificate (build it with :mod:`bastion.client.tls`); the host name of ``addr`` is the
    server name checked.

    Raises:
        ssl.SSLCertVerificationError, ssl.SSLError: the TLS handshake failed (the caller knows
            which words fit: a profile to renew, a pin to check).
        ConnectionProblem: the server cannot be reached, stopped answering (``timeout``
            seconds), or sent something that is not an HTTP/1.1 reply.
    """
    host, _, port_text = addr.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit():
        raise ConnectionProblem(f"invalid server address {addr!r}: expected HOST:PORT")
    head = [
        f"{method} {target} HTTP/1.1",
        f"Host: {addr}",
        "Connection: close",
        "Accept: application/json",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    if body is not None:
        head.append(f"Content-Length: {len(body)}")
    wire = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
    try:
        raw = socket.create_connection((host, int(port_text)), timeout=timeout)
    except OSError as exc:
        raise ConnectionProblem(
            f"cannot reach the server at {addr}: {exc.strerror or exc}"
        ) from None
    try:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(wire)
            return _read_reply(_Reader(tls, addr), method, addr)
    except ssl.SSLError:
        raise
    except TimeoutError:
        raise ConnectionProblem(f"the server at {addr} did not answer in {timeout:g} s") from None
    except OSError as exc:
        raise ConnectionProblem(f"the connection to {addr} failed: {exc.strerror or exc}") from None
    finally:
        raw.close()


_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def send_sync(
    ctx: ssl.SSLContext,
    addr: str,
    endpoint: Endpoint[B, R],
    body: B | None = None,
    *,
    path: dict[str, str] | None = None,
    query: Body | None = None,
    timeout: float = 60.0,
) -> R:
    """Call one declared endpoint and return its typed reply, as ``AuthClient.send`` does.

    There is no MFA solver here: an endpoint that asks for MFA for admin actions raises
    :class:`~bastion.errors.MFARequired` (use ``AuthClient`` for those).

    Raises:
        BastionError: the server's error, its class rebuilt from the code.
        ConnectionProblem: the server cannot be reached or verified, or the TLS handshake
            failed.
        BadParameter: the reply does not fit the endpoint's model (another server version).
    """
    from urllib.parse import urlencode

    from pydantic import ValidationError

    from bastion.contract.base import query_dict
    from bastion.errors import BadParameter
    from bastion.types.codec import validation_problems

    target = endpoint.url(**(path or {}))
    params = query_dict(query)
    if params:
        target += "?" + urlencode(params)
    payload = None
    if endpoint.method in _WITH_BODY:
        model = body or endpoint.body.model_validate({})
        payload = json.dumps(model.model_dump(mode="json", exclude_none=True)).encode()
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    try:
        reply = request(ctx, addr, endpoint.method, target, payload, headers, timeout)
    except ssl.SSLCertVerificationError as exc:
        raise ConnectionProblem(
            f"cannot verify the server at {addr}: {exc.verify_message}; check --ca-pin / your "
            "profile (bsh login again if the cluster was re-created)"
        ) from None
    except ssl.SSLError as exc:
        raise ConnectionProblem(
            f"TLS handshake with {addr} failed ({exc.reason or exc}); your certificate may be "
            "expired or from another cluster: run bsh login again"
        ) from None
    try:
        data = json.loads(reply.body) if reply.body else None
    except ValueError:
        data = None
    if reply.status >= 400:
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            raise api_error(err)
        raise BastionError(f"{endpoint.method} {target}: HTTP {reply.status}")
    try:
        return endpoint.response.model_validate(data)
    except ValidationError as exc:
        raise BadParameter(
            f"{endpoint.method} {endpoint.path}: unexpected reply from {addr} "
            f"({validation_problems(exc)}); is the server the same version as this client?"
        ) from None


def api_error(err: dict[str, Any]) -> BastionError:
    """The server's ``{"error": {...}}`` as its class, with an MFA challenge when there is one
    (both transports, this one and :class:`bastion.client.api.AuthClient`)."""
    exc = error_from_code(str(err.get("code")), str(err.get("message")))
    if isinstance(exc, MFARequired):
        challenge, scope = err.get("challenge"), err.get("scope")
        exc.challenge = challenge if isinstance(challenge, dict) else {}
        exc.scope = scope if isinstance(scope, str) else ""
    return exc
