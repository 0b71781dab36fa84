"""The certificate authority: keys, OpenSSH and X.509 certificates, rotation, CA resources.

Layer: pure over ``cryptography``. Everything here takes keys, times and resources as arguments
and returns new values; storage, the API and the clock live in the auth service.

* :mod:`.keys` generates keys, derives ids and pins, and seals private keys at rest.
* :mod:`.sshcert` encodes, signs, parses and verifies OpenSSH certificates.
* :mod:`.x509` issues and verifies X.509 CA, user and host certificates.
* :mod:`.rotation` is the CA rotation transition table.
* :mod:`.krl` encodes and parses OpenSSH key revocation lists and signs them (SSHSIG).
* :mod:`.authority` builds CertAuthority resources and exports trust anchors.

Certificates of one purpose never verify under another purpose's CA, and a certificate is never
a CA (ARCHITECTURE.md section 6, principle 4).
"""

from bastion.ca.authority import (
    export_known_hosts,
    export_trust,
    new_cert_authority,
    new_keypair,
    signing_key,
    trusted_certificates,
    trusted_public_keys,
)
from bastion.ca.keys import (
    PrivateKey,
    PublicKey,
    algorithm_of,
    generate_private_key,
    key_id,
    load_or_create_kek,
    load_public_key,
    public_key_to_openssh,
    public_key_to_pem,
    seal_private_key,
    spki_pin,
    unseal_private_key,
)
from bastion.ca.krl import KRL, build_krl, parse_krl, sign_krl, verify_krl_signature
from bastion.ca.rotation import next_phase
from bastion.ca.sshcert import (
    SSHCertificate,
    identity_from_ssh_certificate,
    parse_ssh_certificate,
    sign_ssh_certificate,
    ssh_host_certificate,
    ssh_user_certificate,
    to_openssh_line,
    verify_ssh_certificate,
)
from bastion.ca.x509 import (
    identity_from_certificate,
    issue_host_certificate,
    issue_user_certificate,
    self_signed_ca,
    verify_certificate_chain,
)

__all__ = [
    "KRL",
    "PrivateKey",
    "PublicKey",
    "SSHCertificate",
    "algorithm_of",
    "build_krl",
    "export_known_hosts",
    "export_trust",
    "generate_private_key",
    "identity_from_certificate",
    "identity_from_ssh_certificate",
    "issue_host_certificate",
    "issue_user_certificate",
    "key_id",
    "load_or_create_kek",
    "load_public_key",
    "new_cert_authority",
    "new_keypair",
    "next_phase",
    "parse_krl",
    "parse_ssh_certificate",
    "public_key_to_openssh",
    "public_key_to_pem",
    "seal_private_key",
    "self_signed_ca",
    "sign_ssh_certificate",
    "sign_krl",
    "signing_key",
    "spki_pin",
    "ssh_host_certificate",
    "ssh_user_certificate",
    "to_openssh_line",
    "trusted_certificates",
    "trusted_public_keys",
    "unseal_private_key",
    "verify_certificate_chain",
    "verify_krl_signature",
    "verify_ssh_certificate",
]
