"""Records interactive sessions as asciicast v2: a :class:`~bastion.agent.session.SessionObserver`.

Layer: agent IO shell (thin): :class:`~bastion.recording.asciicast.CastEncoder` turns the bytes
into lines, :class:`~bastion.recording.spool.Spool` makes them durable on the node, and the
:class:`~bastion.recording.uploader.Uploader` is told when a recording is finished. The
recording's SHA-256 goes into ``session.end`` as ``recording_sha256``.

What is recorded: sessions with a PTY, or a shell, when the user's roles say ``record_session``
(the default). Output always; input (keystrokes, which may include passwords typed at prompts)
only when a role sets ``record_input``. If the spool cannot be written (disk full), the session
goes on and ``session.end`` carries ``recording_error`` instead of the hash.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from bastion.agent.session import SessionMeta, SessionObserver
from bastion.clock import Clock
from bastion.recording.asciicast import CastEncoder, CastHeader
from bastion.recording.spool import Spool, SpoolFile
from bastion.recording.store import RecordingMeta

__all__ = ["SessionRecorder", "recorder_factory", "wants_recording"]

log = structlog.get_logger("bastion.agent.recorder")


def wants_recording(meta: SessionMeta) -> bool:
    """Interactive (PTY or shell) and the roles ask for it."""
    return meta.record and (meta.pty or meta.kind == "shell")


class SessionRecorder:
    """One session's recorder."""

    def __init__(
        self, spool: Spool, clock: Clock, cluster: str, on_finished: Callable[[], None]
    ) -> None:
        self._spool = spool
        self._clock = clock
        self._cluster = cluster
        self._on_finished = on_finished
        self._file: SpoolFile | None = None
        self._encoder: CastEncoder | None = None
        self._t0 = 0.0
        self._record_input = False
        self._error = ""

    def _now(self) -> float:
        return self._clock.monotonic() - self._t0

    async def on_start(self, meta: SessionMeta) -> None:
        started = meta.started or self._clock.now()
        self._t0 = self._clock.monotonic()
        self._record_input = meta.record_input
        env = {"TERM": meta.term} if meta.term else {}
        title = f"{meta.user} as {meta.login}@{meta.node}" + (
            f": {meta.command}" if meta.command else ""
        )
        self._encoder = CastEncoder(
            CastHeader(
                meta.cols,
                meta.rows,
                int(started.timestamp()),
                env,
                title,
                tuple(meta.participants),
            )  # fmt: skip
        )
        self._file = self._spool.open(
            RecordingMeta(
                session_id=meta.session_id,
                user=meta.user,
                login=meta.login,
                node=meta.node,
                cluster=self._cluster,
                kind=meta.kind,
                command=meta.command,
                started=started,
                input_recorded=meta.record_input,
                complete=True,
            ),
            self._clock.monotonic,
        )
        self._file.write(self._encoder.start())

    def _write(self, line: bytes) -> None:
        if self._file is None or self._error:
            return
        try:
            self._file.write(line)
        except OSError as exc:  # disk full, I/O error: the session goes on, the gap is audited
            self._error = f"recording stopped: {exc.strerror or exc}"
            log.error("session recording failed", session_id=self._file.meta.session_id,
                      error=self._error)  # fmt: skip
            self._file.abort()  # what was written is uploaded as partial after a restart

    def on_output(self, data: bytes) -> None:
        if self._encoder is not None:
            self._write(self._encoder.output(self._now(), data))

    def on_input(self, data: bytes) -> None:
        if self._record_input and self._encoder is not None:
            self._write(self._encoder.input(self._now(), data))

    def on_resize(self, cols: int, rows: int) -> None:
        if self._encoder is not None:
            self._write(self._encoder.resize(self._now(), cols, rows))

    async def on_end(self, meta: SessionMeta) -> Mapping[str, object] | None:
        if self._file is None or self._encoder is None:
            return None
        self._write(self._encoder.finish(self._now()))
        if self._error:
            return {"recording_error": self._error}
        try:
            final = self._file.finish(
                self._file.meta.model_copy(update={"ended": meta.ended or self._clock.now()})
            )
        except OSError as exc:
            return {"recording_error": f"recording not finished: {exc.strerror or exc}"}
        self._on_finished()
        return {"recording_sha256": final.sha256, "recording_bytes": final.size}


def recorder_factory(
    spool: Spool, clock: Clock, cluster: str, on_finished: Callable[[], None]
) -> Callable[[SessionMeta], SessionObserver | None]:
    """An :data:`~bastion.agent.ssh_session.ObserverFactory` that records what
    :func:`wants_recording` selects."""

    def factory(meta: SessionMeta) -> SessionObserver | None:
        if not wants_recording(meta):
            return None
        return SessionRecorder(spool, clock, cluster, on_finished)

    return factory
