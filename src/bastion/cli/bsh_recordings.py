"""``bsh`` recording commands: ``recordings ls``, ``recordings download`` and ``play``.

Layer: client edge (CLI). The auth API decides what the caller may see (their own sessions, or
every session with ``list``/``read`` on ``session``) and audits every view and download; this
module renders, resolves a session id prefix, and paces playback with
:func:`bastion.recording.player.schedule`. Registered on the ``bsh`` group by :func:`register`.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import click

from bastion.cli.common import handle_errors
from bastion.cli.identity import run_async
from bastion.cli.render import print_json, print_table
from bastion.client.api import AuthClient
from bastion.client.profile import Profile, ProfileStore
from bastion.client.proxy_conn import check_profile
from bastion.client.tls import profile_context
from bastion.contract.recordings import GET_RECORDING, LIST_RECORDINGS, FetchQuery
from bastion.errors import BadParameter, NotFound
from bastion.files import write_private_file
from bastion.protocols.alpn import ALPN_HTTP
from bastion.recording.asciicast import parse_cast
from bastion.recording.player import DEFAULT_IDLE_CAP, SEEK_STEP, Playback, PlayStep, schedule
from bastion.types.duration import parse_duration

__all__ = [
    "filter_recordings",
    "human_size",
    "parse_since",
    "key_actions",
    "play_interactive",
    "play_steps",
    "recording_rows",
    "resolve_session",
    "write_recording",
]


# ---- pure parts --------------------------------------------------------------------------------


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


def _duration(item: dict[str, Any]) -> str:
    try:
        seconds = (
            datetime.fromisoformat(item["ended"]) - datetime.fromisoformat(item["started"])
        ).total_seconds()
    except (KeyError, TypeError, ValueError):
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def recording_rows(items: Iterable[dict[str, Any]]) -> list[list[str]]:
    """Table rows: session, user, kind, login@node, started, duration, size (+ flags).

    A database session (kind ``db``, recorded by the proxy) shows ``db_user@database/db_name``."""
    rows = []
    for item in items:
        flags = [f for f, on in (("partial", not item.get("complete", True)),
                                 ("input", item.get("input_recorded"))) if on]  # fmt: skip
        started = str(item.get("started") or "-").replace("T", " ")[:19]
        kind = str(item.get("kind") or "shell")
        target = f"{item.get('login', '')}@{item.get('node', '')}"
        if kind == "db" and item.get("command"):
            target += f"/{item['command']}"
        rows.append(
            [
                str(item.get("session_id", "")),
                str(item.get("user", "")),
                kind,
                target,
                started,
                _duration(item),
                human_size(int(item.get("size") or 0)),
                ",".join(flags),
            ]
        )
    return rows


def filter_recordings(
    items: Iterable[dict[str, Any]],
    *,
    user: str = "",
    node: str = "",
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """Recordings of ``user`` on ``node`` started at or after ``since`` (empty: any)."""
    out = []
    for item in items:
        if user and item.get("user") != user:
            continue
        if node and item.get("node") != node:
            continue
        if since is not None:
            try:
                started = datetime.fromisoformat(str(item.get("started")))
            except ValueError:
                continue
            if started < since:
                continue
        out.append(item)
    return out


def parse_since(text: str, now: datetime) -> datetime | None:
    """``--since``: a duration back from ``now`` (``24h``) or an ISO 8601 time (naive = UTC).

    Raises:
        BadParameter: neither.
    """
    if not text:
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadParameter(f"--since {text!r}: use a duration (24h, 30m) or an ISO time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def resolve_session(prefix: str, items: Iterable[dict[str, Any]]) -> str:
    """The one session id starting with ``prefix``.

    Raises:
        NotFound: none matches. BadParameter: several match.
    """
    prefix = prefix.strip().lower()
    if not prefix:
        raise BadParameter("give a session id (bsh recordings ls lists them)")
    ids = sorted({str(i.get("session_id", "")) for i in items})
    if prefix in ids:
        return prefix
    found = [i for i in ids if i.startswith(prefix)]
    if not found:
        raise NotFound(f"no recording of session {prefix!r} that you may see (bsh recordings ls)")
    if len(found) > 1:
        raise BadParameter(f"{prefix!r} matches {len(found)} sessions; give more of the id")
    return found[0]


def play_steps(
    steps: Iterable[PlayStep], out: BinaryIO, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Write each output event after its delay (resizes are not replayed to the terminal)."""
    for step in steps:
        if step.delay > 0:
            sleep(step.delay)
        if step.event.code == "o":
            out.write(step.event.data.encode())
            out.flush()


_KEYS = {
    b"\x1b[D": "back",
    b"\x1bOD": "back",
    b"\x1b[C": "forward",
    b"\x1bOC": "forward",
    b" ": "pause",
    b"q": "quit",
    b"Q": "quit",
    b"\x03": "quit",
}


def key_actions(data: bytes) -> list[str]:
    """What the keys in one read ask of the player, in order: ``pause``, ``back``,
    ``forward`` or ``quit`` (a fast typist's two arrows arrive in one read); others are ignored."""
    actions: list[str] = []
    while data:
        for key, action in _KEYS.items():
            if data.startswith(key):
                actions.append(action)
                data = data[len(key) :]
                break
        else:
            data = data[3:] if data.startswith(b"\x1b[") else data[1:]
    return actions


# ---- IO --------------------------------------------------------------------------------------


def play_interactive(steps: list[PlayStep], fd_in: int, out: BinaryIO) -> None:
    """Play in a terminal: space pauses and resumes, left/right arrows seek 5 s, q quits.

    The terminal is in cbreak mode (keys arrive at once, unechoed) until playback ends."""
    import select
    import termios
    import tty

    player = Playback(steps)
    saved = termios.tcgetattr(fd_in)
    try:
        tty.setcbreak(fd_in)
        last = time.monotonic()
        while True:
            now = time.monotonic()
            chunk = player.elapse(now - last)
            last = now
            if chunk:
                out.write(chunk)
                out.flush()
            if player.done and not player.paused:
                return
            ready, _, _ = select.select([fd_in], [], [], player.wait())
            if not ready:
                continue
            for action in key_actions(os.read(fd_in, 64)):
                if action == "quit":
                    return
                if action == "pause":
                    player.toggle_pause()
                    continue
                chunk = player.seek(-SEEK_STEP if action == "back" else SEEK_STEP)
                if chunk:
                    out.write(chunk)
                    out.flush()
    finally:
        termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)


def _profile() -> Profile:
    profile = ProfileStore().load(None)
    check_profile(profile)
    return profile


def _client(profile: Profile) -> AuthClient:
    ctx = profile_context(profile.path, profile.name, [ALPN_HTTP])
    return AuthClient(profile.proxy, ctx)


async def _list(profile: Profile) -> list[dict[str, Any]]:
    async with _client(profile) as client:
        data = await client.send(LIST_RECORDINGS)
    return [i.model_dump() for i in data.items]


async def _fetch(profile: Profile, session: str, purpose: str) -> tuple[str, bytes]:
    if len(session) != 36:  # not a full id: resolve the prefix among what the caller may see
        session = resolve_session(session, await _list(profile))
    async with _client(profile) as client:
        data = await client.fetch(
            GET_RECORDING,
            path={"session_id": session},
            query=FetchQuery.model_validate({"purpose": purpose}),
        )
    return session, data


@click.group("recordings")
def recordings_group() -> None:
    """List and download session recordings (asciicast v2).

    \b
    Examples:
      bsh recordings ls --since 24h
      bsh recordings download 3f2a -o session.cast
    """


@recordings_group.command("ls")
@click.option("--user", default="", help="Only sessions of this user.")
@click.option("--node", default="", help="Only sessions on this node.")
@click.option("--since", default="", help="Only sessions started since (24h, or an ISO time).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def ls_command(user: str, node: str, since: str, fmt: str) -> None:
    """List the recordings you may see: your own sessions, or all with list on sessions.

    SSH sessions are kind shell; database sessions (kind db, their statements) show
    DB_USER@DATABASE/DB_NAME and play with bsh play as a timed list of statements.

    \b
    Examples:
      bsh recordings ls
      bsh recordings ls --user alice --node web1 --since 24h
    """
    after = parse_since(since, datetime.now(UTC))
    items = filter_recordings(run_async(_list(_profile())), user=user, node=node, since=after)
    if fmt == "json":
        print_json(items)
        return
    print_table(
        ("SESSION", "USER", "KIND", "LOGIN@NODE", "STARTED (UTC)", "DURATION", "SIZE", "FLAGS"),
        recording_rows(items),
        empty="No recordings.",
    )


def write_recording(path: Path, data: bytes) -> None:
    """Save downloaded bytes, mode 0600 and atomically (a recording holds what the session
    showed, and typed input when recorded: passwords at prompts, keys pasted); a path that
    cannot be written is a clear error naming it."""
    try:
        write_private_file(path, data, parents=False)
    except OSError as exc:
        raise BadParameter(f"cannot write {path}: {exc.strerror or exc}") from None


@recordings_group.command("download")
@click.argument("session")
@click.option(
    "-o",
    "--output",
    "output",
    default=None,
    help="File to write (default SESSION.cast; - for stdout).",
)
@handle_errors
def download_command(session: str, output: str | None) -> None:
    """Save a recording as an asciicast v2 file (asciinema play FILE plays it).

    \b
    Examples:
      bsh recordings download 3f2a
      bsh recordings download 3f2a -o - | asciinema play -
    """
    session_id, data = run_async(_fetch(_profile(), session, "download"))
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    path = Path(output or f"{session_id}.cast")
    write_recording(path, data)
    click.echo(
        f"Saved {session_id} to {path} ({human_size(len(data))}, "
        f"sha256 {hashlib.sha256(data).hexdigest()})",
        err=True,
    )


@click.command("play")
@click.argument("session")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Playback speed.")
@click.option(
    "--skip-idle",
    is_flag=True,
    help=f"Shorten pauses to at most --idle-limit seconds (default {DEFAULT_IDLE_CAP}).",
)
@click.option("--idle-limit", type=float, default=DEFAULT_IDLE_CAP, show_default=True)
@handle_errors
def play_command(session: str, speed: float, skip_idle: bool, idle_limit: float) -> None:
    """Play a session recording in this terminal with its real timing.

    In a terminal: space pauses and resumes, the left and right arrows seek 5 seconds back and
    forward, q quits. Piped, it replays the output with its timing.

    \b
    Examples:
      bsh play 3f2a
      bsh play 3f2a --speed 2 --skip-idle
    """
    _, data = run_async(_fetch(_profile(), session, "view"))
    cast = parse_cast(data)
    steps = list(schedule(cast.events, speed=speed, idle_cap=idle_limit if skip_idle else None))
    if sys.stdin.isatty() and sys.stdout.isatty():
        play_interactive(steps, sys.stdin.fileno(), sys.stdout.buffer)
    else:  # a pipe or a file: the plain timed replay
        play_steps(steps, sys.stdout.buffer)
