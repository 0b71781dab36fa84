"""The active sessions page: rows (escaped; terminate only for moderators) and the proxy's
answer to the join the terminate action sends."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.errors import AccessDenied, NotFound
from bastion.protocols.sessionjoin import encode_frame
from bastion.types.meta import Metadata
from bastion.types.sessions import SessionTracker, SessionTrackerSpec
from bastion.web.admin_live import _Join, session_rows
from bastion.web.ssh_dial import check_reply

CTX: Any = SimpleNamespace(csrf="tok")


def _tracker(name: str, owner: str) -> SessionTracker:
    return SessionTracker(
        metadata=Metadata(name=name),
        spec=SessionTrackerSpec(node="web1", owner=owner, login="root"),
    )


def test_terminate_only_where_the_caller_may_moderate() -> None:
    html = session_rows(
        CTX, [(_tracker("s1", "<bob>"), ("observer", "moderator")), (_tracker("s2", "me"), ())]
    )
    assert html.count("Terminate session") == 1 and "/web/sessions/s1/terminate" in html
    assert "&lt;bob&gt;" in html and "<bob>" not in html
    assert 'value="tok"' in html
    assert "No live sessions" in session_rows(CTX, [])


def test_join_links_in_the_modes_the_caller_may_join() -> None:
    html = session_rows(
        CTX,
        [
            (_tracker("s1", "bob"), ("observer", "peer")),
            (_tracker("s2", "me"), ()),  # one's own session: no join
        ],
    )
    assert "/web/sessions/s1/join?mode=observer" in html
    assert "/web/sessions/s1/join?mode=peer" in html
    assert "mode=moderator" not in html and "Terminate session" not in html
    assert html.count("Join as") == 2


def test_the_proxys_refusal_is_its_error() -> None:
    check_reply(b'{"ok": true}')
    with pytest.raises(NotFound):
        check_reply(b'{"ok": false, "code": "not_found", "error": "session s1 not found"}')
    with pytest.raises(AccessDenied):
        check_reply(b'{"ok": false, "error": "no"}')


def test_join_protocol_reads_the_reply_then_the_end_frame() -> None:
    async def run() -> tuple[bytes, str]:
        proto = _Join()
        proto.data_received(b'{"ok": true}\n' + encode_frame("o", b"hi"))
        proto.data_received(encode_frame("e", b"terminated by bob"))
        return await proto.reply, await proto.done

    assert asyncio.run(run()) == (b'{"ok": true}', "terminated by bob")
