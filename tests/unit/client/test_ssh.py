"""Pure parts of the bsh SSH client: forwards, destinations, selectors, prefixing, trust."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.client.profile import Profile
from bastion.client.ssh import (
    Forward,
    LinePrefixer,
    RemotePath,
    default_login,
    host_ca_keys,
    match_labels,
    parse_copy_path,
    parse_destination,
    parse_forward,
    parse_selector,
)
from bastion.errors import BadParameter, NotFound


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("8080:localhost:80", Forward("", 8080, "localhost", 80)),
        ("127.0.0.1:8080:db.internal:5432", Forward("127.0.0.1", 8080, "db.internal", 5432)),
        ("[::1]:8080:[fe80::1]:22", Forward("::1", 8080, "fe80::1", 22)),
        ("*:0:h:1", Forward("*", 0, "h", 1)),
    ],
)
def test_parse_forward(spec: str, expected: Forward) -> None:
    assert parse_forward(spec) == expected


@pytest.mark.parametrize("spec", ["80", "a:b", "x:80:h:22:1", "80:h:http", "70000:h:1", "80::22"])
def test_parse_forward_rejects(spec: str) -> None:
    with pytest.raises(BadParameter):
        parse_forward(spec)


def test_parse_destination() -> None:
    assert parse_destination("root@node1") == ("root", "node1")
    assert parse_destination("node1") == (None, "node1")
    assert parse_destination("a@b@node") == ("a@b", "node")
    for bad in ("@node", "root@", ""):
        with pytest.raises(BadParameter):
            parse_destination(bad)


def test_parse_selector() -> None:
    assert parse_selector("node1") is None
    assert parse_selector("env=staging") == {"env": "staging"}
    assert parse_selector("env=staging,team=web") == {"env": "staging", "team": "web"}
    for bad in ("=x", "env=a,team"):
        with pytest.raises(BadParameter):
            parse_selector(bad)


def test_match_labels_uses_static_and_command_labels() -> None:
    node = {
        "metadata": {"name": "n", "labels": {"env": "prod"}},
        "spec": {"cmd_labels": {"arch": {"command": ["uname", "-m"], "result": "x86_64\n"}}},
    }
    assert match_labels(node, {"env": "prod", "arch": "x86_64"})
    assert match_labels(node, {"env": "*"})
    assert not match_labels(node, {"env": "staging"})
    assert not match_labels(node, {"team": "*"})


def test_prefixer_handles_partial_lines() -> None:
    p = LinePrefixer(b"[n1] ")
    assert p.feed(b"hel") == b""
    assert p.feed(b"lo\nwor") == b"[n1] hello\n"
    assert p.feed(b"ld\n\nx") == b"[n1] world\n[n1] \n"
    assert p.flush() == b"[n1] x\n"
    assert p.flush() == b""


@given(st.lists(st.binary(max_size=20), max_size=10))
def test_prefixer_keeps_every_byte(chunks: list[bytes]) -> None:
    p = LinePrefixer(b"> ")
    out = b"".join(p.feed(c) for c in chunks) + p.flush()
    data = b"".join(chunks)
    expected_lines = data.split(b"\n")
    if expected_lines[-1] == b"":
        expected_lines.pop()
    assert out == b"".join(b"> " + line + b"\n" for line in expected_lines)


def test_parse_copy_path() -> None:
    assert parse_copy_path("/tmp/a:b") == "/tmp/a:b"
    assert parse_copy_path("local.txt") == "local.txt"
    assert parse_copy_path("./x:y") == "./x:y"
    assert parse_copy_path("node1:/etc/hosts") == RemotePath(None, "node1", "/etc/hosts")
    assert parse_copy_path("root@node1:") == RemotePath("root", "node1", ".")
    with pytest.raises(BadParameter):
        parse_copy_path(":x")


def _profile(tmp_path: Path, **kw: object) -> Profile:
    return Profile(name="c", proxy="p:1", user="u", cluster="c", dir=str(tmp_path), **kw)  # type: ignore[arg-type]


def test_default_login(tmp_path: Path) -> None:
    assert default_login(_profile(tmp_path, logins=["root", "u"])) == "root"
    assert default_login(_profile(tmp_path, logins=[]))


def test_host_ca_keys_from_known_hosts(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    pub = key.export_public_key().decode().strip()
    (tmp_path / "known_hosts").write_text(f"# comment\n@cert-authority *.c,c {pub}\nplain {pub}\n")
    keys = host_ca_keys(_profile(tmp_path))
    assert [k.public_data for k in keys] == [key.public_data]
    (tmp_path / "known_hosts").write_text(f"node {pub}\n")  # no CA line: nothing to trust
    with pytest.raises(NotFound, match="no host CA"):
        host_ca_keys(_profile(tmp_path))


def test_raw_terminal_keeps_type_ahead() -> None:
    """What the user typed before the session opened reaches the session (as with ssh)."""
    import os
    import pty
    import select
    import termios

    from bastion.client.ssh import _raw_terminal

    master, slave = pty.openpty()
    try:
        os.write(master, b"echo typed-ahead\n")
        before = termios.tcgetattr(slave)
        with _raw_terminal(slave):
            assert not termios.tcgetattr(slave)[3] & termios.ICANON
            assert select.select([slave], [], [], 2)[0], "type-ahead was discarded"
            assert os.read(slave, 100) == b"echo typed-ahead\n"
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)
