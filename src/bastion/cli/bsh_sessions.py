"""``bsh sessions ls|kill`` and ``bsh join``: live sessions (docs/moderated-sessions.md).

Layer: client edge. ``ls`` reads :data:`bastion.contract.sessions.LIST_SESSIONS` (only sessions
you own or may join). ``join`` opens the proxy's SSH route with a join line
(:func:`bastion.protocols.sshroute.encode_join_request`) and speaks the frames of
:mod:`bastion.protocols.sessionjoin`: output to this terminal; keystrokes to the session (only a
peer's reach it); ``Ctrl-T`` asks to terminate it (moderators); ``Ctrl-]`` leaves. ``kill`` joins
as a moderator and terminates at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from typing import Any

import click

from bastion.cli.common import emit_json, handle_errors
from bastion.cli.identity import resolve_identity
from bastion.cli.render import print_table
from bastion.client.profile import ProfileStore
from bastion.client.proxy_conn import check_profile, open_ssh_route
from bastion.contract import sessions as s
from bastion.errors import ConnectionProblem
from bastion.protocols.sessionjoin import FrameDecoder, encode_frame
from bastion.protocols.sshroute import encode_join_request
from bastion.runtime import as_transport

__all__ = ["join_command", "sessions_group"]

CTRL_T = 0x14
CTRL_RBRACKET = 0x1D
CTRL_C = 0x03


def _session(session_id: str) -> s.SessionInfo:
    return resolve_identity(None, None).send(s.GET_SESSION, path={"session_id": session_id})


@click.group("sessions")
def sessions_group() -> None:
    """Live sessions you may see: yours and those you may join.

    \b
    Examples:
      bsh sessions ls
      bsh join SESSION_ID --mode=moderator
      bsh sessions kill SESSION_ID
    """


@sessions_group.command("ls")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def ls(fmt: str) -> None:
    """List live sessions (ID, owner, node, state, participants, how you may join).

    \b
    Examples:
      bsh sessions ls
      bsh sessions ls --format json
    """
    items = resolve_identity(None, None).send(s.LIST_SESSIONS).items
    if fmt == "json":
        emit_json([i.model_dump(mode="json") for i in items])
        return
    rows = [
        [
            i.id,
            i.owner,
            f"{i.login}@{i.node}",
            i.state + (f" ({'; '.join(i.waiting_for)})" if i.waiting_for else ""),
            ", ".join(f"{p.user}({p.mode})" for p in i.participants),
            "/".join(i.join_modes) or "-",
        ]
        for i in items
    ]
    print_table(
        ["ID", "Owner", "Target", "State", "Participants", "Join as"],
        rows,
        empty="No live sessions you may see.",
    )


@sessions_group.command("kill")
@click.argument("session_id")
@handle_errors
def kill(session_id: str) -> None:
    """Terminate a live session (moderators).

    \b
    Example:
      bsh sessions kill SESSION_ID
    """
    reason = asyncio.run(_join(_session(session_id), "moderator", terminate=True))
    click.echo(f"session {session_id}: {reason or 'terminated'}")


@click.command("join")
@click.argument("session_id")
@click.option(
    "--mode",
    type=click.Choice(["observer", "moderator", "peer"]),
    default="observer",
    show_default=True,
    help="observer: watch; peer: watch and type; moderator: watch, count for moderation, "
    "terminate with Ctrl-T.",
)
@handle_errors
def join_command(session_id: str, mode: str) -> None:
    """Join a live session. Ctrl-] leaves; Ctrl-T terminates it (moderators).

    \b
    Examples:
      bsh join SESSION_ID
      bsh join SESSION_ID --mode=moderator
    """
    info = _session(session_id)
    click.echo(
        f"bastion: joining {info.owner}'s session on {info.node} as {mode}; Ctrl-] leaves"
        + ("; Ctrl-T terminates" if mode == "moderator" else ""),
        err=True,
    )
    reason = asyncio.run(_join(info, mode))
    click.echo(f"\r\nbastion: {reason}\r", err=True)


class _JoinClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder()
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = as_transport(transport)

    def data_received(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            if frame.type == "o":
                sys.stdout.buffer.write(frame.payload)
                sys.stdout.buffer.flush()
            elif frame.type == "n":
                text = frame.payload.decode(errors="replace")
                sys.stderr.write(f"\r\nbastion: {text}\r\n")
                sys.stderr.flush()
            elif frame.type == "e" and not self.done.done():
                self.done.set_result(frame.payload.decode(errors="replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result("left the session")

    def send(self, kind: Any, payload: bytes = b"") -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(kind, payload))

    def leave(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _join(info: s.SessionInfo, mode: str, *, terminate: bool = False) -> str:
    profile = ProfileStore().load(None)
    check_profile(profile)
    node = info.host_id or info.node
    _, client = await open_ssh_route(
        profile, node, "", 22, _JoinClient, request=encode_join_request(node, info.id, mode)
    )
    if terminate:
        client.send("t")
        try:
            async with asyncio.timeout(15):
                return await client.done
        except TimeoutError:
            raise ConnectionProblem(f"session {info.id} did not end in 15 s") from None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, client.leave)
    fd = sys.stdin.fileno()
    raw = os.isatty(fd)
    saved = termios.tcgetattr(fd) if raw else None

    def on_stdin() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)  # input closed: keep watching
            return
        if raw and (CTRL_RBRACKET in data or (mode != "peer" and CTRL_C in data)):
            client.leave()
            return
        if raw and CTRL_T in data:
            client.send("t")
            data = data.replace(bytes([CTRL_T]), b"")
        if data:
            client.send("i", data)

    try:
        if raw:
            tty.setraw(fd)
        with contextlib.suppress(PermissionError, OSError):
            loop.add_reader(fd, on_stdin)
        return await client.done
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(fd)
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
