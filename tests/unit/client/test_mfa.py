import json

import pytest

from bastion.client import mfa
from bastion.errors import AccessDenied, NotFound

OPTIONS = {
    "rp": {"id": "127.0.0.1", "name": "Bastion"},
    "user": {"id": "aGFuZGxl", "name": "alice", "displayName": "alice"},
    "challenge": "Y2hhbGxlbmdlLWNoYWxsZW5nZQ",
    "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
}


def test_refuses_rp_id_of_another_site(monkeypatch, tmp_path):
    monkeypatch.setenv(mfa.ENV_SOFTWARE, str(tmp_path / "k.json"))
    with pytest.raises(AccessDenied, match="refusing"):
        mfa.solve({**OPTIONS, "rp": {"id": "evil.test", "name": "x"}}, "https://127.0.0.1:3080")
    assert not (tmp_path / "k.json").exists()


def test_software_authenticator_from_env_then_profile_setting(monkeypatch, tmp_path):
    monkeypatch.setattr(mfa, "_usb_device", lambda: None)
    monkeypatch.setenv(mfa.ENV_SOFTWARE, str(tmp_path / "k.json"))
    response = mfa.solve(OPTIONS, "https://127.0.0.1:3080")
    assert response["type"] == "public-key" and (tmp_path / "k.json").exists()
    monkeypatch.delenv(mfa.ENV_SOFTWARE)
    with pytest.raises(NotFound, match="no FIDO2 security key"):
        mfa.solve(OPTIONS, "https://127.0.0.1:3080", profile_dir=tmp_path)
    (tmp_path / "mfa.json").write_text(
        json.dumps({"software_authenticator": str(tmp_path / "k.json")})
    )
    get = {
        "rpId": "127.0.0.1",
        "challenge": "Y2hhbGxlbmdl",
        "allowCredentials": [{"type": "public-key", "id": response["id"]}],
    }
    assertion = mfa.solve(get, "https://127.0.0.1:3080", profile_dir=tmp_path)
    assert assertion["id"] == response["id"] and "signature" in assertion["response"]


def test_origin_for():
    assert mfa.origin_for("proxy:3080") == "https://proxy:3080"
    assert mfa.origin_for("https://proxy:3080") == "https://proxy:3080"
