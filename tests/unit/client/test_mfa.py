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


# ---- the python-fido2 path, against an emulated CTAP2 key ---------------------------------------
# No USB security key exists on a test machine, so this CTAP2 device answers python-fido2's real
# CBOR commands with the software authenticator's core. Everything from bsh's Fido2Client call to
# the relying party's verification is the real code.

from fido2 import cbor  # noqa: E402
from fido2.ctap import CtapDevice  # noqa: E402
from fido2.hid import CAPABILITY, CTAPHID  # noqa: E402

from bastion.errors import BadParameter  # noqa: E402
from bastion.mfa.softkey import SoftwareAuthenticator  # noqa: E402
from bastion.testing import make_auth  # noqa: E402

CTAP2_ERR_CREDENTIAL_EXCLUDED = 0x19
CTAP2_ERR_NO_CREDENTIALS = 0x2E


class EmulatedKey(CtapDevice):
    def __init__(self, key: SoftwareAuthenticator) -> None:
        self.key = key
        self.commands: list[int] = []

    @property
    def capabilities(self) -> int:
        return CAPABILITY.CBOR

    @classmethod
    def list_devices(cls):  # pragma: no cover - never enumerated
        return iter(())

    def call(self, cmd, data=b"", event=None, on_keepalive=None) -> bytes:
        assert cmd == CTAPHID.CBOR
        op = data[0]
        args = cbor.decode(data[1:]) if len(data) > 1 else {}
        self.commands.append(op)
        if op == 0x04:  # getInfo
            response = {
                1: ["FIDO_2_0"],
                3: self.key.aaguid.bytes,
                4: {"rk": True, "up": True, "uv": self.key.user_verification},
                6: [1],
                9: ["usb"],
                10: [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -8}],
            }
        elif op == 0x01:  # makeCredential
            options = args.get(7) or {}
            try:
                _, auth_data, fmt, stmt = self.key.make_credential(
                    rp_id=args[2]["id"],
                    client_data_hash=args[1],
                    user_handle=args[3]["id"],
                    user_name=args[3].get("name", ""),
                    algorithms=[p["alg"] for p in args[4]],
                    exclude=[c["id"] for c in args.get(5) or []],
                    resident=bool(options.get("rk")),
                    attestation="direct",
                )
            except BadParameter:
                return bytes([CTAP2_ERR_CREDENTIAL_EXCLUDED])
            response = {1: fmt, 2: auth_data, 3: stmt}
        elif op == 0x02:  # getAssertion
            allow = [c["id"] for c in args.get(3) or []]
            try:
                cred, auth_data, signature = self.key.get_assertion(
                    rp_id=args[1], client_data_hash=args[2], allow=allow
                )
            except Exception:
                return bytes([CTAP2_ERR_NO_CREDENTIALS])
            from webauthn.helpers import base64url_to_bytes

            response = {
                1: {"type": "public-key", "id": base64url_to_bytes(cred.id)},
                2: auth_data,
                3: signature,
            }
            if cred.resident:
                response[4] = {"id": base64url_to_bytes(cred.user_handle)}
        else:
            return bytes([0x01])  # CTAP1_ERR_INVALID_COMMAND
        return b"\x00" + cbor.encode(response)


async def test_usb_key_through_python_fido2_registers_and_logs_in(monkeypatch):
    fx = await make_auth()
    pref = await fx.auth.auth_preference()
    pref.spec.allow_software_authenticator = True  # the emulated key reports our AAGUID
    await fx.auth.prefs.update(pref)
    device = EmulatedKey(SoftwareAuthenticator())
    monkeypatch.setattr(mfa, "_usb_device", lambda: device)
    monkeypatch.delenv(mfa.ENV_SOFTWARE, raising=False)
    origin = "https://127.0.0.1:3025"

    options = await fx.auth.mfa.begin_registration("alice", passwordless=True)
    registered = await fx.auth.mfa.finish_registration(
        "alice", "usb", mfa.solve(options, origin, create=True)
    )
    assert 0x01 in device.commands and registered.resident

    options = await fx.auth.mfa.begin_challenge("alice", "login")
    verified = await fx.auth.mfa.verify_challenge("alice", "login", mfa.solve(options, origin))
    assert verified.device_id == registered.id

    options = await fx.auth.mfa.begin_challenge(None, "login")  # passwordless: the user handle
    verified = await fx.auth.mfa.verify_challenge(None, "login", mfa.solve(options, origin))
    assert verified.user == "alice"


async def test_usb_key_refusal_is_a_clear_error(monkeypatch):
    fx = await make_auth()
    pref = await fx.auth.auth_preference()
    pref.spec.allow_software_authenticator = True
    await fx.auth.prefs.update(pref)
    device = EmulatedKey(SoftwareAuthenticator())
    monkeypatch.setattr(mfa, "_usb_device", lambda: device)
    options = await fx.auth.mfa.begin_registration("alice")
    await fx.auth.mfa.finish_registration(
        "alice", "usb", mfa.solve(options, "https://127.0.0.1:3025", create=True)
    )
    options = await fx.auth.mfa.begin_registration("alice")  # excludes the key just registered
    with pytest.raises(BadParameter, match="security key refused"):
        mfa.solve(options, "https://127.0.0.1:3025", create=True)
