"""The software-made TPM structures verify as a TPM's do (``auth/key_attest``)."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec

from bastion.auth.device_attest import spki_sha256
from bastion.auth.key_attest import certified_key_sha256
from bastion.testing.tpm_structs import certify, public_pem


def test_a_certification_verifies_against_the_ak_and_names_the_key() -> None:
    ak, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    nonce = hashlib.sha256(b"challenge").digest()
    certification = certify(ak, key, nonce)
    certified = certified_key_sha256(public_pem(ak), *certification, qualifying_data=nonce)
    assert certified == spki_sha256(public_pem(key))
