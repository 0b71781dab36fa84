import pytest

from bastion.errors import BadParameter
from bastion.types.codec import parse_resource
from bastion.types.trust import TrustedCluster, remote_user_name


def test_trusted_cluster_parses_and_names_root_users() -> None:
    doc = {
        "kind": "trusted_cluster",
        "metadata": {"name": "root.example"},
        "spec": {"proxy_addr": "root.example:3080", "role_map": [{"remote": "a", "local": ["b"]}]},
    }
    tc = parse_resource(doc)
    assert isinstance(tc, TrustedCluster) and tc.spec.enabled and tc.spec.status.root_cas is None
    assert remote_user_name("root.example", "alice") == "root.example/alice"
    with pytest.raises(BadParameter):
        parse_resource({**doc, "spec": {"proxy_addr": "x:1", "role_map": [{"remote": "("}]}})
