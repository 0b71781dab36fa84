"""The OS side of a session, and THE one place where session output flows.

Layer: agent IO shell, protocol-agnostic. The SSH channel code (:mod:`.ssh_session`) feeds a
:class:`SessionStream` with what the client sends and what the process prints; the stream counts
bytes (for ``session.end``) and fans every chunk out to its :class:`SessionObserver` list before
it reaches the client. Recording (asciicast, issue 7), live session joining and idle tracking are
observers: adding one is ``stream.observers.append(recorder)``; no protocol code changes.

This module also decides *who* a session runs as and *with which environment*:

* :func:`lookup_login` resolves an OS login through the password database and refuses what the
  node cannot run (unknown login; another user while the node itself is not root).
* :func:`session_env` builds the environment from scratch (HOME, USER, LOGNAME, SHELL, PATH) and
  adds only allow-listed client variables (:func:`filter_env`; ARCHITECTURE.md section 6,
  principle 9): ``LD_PRELOAD`` and friends never reach a process.

Spawning lives in :mod:`.spawn`.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import structlog

from bastion.errors import AccessDenied

__all__ = [
    "ENV_ALLOW",
    "LoginUser",
    "SessionMeta",
    "SessionObserver",
    "SessionStream",
    "filter_env",
    "lookup_login",
    "session_env",
]

log = structlog.get_logger(__name__)

ENV_ALLOW: frozenset[str] = frozenset({"LANG", "LANGUAGE", "TERM", "COLORTERM", "TZ"})
"""Client variables a session may receive, besides every ``LC_*`` (OpenSSH's ``AcceptEnv``)."""
_LC_NAME = re.compile(r"^LC_[A-Z_]{1,32}$")
_MAX_ENV_VALUE = 1024
_USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
_ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def filter_env(client_env: Mapping[str, str]) -> dict[str, str]:
    """Keep only allow-listed client variables.

    Args:
        client_env: what the client sent (``env`` channel requests).

    Returns:
        ``LANG``, ``LANGUAGE``, ``TERM``, ``COLORTERM``, ``TZ`` and ``LC_*`` whose values are
        short and free of NUL bytes; everything else (``LD_*``, ``PATH``, ``BASH_ENV``, ...) is
        dropped.
    """
    out: dict[str, str] = {}
    for name, value in client_env.items():
        if name not in ENV_ALLOW and not _LC_NAME.match(name):
            continue
        if "\0" in value or len(value) > _MAX_ENV_VALUE:
            continue
        out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class LoginUser:
    """An OS account a session runs as."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str
    groups: tuple[int, ...] = ()
    """Supplementary groups (from the group database), applied when the node runs as root."""

    @property
    def needs_switch(self) -> bool:
        """True when spawning must change uid/gid (the node runs as someone else)."""
        return self.uid != os.geteuid()


def _supplementary_groups(name: str, gid: int) -> tuple[int, ...]:
    try:
        return tuple(sorted(set(os.getgrouplist(name, gid))))
    except OSError:  # pragma: no cover - broken NSS; fall back to the primary group
        return (gid,)


def lookup_login(login: str, *, default_shell: str = "") -> LoginUser:
    """Resolve the OS account for ``login`` and check that this node may run it.

    Args:
        login: the requested login (already among the certificate principals).
        default_shell: the node's configured shell; empty means the account's own shell.

    Returns:
        The account.

    Raises:
        AccessDenied: the login does not exist here, or the node is not root and the login is
            not the node's own user. The message is meant for the user's terminal.
    """
    try:
        entry = pwd.getpwnam(login)
    except KeyError:
        raise AccessDenied(f'login "{login}" does not exist on this node') from None
    if entry.pw_uid != os.geteuid() and os.geteuid() != 0:
        own = pwd.getpwuid(os.geteuid()).pw_name
        raise AccessDenied(
            f'this node runs as "{own}" (not root), so it can only start sessions as "{own}", '
            f'not as "{login}"'
        )
    shell = default_shell or entry.pw_shell or "/bin/sh"
    return LoginUser(
        name=entry.pw_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        home=entry.pw_dir or "/",
        shell=shell,
        groups=_supplementary_groups(entry.pw_name, entry.pw_gid),
    )


def group_name(gid: int) -> str:
    """The group's name, or the number when the group database does not know it."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def session_env(
    user: LoginUser,
    client_env: Mapping[str, str],
    *,
    term: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a session process, built from scratch.

    Args:
        user: the account the session runs as.
        client_env: variables the client sent; filtered with :func:`filter_env`.
        term: the PTY's terminal type (overrides a client ``TERM``); None without a PTY.
        extra: variables the node sets itself (``SSH_AUTH_SOCK``, ``SSH_CONNECTION``, ...);
            they win over client values.

    Returns:
        The environment: HOME, USER, LOGNAME, SHELL, PATH, then filtered client variables, then
        ``extra``.
    """
    env = {
        "HOME": user.home,
        "USER": user.name,
        "LOGNAME": user.name,
        "SHELL": user.shell,
        "PATH": _ROOT_PATH if user.uid == 0 else _USER_PATH,
    }
    env.update(filter_env(client_env))
    if term:
        env["TERM"] = term
    env.update(extra or {})
    return env


@dataclass(slots=True)
class SessionMeta:
    """What a session is; observers read it at start and end."""

    session_id: str
    user: str
    """The Bastion user (from the certificate identity)."""
    login: str
    node: str
    remote_addr: str
    kind: str
    """``shell``, ``exec`` or ``subsystem``."""
    command: str = ""
    """The exec command or subsystem name."""
    pty: bool = False
    term: str = ""
    cols: int = 80
    rows: int = 24
    started: datetime | None = None
    ended: datetime | None = None
    exit_code: int | None = None
    exit_signal: str = ""
    bytes_in: int = 0
    """Bytes received from the client (input to the process)."""
    bytes_out: int = 0
    """Bytes sent to the client (stdout and stderr of the process)."""
    participants: list[str] = field(default_factory=list)
    record: bool = False
    """The roles ask for a recording (``record_session``); recorders decide what is interactive."""
    record_input: bool = False
    """The roles ask for input to be recorded too (``record_input``)."""


class SessionObserver(Protocol):
    """Something that watches a session: a recorder, a live viewer, an idle tracker.

    The data callbacks are synchronous and run in the data path: they must be quick and never
    block (buffer, then write from a task). ``on_start`` and ``on_end`` are awaited once each;
    ``on_end`` may return fields for the ``session.end`` event (a recorder returns its SHA-256).
    An observer that raises is logged and dropped; it never breaks the session.
    """

    async def on_start(self, meta: SessionMeta) -> None: ...

    def on_output(self, data: bytes) -> None: ...

    def on_input(self, data: bytes) -> None: ...

    def on_resize(self, cols: int, rows: int) -> None: ...

    async def on_end(self, meta: SessionMeta) -> Mapping[str, object] | None: ...


OutputSink = Callable[[bytes, bool], None]
"""Delivers output to the client: ``(data, is_stderr)``."""


class SessionStream:
    """The single flow point of one session's bytes: counts them and feeds the observers.

    Args:
        meta: the session; its byte counters and terminal size are kept current here.
        sink: delivers output to the client (the SSH channel).
        observers: initial observers; more can be appended to :attr:`observers` before start.
    """

    def __init__(
        self,
        meta: SessionMeta,
        sink: OutputSink,
        observers: list[SessionObserver] | None = None,
    ) -> None:
        self.meta = meta
        self.observers: list[SessionObserver] = list(observers or [])
        self._sink = sink

    def _drop(self, observer: SessionObserver, exc: BaseException) -> None:
        log.warning("session observer failed", observer=type(observer).__name__, error=str(exc))
        if observer in self.observers:
            self.observers.remove(observer)

    async def start(self) -> None:
        """Tell every observer the session started."""
        for observer in list(self.observers):
            try:
                await observer.on_start(self.meta)
            except Exception as exc:  # an observer must not break a session
                self._drop(observer, exc)

    def output(self, data: bytes, *, stderr: bool = False) -> None:
        """Process output (or a node message) on its way to the client."""
        if not data:
            return
        self.meta.bytes_out += len(data)
        for observer in list(self.observers):
            try:
                observer.on_output(data)
            except Exception as exc:
                self._drop(observer, exc)
        self._sink(data, stderr)

    def input(self, data: bytes) -> None:
        """Client input on its way to the process."""
        self.meta.bytes_in += len(data)
        for observer in list(self.observers):
            try:
                observer.on_input(data)
            except Exception as exc:
                self._drop(observer, exc)

    def resize(self, cols: int, rows: int) -> None:
        """The client's terminal changed size."""
        self.meta.cols, self.meta.rows = cols, rows
        for observer in list(self.observers):
            try:
                observer.on_resize(cols, rows)
            except Exception as exc:
                self._drop(observer, exc)

    async def end(self) -> dict[str, object]:
        """Tell every observer the session ended; returns their extra ``session.end`` fields."""
        fields: dict[str, object] = {}
        for observer in list(self.observers):
            try:
                extra = await observer.on_end(self.meta)
            except Exception as exc:
                self._drop(observer, exc)
                continue
            fields.update(extra or {})
        return fields
