"""ProfileStore: files 0600, and the CA pins a verified login records for the next one."""

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.client.api import spki_pin_of_pem
from bastion.client.profile import KNOWN_CLUSTERS, Profile, ProfileStore, new_client_key


def ca_pem(name: str = "ca") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def save(store: ProfileStore, ca: str, proxy: str = "proxy:3080") -> Profile:
    profile = Profile(name="c1", proxy=proxy, user="alice", cluster="c1")
    certs = {
        "ssh_cert": "ssh-ed25519-cert-v01@openssh.com AAAA",
        "tls_cert": "x",
        "tls_host_ca": ca,
    }
    return store.save(profile, new_client_key(), certs)


def test_every_profile_file_is_private(tmp_path):
    store = ProfileStore(tmp_path)
    profile = save(store, ca_pem())
    store.remember_cluster("proxy:3080", "c1", [])
    files = [*profile.path.iterdir(), tmp_path / "current", tmp_path / KNOWN_CLUSTERS]
    assert {f.name for f in files} >= {"key", "tls.key", "tls.crt", "ca.pem", "profile.json"}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_pins_survive_logout(tmp_path):
    store = ProfileStore(tmp_path)
    ca = ca_pem()
    save(store, ca)
    store.remember_cluster("proxy:3080", "c1", spki_pin_of_pem(ca))
    store.remove("c1")
    assert store.names() == []
    assert store.trusted_pins("proxy:3080") == set(spki_pin_of_pem(ca))
    assert store.trusted_pins("other:3080") == set()
    record = json.loads((tmp_path / KNOWN_CLUSTERS).read_text())
    assert record["proxy:3080"]["cluster"] == "c1"


def test_an_insecure_login_records_nothing_and_ends_the_old_fallback(tmp_path):
    store = ProfileStore(tmp_path)
    save(store, ca_pem())
    # a home from before pins were recorded: its profiles' ca.pem is trusted, as it was
    assert store.trusted_pins("proxy:3080")
    store.remember_cluster("proxy:3080", "c1", None)  # --insecure
    assert store.trusted_pins("proxy:3080") == set()


def test_a_later_verified_login_replaces_the_pins(tmp_path):
    store = ProfileStore(tmp_path)
    old, new = ca_pem("old"), ca_pem("new")
    store.remember_cluster("proxy:3080", "c1", spki_pin_of_pem(old))
    store.remember_cluster("proxy:3080", "c1", spki_pin_of_pem(old + new))  # a rotation
    assert store.trusted_pins("proxy:3080") == set(spki_pin_of_pem(old + new))


def test_an_unreadable_record_trusts_nothing(tmp_path):
    store = ProfileStore(tmp_path)
    save(store, ca_pem())
    (tmp_path / KNOWN_CLUSTERS).write_text("{not json")
    assert store.trusted_pins("proxy:3080") == set()


def test_a_tpm_held_key_leaves_no_key_files(tmp_path):
    """``ssh_public`` (bsh login --key-store=tpm): both certificates are for the TPM-held key,
    so neither ``key`` nor ``tls.key`` is written, and those of an earlier login go."""
    store = ProfileStore(tmp_path)
    profile = save(store, ca_pem())
    assert (profile.path / "tls.key").exists()
    certs = {"ssh_cert": "", "tls_cert": "x", "tls_host_ca": ca_pem()}
    store.save(profile, new_client_key(), certs, ssh_public="ecdsa-sha2-nistp256 AAAA")
    names = {f.name for f in profile.path.iterdir()}
    assert "key" not in names and "tls.key" not in names
    assert (profile.path / "key.pub").read_text() == "ecdsa-sha2-nistp256 AAAA\n"


def test_resource_key_is_a_fresh_software_key_or_the_profiles_tpm_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.client import profile as profile_mod
    from bastion.client.device import tpm_key

    key_pem, pub = profile_mod.resource_key(tmp_path)
    private = serialization.load_pem_private_key(key_pem, None)
    assert (
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == pub
    )
    assert profile_mod.resource_key(tmp_path)[1] != pub  # fresh each time
    (tmp_path / "key.tpm").write_text("{}")  # a --key-store=tpm profile: no tls.key
    monkeypatch.setattr(tpm_key, "public_pem", lambda d: f"PUB OF {d.name}")
    assert profile_mod.resource_key(tmp_path) == (b"", f"PUB OF {tmp_path.name}".encode())
