"""One SSH session channel on the node: shell, exec or the sftp subsystem.

Layer: agent IO shell. asyncssh calls :class:`NodeSession` for channel requests (pty, env,
shell/exec/subsystem, window changes, signals, data); it checks the role options, resolves the OS
login, then runs the process through :mod:`.spawn` with the session's
:class:`~bastion.agent.session.SessionStream` between the process and the channel. Each session
is audited (``session.start``, ``exec``/``sftp``, ``session.end``, ``session.rejected``) and
registered in the live registry with a terminator that tells the user why and closes it.
The continuous checks of its roles (``client_idle_timeout``, ``disconnect_expired_cert``; see
:mod:`.continuous`) run as one timer task per session that terminates it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import asyncssh
import structlog

from bastion.agent.continuous import ActivityTracker, ContinuousPolicy, watch_session
from bastion.agent.deps import NodeDeps
from bastion.agent.session import (
    LoginUser,
    SessionMeta,
    SessionObserver,
    SessionStream,
    lookup_login,
    session_env,
)
from bastion.agent.session_join import SessionHub, SharedSession
from bastion.agent.spawn import ExitStatus, PtySize, SessionProcess
from bastion.agent.ssh_auth import Authorized
from bastion.errors import AccessDenied, LimitExceeded
from bastion.live.registry import LiveConnection
from bastion.tasks import TaskSet

__all__ = ["SFTP_SERVER_PATHS", "NodeSession", "ObserverFactory", "SessionContext"]

log = structlog.get_logger(__name__)

SFTP_SERVER_PATHS: tuple[str, ...] = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/sftp-server",
)

"""Where distributions install OpenSSH's sftp-server; the first that exists is used."""
_MAX_EARLY_INPUT = 256 * 1024
TERMINATE_GRACE = 0.5
"""Seconds a terminated session's processes get after SIGHUP before SIGKILL."""

ObserverFactory = Callable[[SessionMeta], SessionObserver | None]
"""Builds an observer for a new session (None: not for this one, e.g. exec without PTY)."""


@dataclass(slots=True)
class SessionContext:
    """What every session on one SSH connection shares."""

    deps: NodeDeps
    conn: asyncssh.SSHServerConnection
    authorized: Authorized
    remote_addr: str
    tasks: TaskSet
    observer_factories: Sequence[ObserverFactory] = ()
    sessions: set[NodeSession] = field(default_factory=set)
    hub: SessionHub | None = None
    """The node's shared sessions (session join, moderation); None: sessions are not shared."""

    async def audit(self, event_type: str, outcome: str = "success", **fields: object) -> None:
        identity = self.authorized.identity
        await self.deps.audit.emit(
            event_type,
            outcome=outcome,
            user=identity.user,
            login=self.authorized.login,
            target=self.deps.config.name,
            remote_addr=self.remote_addr,
            device_id=identity.device_id,
            **fields,
        )


def find_sftp_server() -> str | None:
    """The system ``sftp-server`` binary, or None when OpenSSH's is not installed."""
    for path in SFTP_SERVER_PATHS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


class NodeSession(asyncssh.SSHServerSession[bytes]):
    """The node side of one ``session`` channel."""

    def __init__(self, ctx: SessionContext) -> None:
        self._ctx = ctx
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._pty: PtySize | None = None
        self._term = ""
        self._kind = ""
        self._command = ""
        self._early: list[bytes] = []
        self._early_eof = False
        self._proc: SessionProcess | None = None
        self._input: list[bytes] = []  # client input of this event-loop pass, not yet written
        self._closing = False
        self._watch_fired = False
        self._shared: SharedSession | None = None
        self.session_id = str(uuid.uuid4())

    # -- requests before the session starts --------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan
        self._ctx.sessions.add(self)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any
    ) -> bool:
        if not self._ctx.authorized.roles.options().permit_pty:
            self._ctx.tasks.spawn(
                self._ctx.audit(
                    "session.rejected",
                    outcome="failure",
                    session_id=self.session_id,
                    reason="PTY not permitted by the user's roles",
                ),
                name="audit-pty-rejected",
            )
            return False
        self._term = term_type
        self._pty = PtySize(*term_size)
        return True

    def shell_requested(self) -> bool:
        self._kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self._kind, self._command = "exec", command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self._kind, self._command = "subsystem", subsystem
        return True

    def session_started(self) -> None:
        self._ctx.tasks.spawn(self._run(), name=f"ssh-session-{self.session_id}")

    # -- data and events while running -------------------------------------------------------

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._shared is not None and not self._shared.owner_may_type:
            return  # a moderated session waiting for (or paused without) its moderators
        if self._proc is not None:
            self._queue_input(data)
            return
        self._early.append(data)
        if sum(map(len, self._early)) > _MAX_EARLY_INPUT and self._chan is not None:
            self._chan.pause_reading()  # resumed once the process runs

    def eof_received(self) -> bool:
        if self._proc is not None:
            self._flush_input()
            self._proc.write_eof()
        else:
            self._early_eof = True
        return True  # keep the channel open: output and exit status still have to go out

    def signal_received(self, signal: str) -> None:
        if self._proc is not None:
            self._flush_input()  # what was typed before Ctrl-C reaches the process first
            self._proc.send_signal(signal)

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._pty = PtySize(width, height, pixwidth, pixheight)
        if self._proc is not None:
            self._proc.resize(self._pty)

    def pause_writing(self) -> None:
        if self._proc is not None:
            self._proc.pause_output()

    def resume_writing(self) -> None:
        if self._proc is not None:
            self._proc.resume_output()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._ctx.sessions.discard(self)
        if self._shared is not None:
            self._shared.owner_gone()
        if self._proc is not None:
            self._ctx.tasks.spawn(self._proc.kill(TERMINATE_GRACE), name="ssh-session-kill")

    # -- the session's life --------------------------------------------------------------------

    def _sink(self, data: bytes, stderr: bool) -> None:
        if self._chan is None or self._closing:
            return
        with contextlib.suppress(BrokenPipeError):
            if stderr:
                self._chan.write_stderr(data)
            else:
                self._chan.write(data)

    def _flow(self, paused: bool) -> None:
        if self._chan is not None and not self._closing:
            (self._chan.pause_reading if paused else self._chan.resume_reading)()

    async def _refuse(self, message: str, reason: str, status: int = 1) -> None:
        self._sink(f"bastion: {message}\r\n".encode(), True)
        await self._ctx.audit(
            "session.rejected", outcome="failure", session_id=self.session_id, reason=reason
        )
        self._exit(ExitStatus(status))

    def _exit(self, status: ExitStatus) -> None:
        chan = self._chan
        if chan is None or self._closing:
            return
        with contextlib.suppress(OSError, asyncssh.Error):
            if status.code is None:
                chan.exit_with_signal(status.signal)
            else:
                chan.exit(status.code)

    def _argv(self, user: LoginUser) -> tuple[list[str], str | None] | None:
        if self._kind == "subsystem":
            path = find_sftp_server()
            return None if path is None else ([path], None)
        if self._kind == "exec":
            return [user.shell, "-c", self._command], None
        return ["-" + os.path.basename(user.shell)], user.shell  # a login shell, as sshd does

    def _extra_env(self, user: LoginUser) -> dict[str, str]:
        assert self._chan is not None
        extra = {"BASTION_SESSION_ID": self.session_id}
        peer = self._chan.get_extra_info("peername")
        local = self._chan.get_extra_info("sockname")
        if peer and local:
            extra["SSH_CLIENT"] = f"{peer[0]} {peer[1]} {local[1]}"
            extra["SSH_CONNECTION"] = f"{peer[0]} {peer[1]} {local[0]} {local[1]}"
        agent_path = self._chan.get_agent_path()
        if agent_path:
            if user.needs_switch:  # asyncssh made it 0700 for us; hand it to the login user
                for path in (os.path.dirname(agent_path), agent_path):
                    os.chown(path, user.uid, user.gid, follow_symlinks=False)
            extra["SSH_AUTH_SOCK"] = agent_path
        return extra

    async def _run(self) -> None:
        ctx, chan = self._ctx, self._chan
        assert chan is not None
        try:
            user = lookup_login(ctx.authorized.login, default_shell=ctx.deps.config.shell)
        except AccessDenied as exc:
            await self._refuse(str(exc), str(exc))
            return
        argv = self._argv(user)
        if argv is None:
            await self._refuse(
                "SFTP is not available: OpenSSH's sftp-server is not installed on this node "
                "(looked in " + ", ".join(SFTP_SERVER_PATHS) + ")",
                "sftp-server binary missing",
            )
            return
        meta = self._meta()
        stream = SessionStream(meta, self._sink)
        for factory in ctx.observer_factories:
            observer = factory(meta)
            if observer is not None:
                stream.observers.append(observer)
        entry = ctx.deps.registry.add(
            LiveConnection(
                kind="ssh_session",
                identity=ctx.authorized.identity,
                target=ctx.deps.config.name,
                login=user.name,
                remote_addr=ctx.remote_addr,
                session_id=self.session_id,
                cert_serial=ctx.authorized.cert_serial,
                started=meta.started,
                terminate=self.terminate,
                extra={"kind": meta.kind},
            )
        )
        watchdog = self._start_watchdog(stream)
        status = ExitStatus(None, "KILL")
        try:
            try:
                await self._start_events(meta)
            except LimitExceeded as exc:  # the node's event spool is full: no unaudited session
                self._sink(f"bastion: session refused: {exc.message}\r\n".encode(), True)
                status = ExitStatus(1)
                return
            if not await self._moderate(meta, stream):
                status = ExitStatus(1)
                return
            await stream.start()
            env = session_env(user, chan.get_environment(), term=self._term or None)
            env.update(self._extra_env(user))
            try:
                self._proc = await SessionProcess.start(
                    argv[0],
                    user=user,
                    env=env,
                    stream=stream,
                    pty_size=self._pty,
                    executable=argv[1],
                    flow=self._flow,
                )
            except OSError as exc:
                stream.output(
                    f"bastion: cannot start {argv[0][0]}: {exc}\r\n".encode(), stderr=True
                )
                status = ExitStatus(127)
                return
            for chunk in self._early:
                self._proc.write(chunk)
            self._early.clear()
            chan.resume_reading()
            if self._early_eof:
                self._proc.write_eof()
            status = await self._proc.wait()
        finally:
            ctx.deps.registry.remove(entry)
            if watchdog is not None and not self._watch_fired:
                watchdog.cancel()  # a fired one is terminating the session: let it finish
            meta.exit_code, meta.exit_signal = status.code, status.signal
            meta.bytes_in, meta.bytes_out = stream.meta.bytes_in, stream.meta.bytes_out
            self._exit(status)
            await self._end_events(meta, stream)

    async def _moderate(self, meta: SessionMeta, stream: SessionStream) -> bool:
        """Share the session (:mod:`.session_join`) and wait for its moderators, if any.

        Returns:
            False when it must not run (moderated file transfer; the owner left while waiting).
        """
        ctx = self._ctx
        if ctx.hub is None:
            return True
        try:
            self._shared = ctx.hub.open(
                meta, ctx.authorized, ctx.remote_addr, terminate=self.terminate,
                write_input=self._peer_input, notify_owner=lambda data: self._sink(data, True),
            )  # fmt: skip
        except AccessDenied as exc:
            self._sink(f"bastion: {exc}\r\n".encode(), True)
            await ctx.audit("session.rejected", outcome="failure", session_id=self.session_id,
                            reason=str(exc))  # fmt: skip
            return False
        if self._shared is None:
            return True
        stream.observers.append(self._shared)
        return await self._shared.wait_until_ready()

    def _peer_input(self, data: bytes) -> None:
        if self._proc is not None and not self._closing:
            self._queue_input(data)

    def _queue_input(self, data: bytes) -> None:
        """Write client input to the process once per event-loop pass, not once per SSH packet.

        asyncssh hands a bulk upload over one 32 KiB packet at a time, several per read from
        the tunnel; a pipe write per packet woke the process (and often found the pipe full)
        once per packet, which made the node the slowest stage of ``bsh ssh`` (issue 12).
        Joined, the bytes of one pass go out in one write; typing is not delayed (the write
        happens before the loop next waits).
        """
        if not self._input:
            asyncio.get_running_loop().call_soon(self._flush_input)
        self._input.append(data)

    def _flush_input(self) -> None:
        chunks, self._input = self._input, []
        if chunks and self._proc is not None:
            self._proc.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _start_watchdog(self, stream: SessionStream) -> asyncio.Task[None] | None:
        """Start the session's continuous-check timer, or None when its roles set none."""
        ctx = self._ctx
        policy = ContinuousPolicy.for_session(
            ctx.authorized.identity, ctx.authorized.roles.options()
        )
        if not policy.active:
            return None
        tracker = ActivityTracker(ctx.deps.clock)
        stream.observers.append(tracker)
        return ctx.tasks.spawn(
            self._watch(policy, tracker), name=f"ssh-session-watch-{self.session_id}"
        )

    async def _watch(self, policy: ContinuousPolicy, tracker: ActivityTracker) -> None:
        check = await watch_session(self._ctx.deps.clock, policy, tracker)
        if check is None or check.reason is None:
            return
        self._watch_fired = True
        log.info("session ended by continuous check", session_id=self.session_id,
                 reason=check.reason)  # fmt: skip
        await self.terminate(check.reason, message=check.message)

    def _meta(self) -> SessionMeta:
        pty = self._pty or PtySize()
        options = self._ctx.authorized.roles.options()
        return SessionMeta(
            session_id=self.session_id,
            user=self._ctx.authorized.identity.user,
            login=self._ctx.authorized.login,
            node=self._ctx.deps.config.name,
            remote_addr=self._ctx.remote_addr,
            kind=self._kind,
            command=self._command,
            pty=self._pty is not None,
            term=self._term,
            cols=pty.cols,
            rows=pty.rows,
            started=self._ctx.deps.clock.now(),
            participants=[self._ctx.authorized.identity.user],
            record=options.record_session,
            record_input=options.record_input,
        )

    async def _start_events(self, meta: SessionMeta) -> None:
        await self._ctx.audit(
            "session.start",
            session_id=meta.session_id,
            session_type=meta.kind,
            pty=meta.pty,
            command=meta.command,
            cert_serial=self._ctx.authorized.cert_serial,
        )
        if meta.kind == "subsystem":
            await self._ctx.audit("sftp", session_id=meta.session_id, subsystem=meta.command)

    async def _end_events(self, meta: SessionMeta, stream: SessionStream) -> None:
        meta.ended = self._ctx.deps.clock.now()
        extra = await stream.end()
        if meta.kind == "exec":
            await self._ctx.audit(
                "exec",
                session_id=meta.session_id,
                command=meta.command,
                exit_code=meta.exit_code,
                exit_signal=meta.exit_signal,
            )
        assert meta.started is not None
        await self._ctx.audit(
            "session.end",
            session_id=meta.session_id,
            session_type=meta.kind,
            duration_seconds=round((meta.ended - meta.started).total_seconds(), 3),
            bytes_in=meta.bytes_in,
            bytes_out=meta.bytes_out,
            participants=meta.participants,
            exit_code=meta.exit_code,
            exit_signal=meta.exit_signal,
            **cast(dict[str, Any], extra),
        )

    async def terminate(self, reason: str, *, message: str | None = None) -> None:
        """End this session now: tell the user why, close the channel, kill the processes.

        Completes within about :data:`TERMINATE_GRACE` seconds (the registry's terminator).

        Args:
            reason: why, for the audit event (and the user when ``message`` is None).
            message: what to tell the user instead of ``session terminated: <reason>``.
        """
        if self._closing:
            return
        text = message if message is not None else f"session terminated: {reason}"
        notice = f"\r\nbastion: {text}\r\n".encode()
        if self._proc is not None:
            self._proc.stream.output(notice, stderr=True)
        else:
            self._sink(notice, True)
        await self._ctx.audit(
            "session.terminated", outcome="failure", session_id=self.session_id, reason=reason
        )
        chan = self._chan
        self._closing = True
        if chan is not None:
            chan.close()  # flushes what is queued (the message), then closes
        if self._proc is not None:
            await self._proc.kill(TERMINATE_GRACE)
