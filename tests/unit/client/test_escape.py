"""OpenSSH escape sequences of the built-in client's interactive sessions (pure)."""

from __future__ import annotations

from bastion.client.escape import Escape, EscapeScanner


def run(*chunks: bytes) -> list[bytes | Escape]:
    scanner = EscapeScanner()
    out: list[bytes | Escape] = []
    for chunk in chunks:
        out += scanner.feed(chunk)
    return out


def test_tilde_dot_at_the_start_disconnects_and_drops_what_follows() -> None:
    assert run(b"~.rest") == [Escape.DISCONNECT]
    assert run(b"ls\r~.") == [b"ls\r", Escape.DISCONNECT]
    assert run(b"ls\n", b"~", b".") == [b"ls\n", Escape.DISCONNECT]


def test_tilde_question_mark_shows_help_and_sends_nothing() -> None:
    assert run(b"\r~?") == [b"\r", Escape.HELP]
    assert run(b"~?~.") == [Escape.HELP, Escape.DISCONNECT]


def test_only_at_the_start_of_a_line() -> None:
    assert run(b"echo a~.b\r") == [b"echo a~.b\r"]
    assert run(b"x", b"~.") == [b"x", b"~."]


def test_double_tilde_sends_one_and_other_characters_pass() -> None:
    assert run(b"~~.") == [b"~."]
    assert run(b"~x") == [b"~x"]
    assert run(b"~", b"/home") == [b"~/home"]
