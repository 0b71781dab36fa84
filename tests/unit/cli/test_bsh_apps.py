from pathlib import Path

from click.testing import CliRunner

from bastion.cli.bsh_apps import apps_group, curl_flags


def test_curl_flags():
    line = curl_flags(Path("/p/apps/grafana"), "grafana.proxy.test:3080")
    assert line == (
        "curl --cert /p/apps/grafana.crt --key /p/apps/grafana.key "
        "--cacert /p/apps/grafana.ca https://grafana.proxy.test:3080/"
    )


def test_help_lists_the_commands():
    out = CliRunner().invoke(apps_group, ["--help"]).output
    assert all(c in out for c in ("ls", "login", "config", "logout"))


def test_mfa_cert_answers_with_a_totp_code(monkeypatch):
    from types import SimpleNamespace

    from bastion.cli import bsh_apps
    from bastion.contract.apps import AppCert, AppMfaChallenge

    sent = []

    def send(profile, endpoint, body=None, **_):
        sent.append((endpoint, body))
        if endpoint is bsh_apps.APP_MFA_CHALLENGE:
            return AppMfaChallenge(mfa_required=body.app == "admin", scope="app:admin", totp=True)
        return AppCert(cert="C", ca="A", expires="soon", public_addr="admin.p")

    monkeypatch.setattr(bsh_apps, "profile_send", send)
    monkeypatch.setattr(bsh_apps.click, "prompt", lambda *a, **k: " 123456 ")
    profile = SimpleNamespace(proxy="p:3080", path=Path("/nowhere"))
    assert bsh_apps._mfa_cert(profile, "grafana", "PUB", False) is None
    reply = bsh_apps._mfa_cert(profile, "admin", "PUB", True)
    assert reply is not None and reply.cert == "C"
    request = sent[-1][1]
    assert request.otp == "123456" and request.mfa_response is None and request.app == "admin"
