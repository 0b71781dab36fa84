"""bsh login's flag checks (the flows themselves run end to end in tests/integration)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bastion.cli.bsh import main
from bastion.cli.bsh_login import check_user_flag
from bastion.errors import BadParameter


@pytest.mark.parametrize(
    ("invite", "auth", "message"),
    [
        ("TOKEN", None, "--user is not used with --invite: the invite names the account"),
        (None, "passwordless", "--user is not used with --auth=passwordless"),
        (None, "okta", "--user is not used with --auth=okta"),
    ],
)
def test_user_is_refused_where_it_would_be_ignored(invite, auth, message):
    with pytest.raises(BadParameter, match=message):
        check_user_flag("alice", invite, auth)


def test_user_is_fine_for_a_password_login():
    check_user_flag("alice", None, None)
    check_user_flag("alice", None, "local")
    check_user_flag(None, "TOKEN", "passwordless")


def test_login_refuses_before_contacting_anyone(tmp_path, monkeypatch):
    monkeypatch.setenv("BSH_HOME", str(tmp_path))
    args = ["login", "--proxy=127.0.0.1:1", "--auth=passwordless", "--user=alice"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "the passkey names the account" in result.output


def _fake_server(monkeypatch, ca: str):
    """bsh login's ping: the real pin check of fetch_cluster_ca over a fake /v1/ping."""
    import bastion.client.api as api

    async def request(self, method, path, body, params, headers, *, raw=False):
        assert (method, path) == ("GET", "/v1/ping")
        return {
            "cluster": "c1",
            "version": "test",
            "second_factor": "off",
            "tls_host_ca": ca,
            "server_time": "2026-12-06T00:00:00+00:00",
        }

    async def enter(self):
        return self

    async def leave(self, *exc):
        return None

    monkeypatch.setattr(api.AuthClient, "_request", request)
    monkeypatch.setattr(api.AuthClient, "__aenter__", enter)
    monkeypatch.setattr(api.AuthClient, "__aexit__", leave)


def test_unknown_server_is_not_offered_its_own_pin(tmp_path, monkeypatch):
    from tests.unit.client.test_profile import ca_pem

    from bastion.cli.bsh_login import _ping
    from bastion.client.api import spki_pin_of_pem
    from bastion.client.profile import ProfileStore
    from bastion.errors import BadParameter

    ca = ca_pem()
    _fake_server(monkeypatch, ca)
    store = ProfileStore(tmp_path)
    [pin] = spki_pin_of_pem(ca)
    with pytest.raises(BadParameter, match="not known on this machine") as unknown:
        _ping("proxy:3080", None, False, store)
    assert pin not in unknown.value.message and "--ca-pin=sha256:..." in unknown.value.message
    with pytest.raises(BadParameter, match="does not match --ca-pin") as wrong:
        _ping("proxy:3080", "sha256:" + "0" * 64, False, store)
    assert pin not in wrong.value.message
    assert _ping("proxy:3080", pin, False, store)["cluster"] == "c1"


def test_relogin_after_logout_uses_the_recorded_pin(tmp_path, monkeypatch):
    from tests.unit.client.test_profile import ca_pem

    from bastion.cli.bsh_login import _ping
    from bastion.client.api import spki_pin_of_pem
    from bastion.client.profile import ProfileStore
    from bastion.errors import AccessDenied

    ca = ca_pem()
    _fake_server(monkeypatch, ca)
    store = ProfileStore(tmp_path)
    store.remember_cluster("proxy:3080", "c1", spki_pin_of_pem(ca))
    assert _ping("proxy:3080", None, False, store)["cluster"] == "c1"  # no --ca-pin needed
    _fake_server(monkeypatch, ca_pem("impostor"))
    with pytest.raises(AccessDenied, match="its CA changed") as changed:
        _ping("proxy:3080", None, False, store)
    assert "sha256:" not in changed.value.message.replace("sha256:...", "")


def test_totp_enrollment_shows_a_qr_code_on_a_terminal_and_always_the_secret() -> None:
    from bastion.cli.bsh_login import totp_enrollment

    uri = "otpauth://totp/Bastion%20c:alice?secret=JBSWY3DPEHPK3PXP&issuer=Bastion%20c"
    shown = totp_enrollment(uri, "JBSWY3DPEHPK3PXP", terminal=True)
    assert "Scan this QR code" in shown and any(c in shown for c in "\u2580\u2584\u2588")
    assert shown.rstrip().endswith("secret: JBSWY3DPEHPK3PXP") and uri in shown
    plain = totp_enrollment(uri, "JBSWY3DPEHPK3PXP", terminal=False)
    assert "QR" not in plain and "secret: JBSWY3DPEHPK3PXP" in plain


def test_a_weak_new_password_is_refused_before_anything_else_is_read() -> None:
    import io

    from bastion.cli.bsh_login import Secrets
    from bastion.errors import BadParameter

    stdin = io.StringIO("short\n123456\n")
    with pytest.raises(BadParameter, match="password too short"):
        Secrets(True, None, stdin).new_password()
    assert stdin.readline() == "123456\n"  # the TOTP code line was not consumed


def test_every_login_sends_the_key_material_and_an_invite_signs_a_fresh_challenge(
    monkeypatch,
) -> None:  # type: ignore[no-untyped-def]
    """``--key-store=tpm`` is no longer the password login's alone: the passkey login sends
    the ``DeviceBound`` fields it was given, and an invite re-certifies over a challenge it
    asks the ping for after its prompts (they may outlast the first one)."""
    import io
    from types import SimpleNamespace
    from typing import Any

    from bastion.cli import bsh_mfa
    from bastion.cli.bsh_login import Secrets, _login_flow
    from bastion.client.device.ceremony import LoginKeys
    from bastion.contract import core

    proof: dict[str, object] = {"device_id": "d1", "challenge": "dc1.ping", "signature": "sig"}
    keys = LoginKeys(device=proof, ssh_public_key="tpm")
    sent: list[Any] = []

    async def passwordless(client, public_key, ttl, profile_dir, binding=None):  # type: ignore[no-untyped-def]
        sent.append(binding)
        return {"user": "alice"}

    class Client:
        async def __aenter__(self) -> Client:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def send(self, endpoint, body=None):  # type: ignore[no-untyped-def]
            if endpoint is core.PING:
                return SimpleNamespace(device_challenge="dc1.fresh")
            if endpoint is core.INVITE_START:
                return SimpleNamespace(model_dump=lambda: {"user": "bob", "otp_required": False})
            sent.append(body)
            return SimpleNamespace(model_dump=lambda: {"user": "bob"})

    monkeypatch.setattr(bsh_mfa, "passwordless_login", passwordless)
    secrets = Secrets(True, None, io.StringIO("a long enough password 1\n"))
    client: Any = Client()
    certs, used = _login_flow(
        client,
        None,
        None,
        secrets,
        "on",
        "tpm",
        "1h",
        auth="passwordless",
        keys=keys,
    )
    assert certs == {"user": "alice"} and used == keys
    assert sent.pop() == {"device": keys.device, "ssh_public_key": "tpm"}
    fresh = LoginKeys(device={**proof, "challenge": "dc1.fresh"}, ssh_public_key="tpm")
    challenges: list[str] = []

    def refresh(challenge: str) -> LoginKeys:
        challenges.append(challenge)
        return fresh

    _, used = _login_flow(
        client,
        "TOKEN",
        None,
        secrets,
        "on",
        "tpm",
        "1h",
        keys=keys,
        refresh=refresh,
    )
    assert challenges == ["dc1.fresh"] and used == fresh
    body = sent.pop()
    assert body.device is not None and body.device.challenge == "dc1.fresh"
    assert body.ssh_public_key == "tpm"
