from __future__ import annotations

import io
import stat
from datetime import UTC, datetime

import pytest

from bastion.cli.bsh_recordings import (
    filter_recordings,
    human_size,
    parse_since,
    play_steps,
    recording_rows,
    resolve_session,
    write_recording,
)
from bastion.errors import BadParameter, NotFound
from bastion.recording.asciicast import CastEvent
from bastion.recording.player import schedule

ITEMS = [
    {"session_id": "aaaa1111-0000-4000-8000-000000000000", "user": "alice", "login": "root",
     "node": "web1", "started": "2026-11-24T10:00:00+00:00", "ended": "2026-11-24T10:01:05+00:00",
     "size": 2048, "complete": True, "input_recorded": True},
    {"session_id": "aaaa2222-0000-4000-8000-000000000000", "user": "bob", "login": "bob",
     "node": "db1", "started": None, "size": 10, "complete": False},
]  # fmt: skip


def test_rows() -> None:
    assert recording_rows(ITEMS) == [
        [ITEMS[0]["session_id"], "alice", "shell", "root@web1", "2026-11-24 10:00:00", "1m05s",
         "2.0 KiB", "input"],
        [ITEMS[1]["session_id"], "bob", "shell", "bob@db1", "-", "-", "10 B", "partial"],
    ]  # fmt: skip
    db = {"session_id": "aaaa3333-0000-4000-8000-000000000000", "user": "carol",
          "kind": "db", "login": "app", "node": "pg1", "command": "shop", "size": 5}  # fmt: skip
    assert recording_rows([db])[0][2:4] == ["db", "app@pg1/shop"]
    assert human_size(3 * 1024**3) == "3.0 GiB"


def test_resolve_session_prefix() -> None:
    assert resolve_session("AAAA1", ITEMS) == ITEMS[0]["session_id"]
    assert resolve_session(str(ITEMS[1]["session_id"]), ITEMS) == ITEMS[1]["session_id"]
    with pytest.raises(BadParameter, match="matches 2"):
        resolve_session("aaaa", ITEMS)
    with pytest.raises(NotFound):
        resolve_session("ffff", ITEMS)
    with pytest.raises(BadParameter):
        resolve_session(" ", ITEMS)


def test_play_writes_output_after_each_delay() -> None:
    events = [CastEvent(0.5, "o", "a"), CastEvent(0.6, "i", "x"), CastEvent(3.0, "r", "90x20"),
              CastEvent(3.0, "o", "é")]  # fmt: skip
    out = io.BytesIO()
    slept: list[float] = []
    play_steps(schedule(events, speed=2), out, slept.append)
    assert out.getvalue() == "aé".encode()
    assert slept == [0.25, 1.25]


def test_filters() -> None:
    assert [i["user"] for i in filter_recordings(ITEMS, user="bob")] == ["bob"]
    assert [i["node"] for i in filter_recordings(ITEMS, node="web1")] == ["web1"]
    since = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    assert [i["user"] for i in filter_recordings(ITEMS, since=since)] == ["alice"]  # bob: no start
    later = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    assert filter_recordings(ITEMS, since=later) == []


def test_parse_since() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_since("", now) is None
    assert parse_since("2h", now) == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    assert parse_since("2026-11-24T08:00:00", now) == datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    with pytest.raises(BadParameter, match="--since"):
        parse_since("yesterday", now)


def test_write_recording_names_the_path_it_cannot_write(tmp_path) -> None:
    write_recording(tmp_path / "s.cast", b"{}\n")
    assert (tmp_path / "s.cast").read_bytes() == b"{}\n"
    assert stat.S_IMODE((tmp_path / "s.cast").stat().st_mode) == 0o600


def test_downloaded_recording_is_private_even_over_a_wider_file(tmp_path) -> None:
    # recordings hold what the session showed (and typed input when recorded)
    old = tmp_path / "s.cast"
    old.write_bytes(b"old")
    old.chmod(0o644)
    write_recording(old, b"{}\n")
    assert old.read_bytes() == b"{}\n" and stat.S_IMODE(old.stat().st_mode) == 0o600
    missing = tmp_path / "no-such-dir" / "s.cast"
    with pytest.raises(BadParameter, match=f"cannot write {missing}: No such file or directory"):
        write_recording(missing, b"{}\n")


def test_bad_idle_limit_names_the_option() -> None:
    with pytest.raises(BadParameter, match="--idle-limit must be a positive number"):
        list(schedule([CastEvent(0.5, "o", "x")], speed=1.0, idle_cap=-1.0))


def test_keys_of_the_interactive_player() -> None:
    from bastion.cli.bsh_recordings import key_actions

    assert key_actions(b" ") == ["pause"]
    assert key_actions(b"\x1b[D\x1bOD") == ["back", "back"]
    assert key_actions(b"\x1b[C\x1b[C") == ["forward", "forward"]  # two presses, one read
    assert key_actions(b"q") == key_actions(b"\x03") == ["quit"]
    assert key_actions(b"x\x1b[A ") == ["pause"]  # others (up arrow) are ignored
