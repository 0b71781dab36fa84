"""``bsh db login``'s per-session MFA step (the API and the security key replaced)."""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bastion.cli import bsh_db
from bastion.client.profile import Profile
from bastion.contract.db import DB_SESSION_CHALLENGE, DbCert, DbSessionChallenge
from bastion.errors import AccessDenied


def _profile(tmp_path: Path) -> Profile:
    return Profile(name="p", proxy="proxy.example:3080", user="carol", cluster="c",
                   dir=str(tmp_path))  # fmt: skip


def test_mfa_ceremony_when_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []

    def send(profile: Profile, endpoint: Any, body: Any = None, **_: Any) -> Any:
        sent.append(body)
        if endpoint is DB_SESSION_CHALLENGE:
            return DbSessionChallenge(mfa_required=True, scope="s", challenge={"c": 1})
        return DbCert(cert="CERT", ca="CA", expires="2030-01-01T00:00:00+00:00")

    monkeypatch.setattr(bsh_db, "profile_send", send)
    monkeypatch.setattr(bsh_db, "solve", lambda options, origin, profile_dir: {"answer": options})
    got = bsh_db._session_cert(_profile(tmp_path), "pg1", "carol_db", "", "PUB")
    assert got is not None and got.cert == "CERT"
    assert sent[0].db_user == "carol_db" and sent[1].mfa_response == {"answer": {"c": 1}}


def test_no_ceremony_when_not_required_or_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: list[Any] = [DbSessionChallenge(mfa_required=False), AccessDenied("no")]

    def send(profile: Profile, endpoint: Any, body: Any = None, **_: Any) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(bsh_db, "profile_send", send)
    profile = _profile(tmp_path)
    assert bsh_db._session_cert(profile, "pg1", "carol_db", "", "PUB") is None
    assert bsh_db._session_cert(profile, "pg1", "carol_db", "", "PUB") is None  # proxy decides
    assert bsh_db._session_cert(profile, "pg1", "", "", "PUB") is None  # no db user: no ask


# ---- bsh proxy db: a fresh certificate for a new connection once the current one expires

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_needs_fresh_cert_decision() -> None:
    minute = T0 + timedelta(minutes=1)  # a per-session MFA certificate
    assert not bsh_db.needs_fresh_cert(minute, T0)  # fresh: reused
    assert not bsh_db.needs_fresh_cert(minute, minute - timedelta(seconds=11))
    assert bsh_db.needs_fresh_cert(minute, minute - timedelta(seconds=10))  # about to expire
    assert bsh_db.needs_fresh_cert(minute, minute + timedelta(seconds=1))  # expired
    assert bsh_db.needs_fresh_cert(None, T0)  # no readable certificate
    assert not bsh_db.needs_fresh_cert(minute, minute - timedelta(seconds=2), timedelta(0))


async def test_listener_renews_once_for_connections_arriving_together(tmp_path: Path) -> None:
    now = [T0]
    expires = [T0 + timedelta(minutes=1)]
    logins: list[str] = []
    contexts = [ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT) for _ in range(3)]

    def load() -> tuple[ssl.SSLContext, datetime | None]:
        return contexts[len(logins)], expires[0]

    def login(profile: Profile, name: str) -> None:  # bsh db login again (MFA prompt)
        logins.append(name)
        expires[0] = now[0] + timedelta(minutes=1)

    certs = bsh_db.ListenerCerts(_profile(tmp_path), "pg1", login=login, load=load,
                                 now=lambda: now[0])  # fmt: skip
    assert await certs.context() is contexts[0]
    now[0] = T0 + timedelta(seconds=30)
    assert await certs.context() is contexts[0] and logins == []  # still valid: reused
    now[0] = T0 + timedelta(seconds=55)  # about to expire: the next connection renews
    got = await asyncio.gather(*(certs.context() for _ in range(4)))
    assert logins == ["pg1"] and certs.renewals == 1
    assert all(c is contexts[1] for c in got)
    now[0] = T0 + timedelta(minutes=5)  # expired long ago
    assert await certs.context() is contexts[2] and len(logins) == 2


async def test_listener_renewal_failure_is_raised_per_connection(tmp_path: Path) -> None:
    def login(profile: Profile, name: str) -> None:
        raise AccessDenied("MFA failed")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    certs = bsh_db.ListenerCerts(_profile(tmp_path), "pg1", login=login,
                                 load=lambda: (ctx, T0), now=lambda: T0)  # fmt: skip
    with pytest.raises(AccessDenied, match="MFA failed"):
        await certs.context()
