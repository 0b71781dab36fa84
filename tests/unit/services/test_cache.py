import pytest

from bastion.errors import ConnectionProblem, RemoteProtocolError
from bastion.services.cache import CacheState, ResourceCache, StoreRoleSource, apply
from bastion.testing import make_auth
from bastion.types import Metadata, Role
from bastion.types.codec import resource_to_dict


def put(name, logins=()):
    role = Role(metadata=Metadata(name=name))
    role.spec.allow.logins = list(logins)
    return {"type": "put", "kind": "role", "resource": resource_to_dict(role)}


def test_apply_sequence():
    state = CacheState()
    state = apply(state, put("a", ["x"]))
    state = apply(state, put("b"))
    assert not state.synced
    state = apply(state, {"type": "init"})
    state = apply(state, put("a", ["y"]))
    state = apply(state, {"type": "delete", "kind": "role", "name": "b"})
    state = apply(state, {"type": "ping"})
    assert state.synced
    assert list(state.resources["role"]) == ["a"]
    assert state.resources["role"]["a"].spec.allow.logins == ["y"]


@pytest.mark.parametrize("line", [{"type": "put"}, {"type": "zap", "kind": "role"}])
def test_bad_lines(line):
    with pytest.raises(RemoteProtocolError):
        apply(CacheState(), line)


async def test_cache_as_role_source():
    cache = ResourceCache()
    with pytest.raises(ConnectionProblem):
        await cache.get_roles(["a"])
    cache.apply(put("a"))
    cache.apply({"type": "init"})
    assert [r.name for r in await cache.get_roles(["a", "missing"])] == ["a"]
    cache.reset()
    assert not cache.state.synced and cache.items("role")


async def test_store_role_source():
    fx = await make_auth()
    source = StoreRoleSource(fx.auth.roles)
    assert [r.name for r in await source.get_roles(["access", "nope"])] == ["access"]
