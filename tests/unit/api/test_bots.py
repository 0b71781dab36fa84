from datetime import UTC, datetime

from bastion.api.bots import _renewed
from bastion.auth.issuer import HostCerts
from bastion.types.identity import Identity


def test_host_renewal_reply() -> None:
    ident = Identity(
        cluster="c", user="h1", kind="host", host_id="h1", expires=datetime(2030, 1, 1, tzinfo=UTC)
    )
    certs = HostCerts(ident, "ssh-cert", "pem", ["user-ca"], ["host-ca"], "host-pem", "user-pem")
    reply = _renewed(certs)
    assert reply.kind == "host" and reply.host_id == "h1" and reply.ssh_user_ca == ["user-ca"]
