"""Test peers for the audit export: a throwaway PKI, a syslog TCP/TLS collector and an HTTP
receiver speaking the Splunk HEC and Elasticsearch ``_bulk`` dialects that can be made to fail.

Shipped with the package in :mod:`bastion.testing.peers` (tests and benchmarks use it; nothing
in the daemon imports it). Every server listens on 127.0.0.1 on an ephemeral port.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.export.rfc5424 import split_frames

__all__ = ["HttpReceiver", "Pki", "SyslogCollector", "make_pki"]


@dataclass(frozen=True, slots=True)
class Pki:
    """File paths of a CA, a server certificate for ``localhost``/127.0.0.1 and a client one."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing here (to test that verification really happens)."""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


def _ca(cn: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: rsa.RSAPrivateKey, ca: x509.Certificate, cn: str, server: bool
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """Write a fresh CA, server and client certificates (RSA 2048, PEM) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca("Bastion export test CA")
    _, other = _ca("Unrelated CA")
    pki = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
    )
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.other_ca.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, cn, server in (
        (pki.server_cert, pki.server_key, "localhost", True),
        (pki.client_cert, pki.client_key, "bastion-exporter", False),
    ):
        key, cert = _leaf(ca_key, ca, cn, server)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
    return pki


@dataclass
class SyslogCollector:
    """An octet-counting syslog receiver (TCP, or TLS with ``tls``); keeps every message."""

    tls: ssl.SSLContext | None = None
    messages: list[bytes] = field(default_factory=list)
    peer_certs: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _conns: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self.tls, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        cert = writer.get_extra_info("peercert")
        if cert:
            self.peer_certs.append(cert)
        pending = b""
        try:
            while chunk := await reader.read(65536):
                done, pending = split_frames(pending + chunk)
                self.messages.extend(done)
        except (OSError, ssl.SSLError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    async def stop(self) -> None:
        """Stop listening and drop every open connection (a receiver outage)."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._conns):
                writer.close()
            await self._server.wait_closed()
            self._server = None


@dataclass
class HttpReceiver:
    """``POST /services/collector/event`` (HEC) and ``POST /_bulk`` (Elasticsearch) on loopback.

    Failure switches: ``fail_status`` (answer every request with this HTTP status),
    ``reject_ids`` (``_bulk`` items with these ids get a 400 per-item error), ``stop()`` (the
    port refuses connections until ``start()`` again, on the same port).
    """

    token: str = "test-token"
    documents: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    refused: int = 0
    """Requests answered with an error (``fail_status`` or a rejected ``_bulk`` item)."""
    fail_status: int = 0
    reject_ids: set[str] = field(default_factory=set)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> int:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/services/collector/event", self._hec)
        app.router.add_post("/_bulk", self._bulk)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def ids(self) -> list[str]:
        return [str(d.get("id", "")) for d in self.documents]

    async def _hec(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.fail_status:
            self.refused += 1
            return web.json_response({"text": "unavailable", "code": 9}, status=self.fail_status)
        if request.headers.get("Authorization") != f"Splunk {self.token}":
            return web.json_response({"text": "Invalid token", "code": 4}, status=403)
        text = (await request.read()).decode()
        decoder, pos, batch = json.JSONDecoder(), 0, []
        while pos < len(text):
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            try:
                obj, pos = decoder.raw_decode(text, pos)
            except ValueError:
                return web.json_response({"text": "Invalid data format", "code": 6}, status=400)
            if not isinstance(obj, dict) or "event" not in obj:
                return web.json_response(
                    {"text": "Event field is required", "code": 12}, status=400
                )
            batch.append(obj["event"])
        self.documents.extend(batch)
        return web.json_response({"text": "Success", "code": 0})

    async def _bulk(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.fail_status:
            self.refused += 1
            return web.Response(status=self.fail_status, text="unavailable")
        lines = (await request.read()).decode().splitlines()
        items, stored = [], []
        for action_line, doc_line in zip(lines[::2], lines[1::2], strict=True):
            meta = json.loads(action_line)["index"]
            doc = json.loads(doc_line)
            if meta["_id"] in self.reject_ids:
                error = {"type": "mapper_parsing_exception", "reason": "rejected by test"}
                items.append({"index": {"_id": meta["_id"], "status": 400, "error": error}})
                continue
            stored.append(doc)
            items.append({"index": {"_id": meta["_id"], "status": 201}})
        self.documents.extend(stored)
        self.refused += len(stored) != len(items)
        return web.json_response({"errors": len(stored) != len(items), "items": items})
