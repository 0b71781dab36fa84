"""A TPM-held SSH key for bsh's own asyncssh client paths (``BSH_SSH_CLIENT=builtin``, the
per-session MFA client, leaf clusters): an asyncssh key pair whose signatures the TPM makes.

Layer: client. asyncssh accepts an :class:`asyncssh.SSHKeyPair` wherever a private key goes in
``client_keys`` (alone or with its certificate); this one holds no private key, only a signer
(:meth:`bastion.client.device.tpm_key.TPMKey.ssh_sign`), run in asyncssh's executor so the TPM
round trip does not block the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import asyncssh

from bastion.client.device.tpm_key import SSH_ECDSA, TPMKey, load_blob, ssh_public_line, tpm_for
from bastion.errors import NotFound

__all__ = ["TPMKeyPair", "profile_keypair"]


class TPMKeyPair(asyncssh.SSHKeyPair):
    """An ``ecdsa-sha2-nistp256`` key pair signing through ``signer`` (data → SSH signature
    blob); ``public_data``: the key's SSH wire encoding."""

    _key_type = "tpm"

    def __init__(self, public_data: bytes, signer: Callable[[bytes], bytes]) -> None:
        algorithm = SSH_ECDSA.encode()
        super().__init__(
            algorithm,
            algorithm,
            (algorithm,),
            (algorithm,),
            public_data,
            b"bsh TPM key",
            use_executor=True,
        )
        self._signer = signer

    def sign(self, data: bytes) -> bytes:
        return self._signer(data)


def profile_keypair(folder: Path) -> TPMKeyPair:
    """The TPM-held key of a ``--key-store=tpm`` profile (``key.tpm``).

    Raises:
        NotFound: the profile has no TPM-held key.
        BadParameter: its blob is unusable.
    """
    blob = load_blob(folder)
    if blob is None:
        raise NotFound(f"no TPM-held key in {folder}: run bsh login --key-store=tpm")
    key = TPMKey(tpm_for(blob), blob)
    public = asyncssh.import_public_key(ssh_public_line(key.public_key))
    return TPMKeyPair(public.public_data, key.ssh_sign)
