"""The device's TPM through tpm2-pytss: the endorsement key, an attestation key, credential
activation and signing.

Layer: client. The TPM is named by a TCTI string (``BSH_TPM_TCTI``; default ``device:/dev/tpmrm0``;
tests use ``swtpm:host=127.0.0.1,port=N``, one software TPM per simulated machine).

The attestation key (AK) is a restricted ECC P-256 signing *primary* key of the owner
hierarchy, derived from the TPM's owner seed and a random ``unique`` value the device keeps in its
state file: the same TPM re-derives the same key at every login, and any other TPM (a copied
``~/.bsh`` on another laptop) derives a different one, whose signatures do not verify. The EK is
the TCG default ECC P-256 endorsement key, or the TCG default RSA 2048 one when only that one has a
certificate in NV (most TPMs ship an RSA EK certificate; swtpm_setup writes RSA 2048 and ECC
P-384 ones): a cluster that verifies EK certificates against manufacturer CAs needs one.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager

from bastion.errors import BadParameter, ConnectionProblem

__all__ = ["DEFAULT_TCTI", "TCTI_ENV", "TPM", "tcti_from_env"]

TCTI_ENV = "BSH_TPM_TCTI"
DEFAULT_TCTI = "device:/dev/tpmrm0"


def tcti_from_env() -> str:
    return os.environ.get(TCTI_ENV, "") or DEFAULT_TCTI


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class TPM:
    """One TPM, opened per operation (ESAPI contexts are not kept across calls)."""

    def __init__(self, tcti: str) -> None:
        self.tcti = tcti

    @contextmanager
    def _esapi(self) -> Iterator[object]:
        os.environ.setdefault("TSS2_LOG", "all+NONE")  # errors are reported as ours
        try:
            from tpm2_pytss import ESAPI
        except ImportError as exc:  # libtss2 missing
            raise ConnectionProblem(f"tpm2-pytss is not usable here: {exc}") from None
        try:
            esapi = ESAPI(self.tcti)
        except Exception as exc:
            raise ConnectionProblem(
                f"cannot open the TPM at {self.tcti!r} ({exc}); set {TCTI_ENV} or use --software "
                "if your cluster allows software device keys"
            ) from None
        try:
            yield esapi
        finally:
            esapi.close()

    # ---- keys ------------------------------------------------------------------------------

    @staticmethod
    def _ak_template(unique: bytes) -> object:
        from tpm2_pytss import TPM2B_PUBLIC
        from tpm2_pytss.constants import TPM2_ALG, TPMA_OBJECT

        attrs = (
            TPMA_OBJECT.RESTRICTED
            | TPMA_OBJECT.SIGN_ENCRYPT
            | TPMA_OBJECT.FIXEDTPM
            | TPMA_OBJECT.FIXEDPARENT
            | TPMA_OBJECT.SENSITIVEDATAORIGIN
            | TPMA_OBJECT.USERWITHAUTH
        )
        template = TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes=attrs)
        template.publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG.NULL
        template.publicArea.unique.ecc.x = unique[:32]
        return template

    @staticmethod
    def _ek(esapi: object) -> tuple[object, object, str]:
        """(EK handle, EK TPM2B_PUBLIC, EK certificate PEM or "")."""
        from tpm2_pytss import TPM2B_SENSITIVE_CREATE
        from tpm2_pytss.constants import ESYS_TR
        from tpm2_pytss.utils import NoSuchIndex, create_ek_template

        def nv_read(index: int) -> bytes:
            try:
                handle = esapi.tr_from_tpmpublic(index)  # type: ignore[attr-defined]
                nv_public, _ = esapi.nv_read_public(handle)  # type: ignore[attr-defined]
                size = nv_public.nvPublic.dataSize
                data = b""
                while len(data) < size:
                    chunk = esapi.nv_read(handle, min(512, size - len(data)), len(data))  # type: ignore[attr-defined]
                    data += bytes(chunk)
                return data
            except Exception:
                raise NoSuchIndex(index) from None

        cert_der, template = create_ek_template("EK-ECC256", nv_read)
        if not cert_der:
            rsa_der, rsa_template = create_ek_template("EK-RSA2048", nv_read)
            if rsa_der:
                cert_der, template = rsa_der, rsa_template
        handle, public, _, _, _ = esapi.create_primary(  # type: ignore[attr-defined]
            TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT
        )
        pem = ""
        if cert_der:
            from cryptography import x509
            from cryptography.hazmat.primitives import serialization

            try:
                cert = x509.load_der_x509_certificate(bytes(cert_der).rstrip(b"\x00"))
                pem = cert.public_bytes(serialization.Encoding.PEM).decode()
            except ValueError:
                pem = ""
        return handle, public, pem

    def _ak(self, esapi: object, unique: bytes) -> tuple[object, object]:
        from tpm2_pytss import TPM2B_SENSITIVE_CREATE
        from tpm2_pytss.constants import ESYS_TR

        handle, public, _, _, _ = esapi.create_primary(  # type: ignore[attr-defined]
            TPM2B_SENSITIVE_CREATE(), self._ak_template(unique), ESYS_TR.OWNER
        )
        return handle, public

    # ---- operations ------------------------------------------------------------------------

    def enrollment_keys(self, unique: bytes) -> tuple[str, str, str]:
        """(EK public, EK certificate PEM or "", AK public): base64 marshalled TPM2B_PUBLICs."""
        with self._esapi() as esapi:
            ek, ek_public, cert = self._ek(esapi)
            ak, ak_public = self._ak(esapi, unique)
            esapi.flush_context(ek)  # type: ignore[attr-defined]
            esapi.flush_context(ak)  # type: ignore[attr-defined]
        return _b64(bytes(ek_public.marshal())), cert, _b64(bytes(ak_public.marshal()))  # type: ignore[attr-defined]

    def activate(self, unique: bytes, blob_b64: str, secret_b64: str) -> bytes:
        """TPM2_ActivateCredential: the secret auth wrapped for (EK, AK); fails on another TPM."""
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
        from tpm2_pytss.types import TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT, TPMT_SYM_DEF

        try:
            blob, _ = TPM2B_ID_OBJECT.unmarshal(base64.b64decode(blob_b64))
            enc, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(base64.b64decode(secret_b64))
        except Exception:
            raise BadParameter("the server sent a malformed credential challenge") from None
        with self._esapi() as esapi:
            ek, _, _ = self._ek(esapi)
            ak, _ = self._ak(esapi, unique)
            session = esapi.start_auth_session(  # type: ignore[attr-defined]
                ESYS_TR.NONE,
                ESYS_TR.NONE,
                TPM2_SE.POLICY,
                TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                TPM2_ALG.SHA256,
            )
            try:
                esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)  # type: ignore[attr-defined]
                secret = esapi.activate_credential(  # type: ignore[attr-defined]
                    ak, ek, blob, enc, session1=ESYS_TR.PASSWORD, session2=session
                )
            except Exception as exc:
                raise BadParameter(f"TPM credential activation failed: {exc}") from None
            finally:
                esapi.flush_context(session)  # type: ignore[attr-defined]
                esapi.flush_context(ek)  # type: ignore[attr-defined]
                esapi.flush_context(ak)  # type: ignore[attr-defined]
        return bytes(secret)

    def sign(self, unique: bytes, message: bytes) -> str:
        """Sign ``message`` with the AK: TPM2_Hash (the ticket a restricted key needs for data
        the TPM did not generate) then TPM2_Sign, ECDSA/SHA-256. Returns base64 TPMT_SIGNATURE."""
        with self._esapi() as esapi:
            ak, _ = self._ak(esapi, unique)
            try:
                return self._sign_loaded(esapi, ak, message)
            finally:
                esapi.flush_context(ak)  # type: ignore[attr-defined]

    @staticmethod
    def _sign_loaded(esapi: object, key: object, message: bytes) -> str:
        from tpm2_pytss import TPMT_SIG_SCHEME
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG

        digest, ticket = esapi.hash(message, TPM2_ALG.SHA256, ESYS_TR.OWNER)  # type: ignore[attr-defined]
        scheme = TPMT_SIG_SCHEME(
            scheme=TPM2_ALG.ECDSA, details={"any": {"hashAlg": TPM2_ALG.SHA256}}
        )
        signature = esapi.sign(key, digest, scheme, ticket)  # type: ignore[attr-defined]
        return _b64(bytes(signature.marshal()))
