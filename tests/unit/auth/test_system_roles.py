from bastion.auth.system_roles import SYSTEM_ROLES, system_roles_for
from bastion.rbac.checker import RoleSet


def test_node_hosts_read_roles_and_heartbeat_but_cannot_touch_users():
    rs = RoleSet.from_roles(system_roles_for(("node",)), {})
    assert rs.check_rule("role", "read").allowed
    assert rs.check_rule("node", "update").allowed
    assert rs.check_rule("event", "create").allowed
    assert not rs.check_rule("user", "create").allowed
    assert not rs.check_rule("role", "update").allowed
    assert not rs.check_rule("cert_authority", "read").allowed
    assert rs.allowed_logins() == []


def test_unknown_join_roles_grant_nothing():
    assert system_roles_for(("wizard",)) == []
    assert all(r.name.startswith("system-") for r in SYSTEM_ROLES.values())
