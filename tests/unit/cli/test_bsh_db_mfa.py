"""``bsh db login``'s per-session MFA step (the API and the security key replaced)."""

from __future__ import annotations

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
