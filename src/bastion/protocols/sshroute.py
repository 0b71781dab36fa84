"""The ``bastion-ssh/1`` route line: the one request line a client sends after the TLS handshake,
the proxy's one-line reply, and which node a request names.

Layer: ``protocols`` (pure; stdlib only at run time, because ``bsh proxy ssh``'s fast path
imports it). The proxy's IO shell is :mod:`bastion.proxy.ssh_route`; the clients are
:mod:`bastion.client.proxy_conn` and :mod:`bastion.cli.proxy_fast`::

    client -> proxy   {"node": "web1", "login": "root", "port": 22}\\n     (one line, <= 4 KiB)
    proxy  -> client  {"ok": true}\\n  |  {"ok": false, "error": "..."}\\n
    then raw bytes both ways (the SSH connection is end to end between the user and the node)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.errors import BadParameter

if TYPE_CHECKING:
    from bastion.types.inventory import Node

__all__ = [
    "MAX_REQUEST_LINE",
    "PREFERRED_CIPHERS",
    "SSHRequest",
    "encode_join_request",
    "encode_reply",
    "encode_request",
    "find_node",
    "parse_request",
]

PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
"""OpenSSH's own ciphers with AES-GCM first (OpenSSH and asyncssh put chacha20-poly1305 first):
the built-in node (asyncssh) decrypts AES-GCM in half the time of chacha20-poly1305, and the node
is the slowest stage of a bulk transfer (issue 12). Every client we start offers this order:
OpenSSH through ``Ciphers`` (bsh config, the hand-off), asyncssh through ``encryption_algs``."""

MAX_REQUEST_LINE = 4096
"""Longest request line (newline included) a client may send."""


@dataclass(frozen=True, slots=True)
class SSHRequest:
    node: str
    login: str
    port: int = 22
    join: str = ""
    """A live session id: join it (``mode``) instead of logging in (session join)."""
    mode: str = ""


def encode_request(node: str, login: str, port: int) -> bytes:
    """The request line, newline included."""
    return json.dumps({"node": node, "login": login, "port": port}).encode() + b"\n"


def parse_request(line: bytes) -> SSHRequest:
    """Parse the request line (without its newline).

    Raises:
        BadParameter: not a JSON object with string ``node`` and ``login`` and int ``port``.
    """
    try:
        data = json.loads(line)
    except ValueError:
        raise BadParameter("the request line is not JSON") from None
    if not isinstance(data, dict):
        raise BadParameter("the request must be a JSON object")
    if "join" in data:
        return _parse_join(data)
    node, login, port = data.get("node"), data.get("login"), data.get("port", 22)
    if not isinstance(node, str) or not node or len(node) > 253:
        raise BadParameter('"node" must be a non-empty string')
    if not isinstance(login, str) or not login or len(login) > 64:
        raise BadParameter('"login" must be a non-empty string')
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadParameter('"port" must be an integer 1..65535')
    return SSHRequest(node, login, port)


JOIN_MODES = ("observer", "moderator", "peer")


def encode_join_request(node: str, session_id: str, mode: str) -> bytes:
    """The request line to join a live session on ``node`` (newline included)."""
    return json.dumps({"node": node, "join": session_id, "mode": mode}).encode() + b"\n"


def _parse_join(data: dict[str, object]) -> SSHRequest:
    node, join, mode = data.get("node"), data.get("join"), data.get("mode")
    if not isinstance(node, str) or not node or len(node) > 253:
        raise BadParameter('"node" must be a non-empty string')
    if not isinstance(join, str) or not 1 <= len(join) <= 64:
        raise BadParameter('"join" must be a session id')
    if mode not in JOIN_MODES:
        raise BadParameter('"mode" must be observer, moderator or peer')
    assert isinstance(mode, str)
    return SSHRequest(node, "", 22, join, mode)


def encode_reply(error: str | None = None) -> bytes:
    """The proxy's reply line: ``{"ok": true}`` when ``error`` is None, else the refusal."""
    message: dict[str, object] = {"ok": True} if error is None else {"ok": False, "error": error}
    return json.dumps(message).encode() + b"\n"


def find_node(nodes: Sequence[Node], target: str, cluster: str) -> Node | None:
    """The node named ``target``: by name, ``name.CLUSTER`` or host id (case-insensitive).

    Returns:
        The first node whose name matches, else the first whose host id does, else None.
    """
    wanted = target.lower()
    suffix = "." + cluster.lower()
    short = wanted[: -len(suffix)] if cluster and wanted.endswith(suffix) else wanted
    for node in nodes:
        if node.metadata.name.lower() in (wanted, short):
            return node
    for node in nodes:
        if node.spec.host_id and node.spec.host_id.lower() == wanted:
            return node
    return None
