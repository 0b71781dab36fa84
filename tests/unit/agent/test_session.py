"""Env allow-list, login lookup and the session stream (the one place output flows)."""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping

import pytest

from bastion.agent.session import (
    LoginUser,
    SessionMeta,
    SessionStream,
    filter_env,
    lookup_login,
    session_env,
)
from bastion.errors import AccessDenied

ME = pwd.getpwuid(os.geteuid()).pw_name


def test_filter_env_allow_list() -> None:
    env = {
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "LC_TIME": "en_GB.UTF-8",
        "TERM": "xterm",
        "LD_PRELOAD": "/tmp/x.so",
        "LD_LIBRARY_PATH": "/tmp",
        "PATH": "/evil",
        "BASH_ENV": "/tmp/rc",
        "LC_lower": "x",
        "LANGUAGE": "a\0b",
        "TZ": "x" * 5000,
    }
    assert filter_env(env) == {
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "LC_TIME": "en_GB.UTF-8",
        "TERM": "xterm",
    }


def test_session_env_sets_identity_and_node_values_win() -> None:
    user = LoginUser("bob", 1000, 1000, "/home/bob", "/bin/bash")
    env = session_env(
        user,
        {"LANG": "C", "HOME": "/evil", "SSH_AUTH_SOCK": "/evil", "TERM": "vt100"},
        term="xterm-256color",
        extra={"SSH_AUTH_SOCK": "/tmp/agent"},
    )
    assert env["HOME"] == "/home/bob" and env["USER"] == env["LOGNAME"] == "bob"
    assert env["SHELL"] == "/bin/bash" and "/usr/bin" in env["PATH"]
    assert env["TERM"] == "xterm-256color" and env["LANG"] == "C"
    assert env["SSH_AUTH_SOCK"] == "/tmp/agent"
    root = LoginUser("root", 0, 0, "/root", "/bin/sh")
    assert "/usr/sbin" in session_env(root, {})["PATH"]


def test_lookup_current_user() -> None:
    user = lookup_login(ME)
    assert user.uid == os.geteuid() and not user.needs_switch
    assert user.shell and user.home
    assert lookup_login(ME, default_shell="/bin/sh").shell == "/bin/sh"


def test_lookup_unknown_login() -> None:
    with pytest.raises(AccessDenied, match="does not exist on this node"):
        lookup_login("nosuchuser-bastion")


def test_non_root_node_only_runs_its_own_user(monkeypatch: pytest.MonkeyPatch) -> None:
    other = next(e for e in pwd.getpwall() if e.pw_uid != os.geteuid())
    monkeypatch.setattr(os, "geteuid", lambda: 12345)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: pwd.struct_passwd(("svc",) + ("x",) * 6))
    with pytest.raises(AccessDenied, match='can only start sessions as "svc"'):
        lookup_login(other.pw_name)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    async def on_start(self, meta: SessionMeta) -> None:
        self.calls.append(("start", meta.session_id))

    def on_output(self, data: bytes) -> None:
        self.calls.append(("out", data))

    def on_input(self, data: bytes) -> None:
        self.calls.append(("in", data))

    def on_resize(self, cols: int, rows: int) -> None:
        self.calls.append(("resize", (cols, rows)))

    async def on_end(self, meta: SessionMeta) -> Mapping[str, object] | None:
        self.calls.append(("end", meta.bytes_out))
        return {"recording_sha256": "abc"}


class Broken(Recorder):
    def on_output(self, data: bytes) -> None:
        raise RuntimeError("disk full")


def _meta() -> SessionMeta:
    return SessionMeta("s1", "alice", "bob", "node1", "1.2.3.4:5", "shell", pty=True)


async def test_stream_fans_out_counts_and_collects_end_fields() -> None:
    sent: list[tuple[bytes, bool]] = []
    rec = Recorder()
    stream = SessionStream(_meta(), lambda d, e: sent.append((d, e)), [rec])
    await stream.start()
    stream.input(b"ls\n")
    stream.output(b"file\n")
    stream.output(b"oops\n", stderr=True)
    stream.output(b"")
    stream.resize(120, 40)
    fields = await stream.end()
    assert sent == [(b"file\n", False), (b"oops\n", True)]
    assert stream.meta.bytes_in == 3 and stream.meta.bytes_out == 10
    assert (stream.meta.cols, stream.meta.rows) == (120, 40)
    assert rec.calls == [
        ("start", "s1"),
        ("in", b"ls\n"),
        ("out", b"file\n"),
        ("out", b"oops\n"),
        ("resize", (120, 40)),
        ("end", 10),
    ]
    assert fields == {"recording_sha256": "abc"}


async def test_failing_observer_is_dropped_not_fatal() -> None:
    sent: list[bytes] = []
    broken, good = Broken(), Recorder()
    stream = SessionStream(_meta(), lambda d, e: sent.append(d))
    stream.observers += [broken, good]
    stream.output(b"a")
    stream.output(b"b")
    assert sent == [b"a", b"b"]
    assert stream.observers == [good]
