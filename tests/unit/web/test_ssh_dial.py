"""The web terminal's dial: the proxy's reply line and the order of proxies."""

from __future__ import annotations

import pytest

from bastion.errors import AccessDenied, ConnectionProblem
from bastion.web.ssh_dial import check_reply, new_key, proxy_candidates


def test_reply_ok_and_refusals() -> None:
    check_reply(b'{"ok": true}')
    with pytest.raises(AccessDenied, match="nope"):
        check_reply(b'{"ok": false, "error": "nope"}')
    with pytest.raises(ConnectionProblem):
        check_reply(b"garbage")


def test_known_proxy_first_and_host_header_never_chooses() -> None:
    assert proxy_candidates("b:1", ["a:1", "b:1"]) == ["b:1", "a:1"]
    assert proxy_candidates("evil:1", ["a:1"]) == ["a:1"]


def test_new_key_is_an_openssh_ed25519_key() -> None:
    key = new_key()
    assert key.public.startswith("ssh-ed25519 ") and b"PRIVATE KEY" in key.private_pem
