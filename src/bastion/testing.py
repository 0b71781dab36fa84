"""Shipped test helpers (like mitmproxy.test and structlog.testing): fakes and builders that the
unit tests, integration tests and benchmarks share."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.auth.server import AuthDeps, AuthServer
from bastion.auth.users import UserService
from bastion.backend.memory import MemoryBackend
from bastion.clock import Clock, FakeClock

__all__ = ["AuthFixture", "FakeClock", "make_auth", "new_public_key"]


def new_public_key() -> tuple[ed25519.Ed25519PrivateKey, str]:
    """A fresh client key and its OpenSSH public line."""
    key = ed25519.Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return key, pub.decode()


@dataclass(slots=True)
class AuthFixture:
    clock: Clock
    backend: MemoryBackend
    auth: AuthServer
    users: UserService


async def make_auth(clock: Clock | None = None, cluster: str = "test.local") -> AuthFixture:
    """An initialised AuthServer over a MemoryBackend (CAs, built-in roles, preferences)."""
    clock = clock or FakeClock()
    backend = MemoryBackend(clock)
    auth = AuthServer(AuthDeps(backend=backend, clock=clock, cluster=cluster, kek=b"\x01" * 32))
    await auth.init()
    return AuthFixture(clock=clock, backend=backend, auth=auth, users=UserService(auth))
