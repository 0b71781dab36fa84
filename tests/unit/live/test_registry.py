from datetime import UTC, datetime, timedelta

from bastion.live.registry import LiveConnection, LiveRegistry
from bastion.types.identity import Identity


def ident(user: str) -> Identity:
    return Identity(cluster="c", user=user, expires=datetime.now(UTC) + timedelta(hours=1))


async def test_register_find_terminate_remove():
    registry = LiveRegistry()
    ended: list[tuple[str, str]] = []

    def conn(user: str, target: str) -> LiveConnection:
        async def terminate(reason: str) -> None:
            ended.append((user, reason))

        return registry.add(
            LiveConnection(kind="ssh", identity=ident(user), target=target, terminate=terminate)
        )

    a = conn("alice", "web1")
    conn("bob", "web1")
    conn("alice", "db1")
    assert len(registry) == 3 and a.id
    matched = await registry.terminate_matching(lambda c: c.identity.user == "alice", "locked")
    assert {c.target for c in matched} == {"web1", "db1"}
    assert ended == [("alice", "locked"), ("alice", "locked")]
    registry.remove(a)
    assert len(registry) == 2
    assert [c.identity.user for c in registry.find(lambda c: c.target == "web1")] == ["bob"]
