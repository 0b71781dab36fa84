"""bsh's own asyncssh paths sign with the TPM-held key through :class:`TPMKeyPair` (pure: a
software signer stands in for the TPM)."""

from __future__ import annotations

import asyncssh
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from bastion.client.device.tpm_key import ssh_ecdsa_signature, ssh_public_line
from bastion.client.device.tpm_ssh import TPMKeyPair


def test_the_asyncssh_key_pair_signs_through_its_signer() -> None:
    """bsh's own asyncssh paths: the key pair takes the certificate and signs with the TPM's
    signer (here a software stand-in), as OpenSSH's verification expects."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = asyncssh.import_public_key(ssh_public_line(key.public_key()))

    def signer(data: bytes) -> bytes:
        return ssh_ecdsa_signature(*decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256()))))

    pair = TPMKeyPair(public.public_data, signer)
    ca = asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.generate_user_certificate(public, "alice", principals=["alice"])
    pair.set_certificate(cert)
    assert pair.algorithm == b"ecdsa-sha2-nistp256-cert-v01@openssh.com"
    assert pair.sig_algorithm == b"ecdsa-sha2-nistp256" and pair.use_executor
    assert public.verify(b"data", pair.sign(b"data"))
