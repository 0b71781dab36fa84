"""bsh's per-session MFA helpers: the answer parser and the in-memory TLS context."""

from __future__ import annotations

import ssl
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from bastion.client.profile import Profile, ProfileStore, new_client_key
from bastion.client.session_mfa import (
    SessionCredentials,
    check_forwarding,
    parse_issued,
    session_ssl_context,
)
from bastion.errors import AccessDenied, BadParameter, RemoteProtocolError
from bastion.testing import make_auth
from bastion.types import Identity

ANSWER = {
    "node": "web1",
    "login": "root",
    "ssh_cert": "ssh-ed25519-cert-v01@openssh.com AAAA alice",
    "tls_cert": "-----BEGIN CERTIFICATE-----",
    "expires": "2030-01-01T00:00:00+00:00",
    "scope": "session:web1:root",
}


def test_parse_issued() -> None:
    creds = parse_issued(ANSWER)
    assert (creds.node, creds.login, creds.expires) == ("web1", "root", ANSWER["expires"])


@pytest.mark.parametrize(
    "answer",
    [None, [], {**ANSWER, "ssh_cert": ""}, {**ANSWER, "tls_cert": 3}, {"node": "web1"}],
)
def test_parse_issued_refuses_malformed_answers(answer: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_issued(answer)


async def _profile(tmp_path: Path) -> tuple[Profile, str]:
    """A saved profile and a second X.509 user certificate for the same key."""
    fx = await make_auth()
    key = new_client_key()
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    ident = Identity(
        cluster="test.local",
        user="alice",
        roles=("access",),
        logins=("root",),
        expires=fx.clock.now() + timedelta(hours=1),
    )
    login = await fx.auth.issuer.issue_user(ident, pub, "")
    session = await fx.auth.issuer.issue_user(
        ident.model_copy(update={"mfa_scope": "session:web1:root"}), pub, ""
    )
    store = ProfileStore(tmp_path)
    profile = Profile(name="test.local", proxy="127.0.0.1:1", user="alice", cluster="test.local")
    store.save(
        profile,
        key,
        {"ssh_cert": login.ssh_cert, "tls_cert": login.tls_cert, "tls_host_ca": login.tls_host_ca},
    )
    return profile, session.tls_cert


async def test_session_context_loads_the_session_certificate_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    profile, tls_cert = await _profile(tmp_path)
    before = set(Path(tempfile.gettempdir()).glob("bsh-session-*"))
    creds = SessionCredentials("web1", "root", "x", tls_cert, "x")
    ctx = session_ssl_context(profile, creds)
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert set(Path(tempfile.gettempdir()).glob("bsh-session-*")) == before
    assert list(tmp_path.rglob("session.crt")) == []


async def test_session_context_refuses_a_certificate_for_another_key(tmp_path: Path) -> None:
    profile, _ = await _profile(tmp_path)
    other, foreign = await _profile(tmp_path / "other")
    del other
    with pytest.raises(BadParameter, match="does not load"):
        session_ssl_context(profile, SessionCredentials("web1", "root", "x", foreign, "x"))


def test_forwards_refused_with_the_reason_when_roles_forbid_them() -> None:
    with pytest.raises(AccessDenied, match="port_forwarding: false"):
        check_forwarding({"mfa_required": False, "port_forwarding": False}, forwards=True)
    check_forwarding({"port_forwarding": False}, forwards=False)  # no -L/-R: nothing to refuse
    check_forwarding({"port_forwarding": True}, forwards=True)
    check_forwarding({}, forwards=True)  # an older server: the node still decides


async def test_session_keys_a_failing_tpm_spares_only_a_software_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The device ceremony of a per-session certificate: with a software key a failing TPM
    leaves the certificate without the device (a warning); a TPM-held key needs it."""
    from bastion.client import session_mfa
    from bastion.client.device.ceremony import LoginKeys
    from bastion.errors import ConnectionProblem

    async def failing(*args: Any) -> LoginKeys:
        raise ConnectionProblem("the TPM does not answer")

    monkeypatch.setattr(session_mfa, "request_keys", failing)
    path = tmp_path / "profiles" / "c.local"
    path.mkdir(parents=True)
    profile = Profile(name="c.local", proxy="p:3080", user="alice", cluster="c.local")
    monkeypatch.setattr(Profile, "path", property(lambda self: path))
    client: Any = None
    assert await session_mfa._session_keys(client, profile) == LoginKeys()
    assert (
        "warning: device authentication failed: the TPM does not answer" in capsys.readouterr().err
    )
    (path / "key.tpm").write_text("blob")
    with pytest.raises(ConnectionProblem):
        await session_mfa._session_keys(client, profile)
