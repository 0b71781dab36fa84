"""Which identity a CLI speaks to the auth API with, and how it runs one API call.

Layer: client edge (files and TLS contexts; no policy). ``bctl`` picks, in order:

1. ``--data-dir DIR`` or ``-c CONFIG`` (its ``data_dir``): the local admin identity that
   ``bastion start`` writes to ``DIR/admin`` (mTLS with ``identity.crt``/``identity.key``, server
   verified with ``admin/ca.pem``, address from ``admin/profile.json``);
2. the current ``bsh login`` profile (``tls.crt`` + ``tls.key``, ``ca.pem``, proxy address);
3. ``./bastion-data/admin`` when it exists (running bctl next to a development cluster).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from bastion.client.api import AuthClient, MFASolver
from bastion.client.mfa import origin_for, solve
from bastion.client.profile import ProfileStore
from bastion.client.tls import profile_context, verified_context
from bastion.config.schema import load_config
from bastion.contract.base import Body, Endpoint
from bastion.errors import AuthenticationFailed, BadParameter, NotFound

__all__ = ["ClientIdentity", "resolve_identity", "run_async"]

T = TypeVar("T")
B = TypeVar("B", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
DEFAULT_DATA_DIR = Path("bastion-data")


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    addr: str
    """``host:port`` of the auth API."""
    cert: Path
    key: Path
    ca_pem: str
    source: str
    """Human description: ``local admin identity in /x/admin`` or ``bsh profile test.local``."""
    cluster: str = ""
    profile_dir: Path | None = None
    """The bsh profile's directory (None for the local admin identity, which needs no MFA)."""

    def ssl_context(self) -> ssl.SSLContext:
        if self.profile_dir is not None:  # a bsh profile: its key may be TPM-held
            return profile_context(self.profile_dir, self.profile_dir.name, [])
        return verified_context(self.ca_pem, self.cert, self.key)

    def mfa_solver(self) -> MFASolver | None:
        """Answers an ``mfa_required`` challenge (MFA for admin actions) with the security key."""
        if self.profile_dir is None:
            return None
        origin, profile_dir = origin_for(self.addr), self.profile_dir

        async def answer(challenge: dict[str, Any]) -> dict[str, Any]:
            sys.stderr.write("MFA for admin actions: touch your security key\n")
            sys.stderr.flush()
            return await asyncio.to_thread(solve, challenge, origin, profile_dir=profile_dir)

        return answer

    def send(
        self,
        endpoint: Endpoint[B, R],
        body: B | None = None,
        *,
        path: dict[str, str] | None = None,
        query: Body | None = None,
    ) -> R:
        """One API call, synchronously (the CLIs are one-shot)."""

        async def go(client: AuthClient) -> R:
            return await client.send(endpoint, body, path=path, query=query)

        return self.session(go)

    def session(self, work: Callable[[AuthClient], Awaitable[T]]) -> T:
        """Run ``work`` with one connected client (several requests, one connection pool)."""

        async def go() -> T:
            async with AuthClient(self.addr, self.ssl_context(), self.mfa_solver()) as client:
                return await work(client)

        return run_async(go())


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise NotFound(f"{what} {path} is missing") from None


def _admin_identity(data_dir: Path) -> ClientIdentity:
    admin = data_dir.expanduser().resolve() / "admin"
    profile_file = admin / "profile.json"
    if not profile_file.exists():
        raise NotFound(
            f"no local admin identity in {admin}: is this the data dir of a cluster that was "
            "started (bastion start --data-dir ...)?"
        )
    try:
        profile = json.loads(profile_file.read_text())
        addr = str(profile["addr"])
    except (ValueError, KeyError):
        raise BadParameter(f"{profile_file} is corrupt; restart bastion to rewrite it") from None
    return ClientIdentity(
        addr=addr,
        cert=admin / "identity.crt",
        key=admin / "identity.key",
        ca_pem=_read(admin / "ca.pem", "CA file"),
        source=f"local admin identity in {admin}",
        cluster=str(profile.get("cluster", "")),
    )


def _profile_identity(store: ProfileStore) -> ClientIdentity | None:
    try:
        profile = store.load()
    except NotFound:
        return None
    if profile.expired():
        raise AuthenticationFailed(
            f"your bsh login for {profile.cluster} as {profile.user} expired at "
            f"{profile.expires}: run bsh login --proxy={profile.proxy} --user={profile.user}"
        )
    return ClientIdentity(
        addr=profile.proxy,
        cert=profile.path / "tls.crt",
        key=profile.path / "tls.key",
        ca_pem=_read(profile.path / "ca.pem", "CA file"),
        source=f"bsh profile {profile.name} (user {profile.user})",
        cluster=profile.cluster,
        profile_dir=profile.path,
    )


def resolve_identity(
    data_dir: str | None, config: str | None, store: ProfileStore | None = None
) -> ClientIdentity:
    """Pick the identity as the module docstring says.

    Raises:
        NotFound: nothing usable, with how to fix it.
        AuthenticationFailed: the bsh profile has expired.
    """
    if data_dir:
        return _admin_identity(Path(data_dir))
    if config:
        return _admin_identity(load_config(config).data_path())
    found = _profile_identity(store or ProfileStore())
    if found is not None:
        return found
    if (DEFAULT_DATA_DIR / "admin" / "profile.json").exists():
        return _admin_identity(DEFAULT_DATA_DIR)
    raise NotFound(
        "no identity to use: on the auth host pass --data-dir DIR (or -c CONFIG); elsewhere "
        "log in first with bsh login --proxy=HOST:PORT --user=NAME"
    )
