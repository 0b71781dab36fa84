"""WebAuthn assertions and whole logins (issue 5): Bastion's server path versus the ``webauthn``
library, measured in the same run.

1. **Assertion verification.** Ours: ``MFAService.begin_challenge`` + ``verify_challenge``, the
   whole relying-party path (challenge stored server-side, taken once, scope and user checked,
   credential looked up, cloned/software policy, signature checked by the ``webauthn`` library,
   sign counter stored), on the in-memory backend and on SQLite (a file in a temporary
   directory). The peer, the floor: the raw library, ``generate_authentication_options`` +
   ``options_to_json`` then ``verify_authentication_response`` with the challenge, public key
   and counter held in local variables. Same credential (ES256, the software authenticator's
   choice for our RP, as for most hardware keys) on both sides.
2. **Whole logins** through :class:`~bastion.auth.users.UserService` in-process, as ``bsh login``
   drives them over the API: password+TOTP and password+WebAuthn are ``begin_login`` then
   ``login`` (both check the argon2id password hash), passwordless is ``begin_challenge(None)``
   then ``login_passwordless``; each issues an SSH and an X.509 certificate and writes the
   ``user.login`` audit event. Also on both backends. The argon2id verification alone is shown
   for scale.

The client side (the software authenticator signing, computing the TOTP code) is timed apart and
counted in neither column: each operation is split with ``perf_counter`` around the server calls.
Contenders run interleaved in rounds, so machine load drifts over all of them alike. A
:class:`~bastion.clock.FakeClock` moves 30 s before every login (a fresh TOTP step each time).

Run: ``python bench/mfa.py`` (about 35 s), ``--quick`` (a few seconds, smoke test),
``--json PATH`` to keep the numbers (and the audit counts the smoke test checks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
from argon2 import PasswordHasher
from webauthn import (
    generate_authentication_options,
    options_to_json,
    verify_authentication_response,
)
from webauthn.helpers import base64url_to_bytes
from webauthn.helpers.structs import PublicKeyCredentialDescriptor, UserVerificationRequirement

from bastion.audit.log import AuditQuery
from bastion.auth.server import AuthDeps, AuthServer
from bastion.auth.users import UserService
from bastion.backend.base import Backend
from bastion.backend.memory import MemoryBackend
from bastion.backend.sqlite import SQLiteBackend
from bastion.clock import FakeClock
from bastion.logging import configure_logging
from bastion.mfa.softkey import SoftwareAuthenticator
from bastion.testing import new_public_key

PASSWORD = "correct horse battery staple"
TTL = timedelta(hours=8)
ADDR = "127.0.0.1"
BACKENDS = ("memory", "sqlite")
METHODS = ("password+otp", "password+webauthn", "passwordless")
LABELS = {
    "password+otp": "password+TOTP",
    "password+webauthn": "password+WebAuthn",
    "passwordless": "passwordless",
}


@dataclass(frozen=True, slots=True)
class Sizes:
    rounds: int
    assertions: int
    """Assertions per contender per round."""
    logins: int
    """Logins per method and backend per round."""


FULL = Sizes(rounds=5, assertions=150, logins=3)
QUICK = Sizes(rounds=2, assertions=5, logins=1)


@dataclass(slots=True)
class Tally:
    """Server seconds and client seconds over ``count`` operations."""

    count: int = 0
    server: float = 0.0
    client: float = 0.0

    def rate(self) -> float:
        return self.count / self.server if self.server else 0.0


@dataclass(slots=True)
class Split:
    """Times the server's and the client's parts of one operation apart."""

    server: float = 0.0
    client: float = 0.0
    _mark: float = field(default_factory=time.perf_counter)

    def to_server(self) -> None:
        now = time.perf_counter()
        self.client += now - self._mark
        self._mark = now

    def to_client(self) -> None:
        now = time.perf_counter()
        self.server += now - self._mark
        self._mark = now

    def add_to(self, tally: Tally) -> None:
        tally.count += 1
        tally.server += self.server
        tally.client += self.client


@dataclass(slots=True)
class Server:
    kind: str
    backend: Backend
    auth: AuthServer
    users: UserService
    clock: FakeClock
    origin: str = ""


async def open_server(kind: str, tmp: Path) -> Server:
    """An initialised AuthServer (as ``bastion.testing.make_auth``) on ``kind`` that accepts the
    software authenticator."""
    clock = FakeClock()
    backend: Backend
    if kind == "sqlite":
        backend = await SQLiteBackend.open(str(tmp / f"{tmp.name}-{kind}.sqlite"), clock)
    else:
        backend = MemoryBackend(clock)
    auth = AuthServer(AuthDeps(backend=backend, clock=clock, cluster="bench", kek=b"\x01" * 32))
    await auth.init()
    pref = await auth.auth_preference()
    pref.spec.allow_software_authenticator = True
    await auth.prefs.update(pref)
    rp = await auth.mfa.relying_party()
    return Server(kind, backend, auth, UserService(auth), clock, origin=rp.origins[0])


# ---- part 1: assertion verification --------------------------------------------------------------


async def ours_assertion(server: Server, key: SoftwareAuthenticator, tally: Tally) -> None:
    split = Split()
    options = await server.auth.mfa.begin_challenge("alice", "login")
    split.to_client()
    response = key.get(options, server.origin)
    split.to_server()
    verified = await server.auth.mfa.verify_challenge("alice", "login", response)
    split.to_client()
    if verified.user != "alice":
        raise RuntimeError(f"assertion verified for {verified.user!r}")
    split.add_to(tally)


@dataclass(slots=True)
class Peer:
    """The raw ``webauthn`` library as a relying party, state in local variables."""

    rp_id: str
    origin: str
    credential_id: bytes
    public_key: bytes
    sign_count: int

    def assertion(self, key: SoftwareAuthenticator, tally: Tally) -> None:
        split = Split()
        options = generate_authentication_options(
            rp_id=self.rp_id,
            allow_credentials=[PublicKeyCredentialDescriptor(id=self.credential_id)],
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        sent = options_to_json(options)
        split.to_client()
        response = key.get(json.loads(sent), self.origin)
        split.to_server()
        verified = verify_authentication_response(
            credential=response,
            expected_challenge=options.challenge,
            expected_rp_id=self.rp_id,
            expected_origin=self.origin,
            credential_public_key=self.public_key,
            credential_current_sign_count=self.sign_count,
        )
        self.sign_count = verified.new_sign_count
        split.to_client()
        split.add_to(tally)


async def bench_assertions(servers: dict[str, Server], sizes: Sizes) -> dict[str, Tally]:
    memory = servers["memory"]
    key = SoftwareAuthenticator()
    options = await memory.auth.mfa.begin_registration("alice")
    device = await memory.auth.mfa.finish_registration(
        "alice", "key", key.create(options, memory.origin)
    )
    for other in servers.values():  # the same credential on every backend
        if other is not memory:
            await other.auth.mfa.devices.add(device.model_copy())
    rp = await memory.auth.mfa.relying_party()
    peer = Peer(
        rp_id=rp.rp_id,
        origin=memory.origin,
        credential_id=base64url_to_bytes(device.credential_id),
        public_key=base64url_to_bytes(device.public_key),
        sign_count=0,
    )
    tallies = {name: Tally() for name in (*servers, "webauthn")}
    warm = Tally()
    for server in servers.values():
        for _ in range(3):
            await ours_assertion(server, key, warm)
    for _ in range(3):
        peer.assertion(key, warm)
    for _ in range(sizes.rounds):
        for name, server in servers.items():
            for _ in range(sizes.assertions):
                await ours_assertion(server, key, tallies[name])
        for _ in range(sizes.assertions):
            peer.assertion(key, tallies["webauthn"])
    return tallies


# ---- part 2: whole logins --------------------------------------------------------------------


@dataclass(slots=True)
class LoginUsers:
    otp_secret: str
    key: SoftwareAuthenticator
    """kate's second factor (registered at her invite)."""
    passkey: SoftwareAuthenticator
    """kate's passkey (registered for passwordless login: a second factor never logs in alone)."""
    public_key: str


async def invite(server: Server, name: str) -> str:
    created = await server.users.add_user(name, ["access"], [name], {}, "admin")
    return created.token


async def enrol_users(server: Server) -> LoginUsers:
    """``tom`` accepts his invite with TOTP, ``kate`` with a security key, then adds a passkey."""
    _, public_key = new_public_key()
    token = await invite(server, "tom")
    info = await server.users.start_invite(token)
    code = pyotp.TOTP(info.otp_secret).at(server.clock.now())
    await server.users.complete_invite(token, PASSWORD, code, public_key, TTL, ADDR)
    token = await invite(server, "kate")
    key = SoftwareAuthenticator()
    options = await server.users.invite_webauthn_options(token)
    registration = key.create(options, server.origin)
    await server.users.complete_invite(
        token, PASSWORD, "", public_key, TTL, ADDR, webauthn=registration, device_name="key"
    )
    passkey = SoftwareAuthenticator()
    options = await server.auth.mfa.begin_registration("kate", passwordless=True)
    await server.auth.mfa.finish_registration(
        "kate", "passkey", passkey.create(options, server.origin)
    )
    return LoginUsers(info.otp_secret, key, passkey, public_key)


async def login_otp(server: Server, who: LoginUsers, tally: Tally) -> None:
    server.clock.advance(30)
    split = Split()
    challenge = await server.users.begin_login("tom", PASSWORD, ADDR)
    split.to_client()
    code = pyotp.TOTP(who.otp_secret).at(server.clock.now())
    split.to_server()
    certs = await server.users.login("tom", PASSWORD, code, who.public_key, TTL, ADDR)
    split.to_client()
    if not challenge.totp or certs.identity.user != "tom":
        raise RuntimeError("password+TOTP login did not go as expected")
    split.add_to(tally)


async def login_webauthn(server: Server, who: LoginUsers, tally: Tally) -> None:
    server.clock.advance(30)
    split = Split()
    challenge = await server.users.begin_login("kate", PASSWORD, ADDR)
    split.to_client()
    if challenge.webauthn is None:
        raise RuntimeError("begin_login offered no WebAuthn challenge")
    response = who.key.get(challenge.webauthn, server.origin)
    split.to_server()
    certs = await server.users.login(
        "kate", PASSWORD, "", who.public_key, TTL, ADDR, webauthn=response
    )
    split.to_client()
    if not certs.identity.mfa_device:
        raise RuntimeError("password+WebAuthn login issued certificates without the device")
    split.add_to(tally)


async def login_passwordless(server: Server, who: LoginUsers, tally: Tally) -> None:
    server.clock.advance(30)
    split = Split()
    options = await server.auth.mfa.begin_challenge(None, "login")
    split.to_client()
    response = who.passkey.get(options, server.origin)
    split.to_server()
    certs = await server.users.login_passwordless(response, who.public_key, TTL, ADDR)
    split.to_client()
    if certs.identity.user != "kate":
        raise RuntimeError(f"passwordless login named {certs.identity.user!r}")
    split.add_to(tally)


Login = Callable[[Server, LoginUsers, Tally], Awaitable[None]]
LOGINS: dict[str, Login] = {
    "password+otp": login_otp,
    "password+webauthn": login_webauthn,
    "passwordless": login_passwordless,
}


async def audited_logins(server: Server) -> dict[str, int]:
    """Successful ``user.login`` events per method, read back from the audit log."""
    events = await server.auth.audit.search(
        AuditQuery(types=("user.login",), outcome="success", limit=100_000)
    )
    counts = dict.fromkeys(METHODS, 0)
    for event in events:
        method = str(event.fields.get("method", ""))
        if method in counts:
            counts[method] += 1
    return counts


async def bench_logins(
    servers: dict[str, Server], sizes: Sizes
) -> tuple[dict[str, dict[str, Tally]], dict[str, dict[str, int]]]:
    people = {name: await enrol_users(server) for name, server in servers.items()}
    warm = Tally()
    for name, server in servers.items():
        for login in LOGINS.values():
            await login(server, people[name], warm)
    before = {name: await audited_logins(server) for name, server in servers.items()}
    tallies = {name: {method: Tally() for method in METHODS} for name in servers}
    for _ in range(sizes.rounds):
        for name, server in servers.items():
            for method, login in LOGINS.items():
                for _ in range(sizes.logins):
                    await login(server, people[name], tallies[name][method])
    audited = {}
    for name, server in servers.items():
        after = await audited_logins(server)
        audited[name] = {m: after[m] - before[name][m] for m in METHODS}
    return tallies, audited


def argon2_rate(count: int) -> float:
    hasher = PasswordHasher()  # the parameters bastion.services.credentials uses
    digest = hasher.hash(PASSWORD)
    hasher.verify(digest, PASSWORD)
    start = time.perf_counter()
    for _ in range(count):
        hasher.verify(digest, PASSWORD)
    return count / (time.perf_counter() - start)


# ---- report --------------------------------------------------------------------------------------


def report(
    sizes: Sizes,
    assertions: dict[str, Tally],
    logins: dict[str, dict[str, Tally]],
    argon2: float,
) -> list[str]:
    peer = assertions["webauthn"]
    client = sum(t.client for t in assertions.values()) / sum(t.count for t in assertions.values())
    n = sizes.rounds * sizes.assertions
    lines = [
        f"WebAuthn assertion verification (ES256, {n} per contender, challenge + verify)",
    ]
    for name in BACKENDS:
        tally = assertions[name]
        lines.append(
            f"  bastion MFAService ({name + ')':8} {tally.rate():8.0f} assertions/s  "
            f"{1000 / tally.rate():6.2f} ms"
        )
    lines.append(
        f"  webauthn library (floor)   {peer.rate():8.0f} assertions/s  "
        f"{1000 / peer.rate():6.2f} ms"
    )
    lines.append(
        f"  software authenticator     {1 / client:8.0f} signatures/s  {1000 * client:6.2f} ms "
        "(client side, in neither column)"
    )
    for name in BACKENDS:
        lines.append(
            f"  cost ratio bastion ({name}) / webauthn library: "
            f"{peer.rate() / assertions[name].rate():6.2f}x"
        )
    per = sizes.rounds * sizes.logins
    lines.append("")
    lines.append(
        f"Whole login through UserService in-process ({per} per method and backend; "
        "argon2id, certificates, audit)"
    )
    for name in BACKENDS:
        base = logins[name]["password+otp"].rate()
        for method in METHODS:
            tally = logins[name][method]
            lines.append(
                f"  {name:6} {LABELS[method]:18} {tally.rate():8.1f} logins/s  "
                f"{1000 / tally.rate():7.1f} ms  ratio vs password+TOTP: {base / tally.rate():.3g}x"
            )
    lines.append(
        f"  argon2id verify alone      {argon2:8.1f} /s        {1000 / argon2:7.1f} ms "
        "(password logins check it twice: /v1/login/begin and /v1/login)"
    )
    lines.append("  (ratio: time per login / password+TOTP's; below 1 is faster)")
    return lines


async def run(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    servers = {kind: await open_server(kind, tmp) for kind in BACKENDS}
    try:
        assertions = await bench_assertions(servers, sizes)
        fresh = {kind: await open_server(kind, tmp / kind) for kind in BACKENDS}
        try:
            logins, audited = await bench_logins(fresh, sizes)
        finally:
            for server in fresh.values():
                await server.backend.close()
    finally:
        for server in servers.values():
            await server.backend.close()
    return {"assertions": assertions, "logins": logins, "audited": audited}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small counts (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    configure_logging("warning")
    with tempfile.TemporaryDirectory(prefix="mfabench-") as tmp:
        for kind in BACKENDS:
            (Path(tmp) / kind).mkdir()
        result = asyncio.run(run(sizes, Path(tmp)))
    argon2 = argon2_rate(2 if args.quick else 10)
    for line in report(sizes, result["assertions"], result["logins"], argon2):
        print(line)
    if args.json:
        data = {
            "sizes": {
                "rounds": sizes.rounds,
                "assertions": sizes.assertions,
                "logins": sizes.logins,
            },
            "assertions_per_s": {k: t.rate() for k, t in result["assertions"].items()},
            "assertion_counts": {k: t.count for k, t in result["assertions"].items()},
            "logins_per_s": {
                b: {m: t.rate() for m, t in row.items()} for b, row in result["logins"].items()
            },
            "audited_logins": result["audited"],
            "argon2_verify_per_s": argon2,
        }
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
