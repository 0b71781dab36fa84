"""Shipped test helpers (like mitmproxy.test and structlog.testing): fakes and builders that the
unit tests, integration tests and benchmarks share.

Layer: testing (the top, with the CLI; nothing in ``src`` imports it). The real peers the
integration tests and benchmarks start (sshd, PostgreSQL, a SAML IdP, export receivers) and the
one :func:`~bastion.testing.peers.ports.free_port` live in :mod:`bastion.testing.peers`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bastion.auth.server import AuthDeps, AuthServer
from bastion.auth.users import UserService
from bastion.backend.memory import MemoryBackend
from bastion.clock import Clock, FakeClock
from bastion.recording.store import RecordingStore

__all__ = [
    "AuthFixture",
    "FakeClock",
    "make_auth",
    "missing_peer",
    "new_public_key",
    "new_tls_key",
    "require_binary",
]


def new_public_key() -> tuple[ed25519.Ed25519PrivateKey, str]:
    """A fresh client key and its OpenSSH public line."""
    key = ed25519.Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return key, pub.decode()


def new_tls_key() -> tuple[bytes, str]:
    """A fresh ECDSA P-256 key for a TLS client or server: (PKCS#8 PEM, OpenSSH public line),
    what ``load_cert_chain`` and the issuer each take."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return pem, pub.decode()


@dataclass(slots=True)
class AuthFixture:
    clock: Clock
    backend: MemoryBackend
    auth: AuthServer
    users: UserService


async def make_auth(
    clock: Clock | None = None,
    cluster: str = "test.local",
    recordings: RecordingStore | None = None,
) -> AuthFixture:
    """An initialised AuthServer over a MemoryBackend (CAs, built-in roles, preferences), with
    ``recordings`` as its session recording store when given."""
    clock = clock or FakeClock()
    backend = MemoryBackend(clock)
    auth = AuthServer(
        AuthDeps(
            backend=backend, clock=clock, cluster=cluster, kek=b"\x01" * 32, recordings=recordings
        )
    )
    await auth.init()
    return AuthFixture(clock=clock, backend=backend, auth=auth, users=UserService(auth))


def missing_peer(reason: str) -> NoReturn:
    """A real peer (binary, server) the test needs is absent: skip on a developer's machine,
    fail under CI (``CI=true``), where the test command installs every peer."""
    import pytest  # test-time dependency only

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the test command must install it)")
    pytest.skip(reason)


def require_binary(name: str) -> str:
    """Path of ``name`` on PATH, or :func:`missing_peer`."""
    path = shutil.which(name)
    if path is None:
        missing_peer(f"{name} is not installed")
    return path
