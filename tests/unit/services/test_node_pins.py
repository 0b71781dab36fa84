"""Node pins: first sight wins, an admin confirms a change, deleting forgets."""

from __future__ import annotations

from bastion.backend.memory import MemoryBackend
from bastion.clock import FakeClock
from bastion.services.node_pins import NodePins


async def test_first_sight_wins_until_an_admin_confirms() -> None:
    pins = NodePins(MemoryBackend(FakeClock()))
    assert await pins.get("web1") is None
    assert await pins.pin("web1", "host-1") == "host-1"
    assert await pins.pin("web1", "host-2") == "host-1"  # a re-join does not move the pin
    await pins.confirm("web1", "host-2")
    assert await pins.pin("web1", "host-2") == "host-2"
    await pins.forget("web1")
    await pins.forget("web1")  # idempotent
    assert await pins.pin("web1", "host-3") == "host-3"
