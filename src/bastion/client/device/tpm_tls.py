"""A TLS client key that signs outside OpenSSL: Python's ``ssl`` presents the X.509 certificate of
a TPM-held key (``bsh login --key-store=tpm``) and the TPM makes the handshake's signature.

Layer: client. OpenSSL 3.0 treats an ``EC_KEY`` whose ``EC_KEY_METHOD`` is not the default one
as a *foreign* (legacy) key and signs with it through that method, not through a provider. So,
through ctypes on the very libssl/libcrypto that Python's ``_ssl`` module links:

* one ``EC_KEY_METHOD`` per process, copied from ``EC_KEY_OpenSSL()`` with a ``sign_sig``
  callback that hands the digest to the key's signer (the TPM: :meth:`TPMKey.sign_digest`) and
  returns its ``(r, s)`` as an ``ECDSA_SIG``;
* per key, an ``EC_KEY`` of the public point only (``d2i_EC_PUBKEY``) with that method, in an
  ``EVP_PKEY``, installed with ``SSL_CTX_use_certificate_chain_file`` and
  ``SSL_CTX_use_PrivateKey`` on the ``SSL_CTX *`` of the :class:`ssl.SSLContext` (CPython keeps
  it right after the object header; it is checked against the context's options and verify mode
  before use);
* the client signature algorithms are limited to ``ECDSA+SHA256`` (the TPM key's scheme).

No cryptography is done here: the TPM signs, OpenSSL does TLS. The signer and the ``EVP_PKEY``
live as long as the context (and its connections, which keep the context); the process-wide
method and callback are never freed, so OpenSSL may drop its last reference to a key at any
time. The pure parts (the scalar encoding, the digest check, the verify-mode mapping) are
unit-tested; the bridge itself in tests/unit with a software signer over memory BIOs, and with
swtpm in tests/integration/test_devices.py.
"""

from __future__ import annotations

import ctypes
import ssl
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.errors import BadParameter

__all__ = [
    "DIGEST_SIZE",
    "SIGALGS",
    "Signer",
    "TLSKeyError",
    "check_digest",
    "install_key",
    "scalar_bytes",
    "ssl_ctx_pointer",
    "verify_mode_flags",
]

Signer = Callable[[bytes], tuple[int, int]]
"""A SHA-256 digest → the ECDSA P-256 signature ``(r, s)`` (the TPM's)."""

DIGEST_SIZE: Final = 32
SCALAR_SIZE: Final = 32
SIGALGS: Final = b"ECDSA+SHA256"
_NID_P256: Final = 415  # NID_X9_62_prime256v1
_SSL_CTRL_SET_CLIENT_SIGALGS_LIST: Final = 102
_VERIFY_PEER: Final = 0x01
_VERIFY_FAIL_IF_NO_PEER_CERT: Final = 0x02


class TLSKeyError(BadParameter):
    """The TPM-held key cannot be installed in this process's TLS (one line, what to do)."""


def scalar_bytes(value: int) -> bytes:
    """``r`` or ``s`` of a P-256 signature as the 32 big-endian bytes ``BN_bin2bn`` reads.

    Raises:
        ValueError: not in 1 .. 2**256 - 1.
    """
    if not 0 < value < 1 << (8 * SCALAR_SIZE):
        raise ValueError("an ECDSA P-256 scalar is 1 .. 2**256 - 1")
    return value.to_bytes(SCALAR_SIZE, "big")


def check_digest(digest: bytes) -> bytes:
    """The digest a handshake asks the key to sign, which must be SHA-256's (the TPM key's
    scheme; :data:`SIGALGS` makes OpenSSL choose it).

    Raises:
        ValueError: another size.
    """
    if len(digest) != DIGEST_SIZE:
        raise ValueError(f"the TPM key signs SHA-256 digests, not {len(digest)}-byte ones")
    return digest


def verify_mode_flags(mode: ssl.VerifyMode) -> int:
    """The ``SSL_VERIFY_*`` flags CPython sets for ``mode`` on a client context."""
    if mode == ssl.CERT_NONE:
        return 0
    if mode == ssl.CERT_OPTIONAL:
        return _VERIFY_PEER
    return _VERIFY_PEER | _VERIFY_FAIL_IF_NO_PEER_CERT


# ---- libssl / libcrypto --------------------------------------------------------------------

_vp = ctypes.c_void_p
_SIGN_SIG = ctypes.CFUNCTYPE(_vp, ctypes.POINTER(ctypes.c_ubyte), ctypes.c_int, _vp, _vp, _vp)
_PVP = ctypes.POINTER(_vp)
_PROTOTYPES: Final[dict[str, tuple[object, list[object]]]] = {
    "EC_KEY_OpenSSL": (_vp, []),
    "EC_KEY_METHOD_new": (_vp, [_vp]),
    "EC_KEY_METHOD_get_sign": (None, [_vp, _PVP, _PVP, _PVP]),
    "EC_KEY_METHOD_set_sign": (None, [_vp, _vp, _vp, _vp]),
    "d2i_EC_PUBKEY": (_vp, [_vp, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]),
    "EC_KEY_set_method": (ctypes.c_int, [_vp, _vp]),
    "EC_KEY_get0_group": (_vp, [_vp]),
    "EC_GROUP_get_curve_name": (ctypes.c_int, [_vp]),
    "EC_KEY_free": (None, [_vp]),
    "EVP_PKEY_new": (_vp, []),
    "EVP_PKEY_set1_EC_KEY": (ctypes.c_int, [_vp, _vp]),
    "EVP_PKEY_free": (None, [_vp]),
    "ECDSA_SIG_new": (_vp, []),
    "ECDSA_SIG_set0": (ctypes.c_int, [_vp, _vp, _vp]),
    "ECDSA_SIG_free": (None, [_vp]),
    "BN_bin2bn": (_vp, [ctypes.c_char_p, ctypes.c_int, _vp]),
    "BN_free": (None, [_vp]),
    "SSL_CTX_get_options": (ctypes.c_uint64, [_vp]),
    "SSL_CTX_get_verify_mode": (ctypes.c_int, [_vp]),
    "SSL_CTX_use_certificate_chain_file": (ctypes.c_int, [_vp, ctypes.c_char_p]),
    "SSL_CTX_use_PrivateKey": (ctypes.c_int, [_vp, _vp]),
    "SSL_CTX_ctrl": (ctypes.c_long, [_vp, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]),
    "ERR_get_error": (ctypes.c_ulong, []),
    "ERR_error_string_n": (None, [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t]),
    "ERR_clear_error": (None, []),
}  # fmt: skip


class _Bridge:
    """The process-wide part: the library, the method with our ``sign_sig``, and the signer of
    each live ``EC_KEY`` (by address)."""

    def __init__(self) -> None:
        import _ssl

        try:
            lib = ctypes.CDLL(_ssl.__file__)  # dlsym searches what _ssl links: its libssl
            for name, (restype, argtypes) in _PROTOTYPES.items():
                function = getattr(lib, name)
                function.restype = restype
                function.argtypes = argtypes
        except (OSError, AttributeError) as exc:
            raise TLSKeyError(
                f"this Python's OpenSSL ({ssl.OPENSSL_VERSION}) cannot sign TLS with a TPM "
                f"key ({exc}); log in with --key-store=software"
            ) from None
        self.lib = lib
        self.signers: dict[int, Signer] = {}
        self.callback = _SIGN_SIG(self._sign_sig)  # never freed: OpenSSL may call it late
        method = lib.EC_KEY_METHOD_new(lib.EC_KEY_OpenSSL())
        if not method:
            raise TLSKeyError("OpenSSL could not create an EC key method for the TPM key")
        sign, setup, sign_sig = _vp(), _vp(), _vp()
        lib.EC_KEY_METHOD_get_sign(
            method, ctypes.byref(sign), ctypes.byref(setup), ctypes.byref(sign_sig)
        )
        lib.EC_KEY_METHOD_set_sign(method, sign, setup, ctypes.cast(self.callback, _vp))
        self.method = method  # fmt: skip

    def _sign_sig(
        self,
        dgst: ctypes._Pointer[ctypes.c_ubyte],
        dlen: int,
        _kinv: int | None,
        _r: int | None,
        eckey: int | None,
    ) -> int | None:
        """OpenSSL's ``sign_sig``: an ``ECDSA_SIG *`` (OpenSSL frees it), NULL on failure."""
        lib = self.lib
        signer = self.signers.get(eckey or 0)
        if signer is None:
            return None
        try:
            digest = check_digest(ctypes.string_at(dgst, dlen))
            r, s = signer(digest)
            r_bytes, s_bytes = scalar_bytes(r), scalar_bytes(s)
        except Exception as exc:  # the handshake fails; say why, once, in one line
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            sys.stderr.write(f"bsh: the TPM did not sign the TLS handshake: {message}\n")
            return None
        sig = lib.ECDSA_SIG_new()
        bn_r = lib.BN_bin2bn(r_bytes, SCALAR_SIZE, None)
        bn_s = lib.BN_bin2bn(s_bytes, SCALAR_SIZE, None)
        if not sig or not bn_r or not bn_s or lib.ECDSA_SIG_set0(sig, bn_r, bn_s) != 1:
            lib.BN_free(bn_r)
            lib.BN_free(bn_s)
            lib.ECDSA_SIG_free(sig)
            return None
        return int(sig)

    def error(self) -> str:
        """The oldest OpenSSL error of this thread, then the queue cleared."""
        code = self.lib.ERR_get_error()
        text = ctypes.create_string_buffer(256)
        self.lib.ERR_error_string_n(code, text, len(text))
        self.lib.ERR_clear_error()
        return text.value.decode(errors="replace") if code else "unknown error"

    def new_pkey(self, public_key: ec.EllipticCurvePublicKey, signer: Signer) -> tuple[int, int]:
        """An ``EVP_PKEY`` of ``public_key`` that signs with ``signer``: (EVP_PKEY, EC_KEY)."""
        lib = self.lib
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        buffer = ctypes.create_string_buffer(der, len(der))
        cursor = ctypes.c_char_p(ctypes.addressof(buffer))
        eckey = lib.d2i_EC_PUBKEY(None, ctypes.byref(cursor), len(der))
        if not eckey:
            raise TLSKeyError(f"OpenSSL does not read the TPM key: {self.error()}")
        pkey = 0
        try:
            if lib.EC_GROUP_get_curve_name(lib.EC_KEY_get0_group(eckey)) != _NID_P256:
                raise TLSKeyError("the TPM key is not an ECDSA P-256 key")
            # the method before the EVP_PKEY: OpenSSL decides there that the key is foreign
            if lib.EC_KEY_set_method(eckey, self.method) != 1:
                raise TLSKeyError(f"OpenSSL refused the TPM key's method: {self.error()}")
            self.signers[int(eckey)] = signer
            pkey = lib.EVP_PKEY_new()
            if not pkey or lib.EVP_PKEY_set1_EC_KEY(pkey, eckey) != 1:
                raise TLSKeyError(f"OpenSSL could not wrap the TPM key: {self.error()}")
        except BaseException:
            self.signers.pop(int(eckey), None)
            lib.EVP_PKEY_free(pkey or None)
            lib.EC_KEY_free(eckey)
            raise
        lib.EC_KEY_free(eckey)  # the EVP_PKEY holds it now
        return int(pkey), int(eckey)

    def release(self, pkey: int, eckey: int) -> None:
        """Drop our reference (OpenSSL frees the key with its last one); no more signing."""
        self.signers.pop(eckey, None)
        self.lib.EVP_PKEY_free(pkey)


_bridge: _Bridge | None = None
_bridge_lock = threading.Lock()


def _get_bridge() -> _Bridge:
    global _bridge
    with _bridge_lock:
        if _bridge is None:
            _bridge = _Bridge()
        return _bridge


def ssl_ctx_pointer(ctx: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` of ``ctx`` (CPython's ``PySSLContext`` holds it right after the
    object header), checked against the context's options and verify mode.

    Raises:
        TLSKeyError: not CPython, or the pointer does not match the context.
    """
    import _ssl

    if sys.implementation.name != "cpython" or not isinstance(ctx, _ssl._SSLContext):
        raise TLSKeyError("a TPM-held TLS key needs CPython's ssl module; use --key-store=software")
    pointer = _vp.from_address(id(ctx) + object.__basicsize__).value
    lib = _get_bridge().lib
    if (
        not pointer
        or lib.SSL_CTX_get_options(pointer) != int(ctx.options)
        or lib.SSL_CTX_get_verify_mode(pointer) != verify_mode_flags(ctx.verify_mode)
    ):
        raise TLSKeyError(
            f"this Python ({sys.version.split()[0]}) lays out its ssl contexts differently: "
            "a TPM-held TLS key cannot be used; log in with --key-store=software"
        )
    return pointer


def install_key(
    ctx: ssl.SSLContext, cert_file: Path, public_key: ec.EllipticCurvePublicKey, signer: Signer
) -> None:
    """Present the certificate chain in ``cert_file`` with the key ``public_key`` whose
    signatures ``signer`` makes (the TPM), on the client context ``ctx``.

    Raises:
        TLSKeyError: the certificate does not load, or is not for ``public_key``.
    """
    pointer = ssl_ctx_pointer(ctx)
    bridge = _get_bridge()
    lib = bridge.lib
    lib.ERR_clear_error()
    if lib.SSL_CTX_use_certificate_chain_file(pointer, str(cert_file).encode()) != 1:
        raise TLSKeyError(f"cannot load the client certificate {cert_file}: {bridge.error()}")
    pkey, eckey = bridge.new_pkey(public_key, signer)
    # the context's reference keeps the key alive; ours is dropped with the context
    weakref.finalize(ctx, bridge.release, pkey, eckey)
    if lib.SSL_CTX_use_PrivateKey(pointer, pkey) != 1:
        raise TLSKeyError(
            f"the certificate {cert_file} is not for the TPM-held key ({bridge.error()}): "
            "run bsh login --key-store=tpm"
        )
    if lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_CLIENT_SIGALGS_LIST, 0, SIGALGS) != 1:
        raise TLSKeyError(f"OpenSSL refused the signature algorithms {SIGALGS.decode()}")
