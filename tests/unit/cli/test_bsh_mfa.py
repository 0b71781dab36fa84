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
