"""Tests for bastion.ca.keys: generation, encodings, ids and pins, sealing, the KEK file."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bastion.ca.keys import (
    algorithm_of,
    generate_private_key,
    load_or_create_kek,
    load_public_key,
    private_key_from_pem,
    private_key_to_pem,
    public_key_to_openssh,
    public_key_to_pem,
    seal_private_key,
    unseal_private_key,
)
from bastion.errors import BadParameter
from bastion.types.authority import KeyAlgorithm

ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ed25519", "ecdsa-p256", "rsa-3072")
KEK = bytes(range(32))


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_generate_and_encode(alg: KeyAlgorithm) -> None:
    key = generate_private_key(alg)
    public = key.public_key()
    assert algorithm_of(key) == alg == algorithm_of(public)
    line = public_key_to_openssh(public, "ca\nfor example")
    assert line.endswith(" ca for example")
    assert load_public_key(line) == public
    assert load_public_key(public_key_to_pem(public).encode()) == public
    assert private_key_from_pem(private_key_to_pem(key)).public_key() == public


def test_default_algorithm_is_ed25519() -> None:
    assert algorithm_of(generate_private_key()) == "ed25519"


def test_refuses_unsupported_keys() -> None:
    with pytest.raises(BadParameter, match="unknown key algorithm"):
        generate_private_key("dsa")  # type: ignore[arg-type]
    with pytest.raises(BadParameter, match="P-256"):
        algorithm_of(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(BadParameter, match="3072"):
        algorithm_of(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(BadParameter, match="cannot read public key"):
        load_public_key("ssh-ed25519 AAAA-not-base64")


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_seal_round_trip(alg: KeyAlgorithm) -> None:
    key = generate_private_key(alg)
    sealed = seal_private_key(key, KEK, "ssh_user:abc")
    assert private_key_to_pem(key) not in sealed
    assert seal_private_key(key, KEK, "ssh_user:abc") != sealed  # fresh nonce every time
    assert unseal_private_key(sealed, KEK, "ssh_user:abc").public_key() == key.public_key()


def test_unseal_refuses_wrong_kek_or_aad_or_tampering() -> None:
    sealed = seal_private_key(generate_private_key(), KEK, "ssh_user:abc")
    with pytest.raises(BadParameter, match="wrong key-encryption key"):
        unseal_private_key(sealed, os.urandom(32), "ssh_user:abc")
    with pytest.raises(BadParameter, match="wrong key-encryption key"):
        unseal_private_key(sealed, KEK, "ssh_host:abc")
    prefix, body = sealed.split(":", 1)
    flipped = body[:-6] + ("A" if body[-6] != "A" else "B") + body[-5:]
    with pytest.raises(BadParameter, match="cannot decrypt CA key"):
        unseal_private_key(f"{prefix}:{flipped}", KEK, "ssh_user:abc")
    with pytest.raises(BadParameter, match="unknown encryption format"):
        unseal_private_key("plain", KEK, "ssh_user:abc")
    with pytest.raises(BadParameter, match="too short"):
        unseal_private_key(f"{prefix}:AAAA", KEK, "ssh_user:abc")
    with pytest.raises(BadParameter, match="32 bytes"):
        seal_private_key(generate_private_key(), b"short", "x")


def test_load_or_create_kek(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "kek"
    kek = load_or_create_kek(path)
    assert len(kek) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_kek(path) == kek
    assert [p.name for p in path.parent.iterdir()] == ["kek"]  # no temporary files left


def test_kek_creation_race_yields_one_key(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = set(pool.map(lambda _: load_or_create_kek(path), range(32)))
    assert len(keys) == 1


def test_kek_refuses_bad_files(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.write_bytes(os.urandom(32))
    loose.chmod(0o644)
    with pytest.raises(BadParameter, match="chmod 600"):
        load_or_create_kek(loose)
    short = tmp_path / "short"
    short.write_bytes(b"x" * 16)
    short.chmod(0o600)
    with pytest.raises(BadParameter, match="32 bytes"):
        load_or_create_kek(short)
