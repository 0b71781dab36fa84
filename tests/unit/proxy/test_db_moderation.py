"""Moderated database sessions in the proxy: the hold, joins, the statement fan-out, leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bastion.clock import FakeClock
from bastion.protocols.postgres import build_message, parse_error_response
from bastion.protocols.sessionjoin import DB_SESSIONS_HOST, Frame, FrameDecoder, encode_frame
from bastion.proxy.db_moderation import (
    DbModerationHub,
    ReadyHold,
    db_policy_sets,
    notice_response,
    waiting_message,
)
from bastion.tunnel.memory import memory_pair
from bastion.types.access import Role
from bastion.types.identity import Identity
from bastion.types.sessions import SessionTracker

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
INFO = {"db_service": "pg1", "db_user": "alice_db", "db_name": "postgres"}


def _role(name: str, spec: dict[str, Any]) -> Role:
    return Role.model_validate({"metadata": {"name": name}, "spec": spec})


ROLES = {
    "dba": _role(
        "dba",
        {
            "options": {
                "require_session_join": [
                    {
                        "name": "dual",
                        "kinds": ["db"],
                        "modes": ["moderator"],
                        "on_leave": "terminate",
                    },
                    {"name": "ssh-only", "kinds": ["ssh"]},
                ]
            }
        },
    ),  # fmt: skip
    "dev": _role("dev", {"options": {"require_session_join": [{"kinds": ["ssh"]}]}}),
    "mod": _role(
        "mod",
        {
            "allow": {
                "join_sessions": [
                    {"roles": ["dba"], "kinds": ["db"], "modes": ["moderator", "observer"]}
                ]
            }
        },
    ),  # fmt: skip
}


class Roles:
    async def get_roles(self, names: Sequence[str]) -> list[Role]:
        return [ROLES[n] for n in names if n in ROLES]


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def emit(self, event_type: str, *, outcome: str = "success", **fields: Any) -> None:
        self.events.append((event_type, {"outcome": outcome, **fields}))


class Trackers:
    def __init__(self) -> None:
        self.reported: list[SessionTracker] = []
        self.forgotten: list[str] = []

    async def report(self, tracker: SessionTracker) -> None:
        self.reported.append(tracker)

    async def forget(self, session_id: str) -> None:
        self.forgotten.append(session_id)


class Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.decoder = FrameDecoder()

    def data_received(self, data: bytes) -> None:
        self.frames.extend(self.decoder.feed(data))

    def of(self, kind: str) -> list[bytes]:
        return [f.payload for f in self.frames if f.type == kind]


def _who(user: str, *roles: str) -> Identity:
    return Identity(cluster="c", user=user, roles=roles, expires=EXPIRES)


def test_only_db_policies_moderate_database_sessions() -> None:
    assert [s.role for s in db_policy_sets([ROLES["dba"], ROLES["dev"]])] == ["dba"]
    assert db_policy_sets([ROLES["dev"]]) == ()


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def _join(hub: DbModerationHub, session_id: str, who: Identity, mode: str) -> Client:
    client = Client()
    header = {"session_id": session_id, "mode": mode, "identity": who.encode().decode(),
              "client_addr": "1.2.3.4:5"}  # fmt: skip
    hub.connect(header, lambda: client)
    await _settle()
    return client


async def test_held_until_a_moderator_joins_who_sees_statements_and_whose_leave_ends_it() -> None:
    audit, trackers = Audit(), Trackers()
    hub = DbModerationHub(Roles(), audit, FakeClock(), trackers)  # type: ignore[arg-type]
    terminated: list[str] = []

    async def terminate(reason: str) -> None:
        terminated.append(reason)

    assert await hub.open(_who("bob", "dev"), INFO, "r", terminate) is None
    session = await hub.open(_who("alice", "dba"), INFO, "1.1.1.1:1", terminate)
    assert session is not None
    db_end, _ = memory_pair("db client")
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    admitted = asyncio.ensure_future(session.admit(db_end, closed))
    await _settle()
    assert not admitted.done() and not db_end.is_reading()  # held: nothing is read
    [tracker] = trackers.reported[-1:]
    assert tracker.spec.kind == "db" and tracker.spec.host_id == DB_SESSIONS_HOST
    assert tracker.spec.state == "pending" and tracker.spec.waiting_for
    notice = session.pg_notice()
    assert notice[:1] == b"N"
    text = parse_error_response(notice[5:])["M"]
    assert "role dba: 1 more moderator" in text
    assert text.endswith(f"bsh join {session.session_id} --mode=moderator")

    stranger = await _join(hub, session.session_id, _who("eve", "dev"), "moderator")
    assert stranger.of("e") == [f"session {session.session_id} not found".encode()]
    watcher = await _join(hub, session.session_id, _who("olga", "mod"), "observer")
    assert not admitted.done()  # an observer does not count
    moderator = await _join(hub, session.session_id, _who("mo", "mod"), "moderator")
    assert await admitted is True and db_end.is_reading()
    session.on_statement("select 1")
    await _settle()
    for joiner in (watcher, moderator):
        assert joiner.of("o") == [b"alice_db@postgres=> select 1\r\n"]
    assert any(b"joined" in n for n in moderator.of("n"))

    # the observer's terminate is refused; the moderator leaving ends the session
    session.hub.tasks.spawn(session.moderator_terminate(session.joiners[0]), "t")
    await _settle()
    assert terminated == []
    await session.detach(session.joiners[-1], "left")
    assert terminated == ["moderator mo left the moderated session"]
    assert await session.end() == ["alice", "olga", "mo"]
    assert trackers.forgotten == [session.session_id]
    kinds = [(t, f["participant"], f["outcome"]) for t, f in audit.events]
    assert ("session.join", "eve", "failure") in kinds
    assert ("session.join", "mo", "success") in kinds and (
        "session.leave",
        "mo",
        "success",
    ) in kinds


async def test_a_moderator_terminates_and_a_client_that_leaves_first_is_not_admitted() -> None:
    hub = DbModerationHub(Roles(), Audit(), FakeClock(), Trackers())  # type: ignore[arg-type]
    terminated: list[str] = []

    async def terminate(reason: str) -> None:
        terminated.append(reason)

    session = await hub.open(_who("alice", "dba"), INFO, "r", terminate)
    assert session is not None
    db_end, _ = memory_pair("db client")
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    admitted = asyncio.ensure_future(session.admit(db_end, closed))
    await _settle()
    closed.set_result(None)  # psql gave up while waiting
    assert await admitted is False
    other = await hub.open(_who("alice", "dba"), INFO, "r", terminate)
    assert other is not None
    pending = asyncio.ensure_future(other.admit(memory_pair("c")[0], asyncio.Future()))
    moderator = await _join(hub, other.session_id, _who("mo", "mod"), "moderator")
    assert await pending is True
    assert moderator.of("n")
    far = other.joiners[0].transport
    far.get_protocol().data_received(encode_frame("t"))  # Ctrl-T in bsh join
    await _settle()
    assert terminated == ["terminated by moderator mo"]


# ---- the held PostgreSQL client's notice ----------------------------------------------------

STARTUP = (
    build_message(b"R", b"\x00\x00\x00\x00")  # AuthenticationOk
    + build_message(b"S", b"server_version\x0016\x00")
    + build_message(b"K", b"\x00\x00\x00\x07\x00\x00\x00\x09")
)
READY = build_message(b"Z", b"I")
AFTER = build_message(b"N", b"SNOTICE\x00Mlater\x00\x00")


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@given(
    st.lists(st.integers(0, 200), max_size=8),
    st.integers(0, 12),
    st.sampled_from([b"", notice_response("waiting")]),
)
def test_the_notice_goes_just_before_the_first_ready_for_query(
    cuts: list[int], release_after: int, notice: bytes
) -> None:
    """Whatever the chunking and whenever the decision comes, the client gets the server's
    bytes in order with the notice right before the first ReadyForQuery (and nothing after
    it before the decision)."""
    stream = STARTUP + READY + AFTER
    hold, out = ReadyHold(), b""
    chunks = _chunks(stream, cuts)
    for i, chunk in enumerate(chunks):
        if i == release_after:
            out += hold.release(notice)
        out += hold.feed(chunk)
        if i < release_after:
            assert READY not in out
    if release_after >= len(chunks):
        out += hold.release(notice)
    assert out == STARTUP + notice + READY + AFTER
    assert hold.feed(b"x") == b"x"


def test_an_error_during_startup_passes_and_drops_the_notice() -> None:
    hold = ReadyHold()
    error = build_message(b"E", b"SFATAL\x00Mno\x00\x00")
    assert hold.feed(error) == error and hold.done
    assert hold.release(notice_response("waiting")) == b""


def test_the_notice_names_who_must_join_and_the_command() -> None:
    text = waiting_message("s1", ["role dba: 1 more moderator"])
    assert text == (
        "this session waits for moderators to join (role dba: 1 more moderator): "
        "bsh join s1 --mode=moderator"
    )
    fields = parse_error_response(notice_response(text)[5:])
    assert fields == {"S": "NOTICE", "V": "NOTICE", "C": "00000", "M": text}
