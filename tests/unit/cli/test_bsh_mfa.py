import json
import os
import stat

from bastion.cli import bsh_mfa
from bastion.client.mfa import ENV_SOFTWARE


def test_next_name_counts_up_per_kind():
    assert bsh_mfa._next_name([], "webauthn") == "key"
    devices = [{"name": "key"}, {"name": "key2"}, {"name": "otp"}]
    assert bsh_mfa._next_name(devices, "webauthn") == "key3"
    assert bsh_mfa._next_name(devices, "totp") == "otp2"


def test_software_authenticator_option_is_remembered_privately(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_SOFTWARE, raising=False)
    profile = tmp_path / "profiles" / "c"
    bsh_mfa.enable_software_authenticator(str(tmp_path / "key.json"), profile)
    settings = profile / "mfa.json"
    assert json.loads(settings.read_text()) == {
        "software_authenticator": str(tmp_path / "key.json")
    }
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600
    assert os.environ[ENV_SOFTWARE] == str(tmp_path / "key.json")
    bsh_mfa.enable_software_authenticator(None, profile)  # no option: nothing changes
    assert settings.exists()


def test_read_code_from_stdin_and_errors_that_say_how(monkeypatch):
    import io

    import pytest

    from bastion.errors import BadParameter

    monkeypatch.setattr("sys.stdin", io.StringIO("123456\n"))
    assert bsh_mfa._read_code(None, "code") == "123456"
    assert bsh_mfa._read_code("654321", "code") == "654321"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(BadParameter, match="expected the code from .*or pass --otp"):
        bsh_mfa._read_code(None, "Code from your authenticator app")
    # a new TOTP secret: nobody knows its code before bsh prints the secret
    with pytest.raises(BadParameter, match="after bsh printed the secret") as info:
        bsh_mfa._read_code(None, "Code shown by the app for the new secret", otp_flag=False)
    assert "--otp" not in str(info.value)
