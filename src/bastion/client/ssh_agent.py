"""bsh's SSH agent: OpenSSH signs with a TPM-held key (``bsh login --key-store=tpm``) through
an agent socket bsh serves (``IdentityAgent``).

Layer: client. The protocol part is sans-IO and pure (draft-miller-ssh-agent): a
:class:`Framer` cuts the byte stream into messages, :func:`parse_request` reads one, and
:class:`AgentCore` answers ``REQUEST_IDENTITIES`` (the profile's certificate and its plain key)
and ``SIGN_REQUEST`` (for those keys only); everything else, and anything malformed, gets
``SSH_AGENT_FAILURE``. No key can be added, removed or exported through this agent.

:func:`serve` runs the core on a listening Unix socket, one connection at a time (OpenSSH opens
one per authentication); :func:`fork_agent` serves it from a child process for as long as the
parent (``bsh ssh``, which then becomes OpenSSH by ``exec``) lives.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MAX_MESSAGE",
    "SSH_AGENTC_REQUEST_IDENTITIES",
    "SSH_AGENTC_SIGN_REQUEST",
    "SSH_AGENT_FAILURE",
    "SSH_AGENT_IDENTITIES_ANSWER",
    "SSH_AGENT_SIGN_RESPONSE",
    "Identity",
    "AgentCore",
    "Framer",
    "ProtocolError",
    "RequestIdentities",
    "SignRequest",
    "Unsupported",
    "encode_message",
    "fork_agent",
    "listen",
    "parse_request",
    "serve",
]

SSH_AGENT_FAILURE = 5
SSH_AGENTC_REQUEST_IDENTITIES = 11
SSH_AGENT_IDENTITIES_ANSWER = 12
SSH_AGENTC_SIGN_REQUEST = 13
SSH_AGENT_SIGN_RESPONSE = 14
MAX_MESSAGE = 256 * 1024
"""OpenSSH's own agent limit; a longer length prefix ends the connection."""


class ProtocolError(Exception):
    """The peer broke the framing: the connection is closed."""


@dataclass(frozen=True, slots=True)
class RequestIdentities:
    pass


@dataclass(frozen=True, slots=True)
class SignRequest:
    key_blob: bytes
    data: bytes
    flags: int


@dataclass(frozen=True, slots=True)
class Unsupported:
    type: int
    """The message type (-1: malformed)."""


Request = RequestIdentities | SignRequest | Unsupported


class Framer:
    """Length-prefixed messages out of a byte stream (``uint32 length || body``)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The complete message bodies ``data`` finishes (in order).

        Raises:
            ProtocolError: a length of 0 or above :data:`MAX_MESSAGE`.
        """
        self._buffer += data
        out: list[bytes] = []
        while len(self._buffer) >= 4:
            size = int.from_bytes(self._buffer[:4], "big")
            if size == 0 or size > MAX_MESSAGE:
                raise ProtocolError(f"agent message length {size} out of range")
            if len(self._buffer) < 4 + size:
                break
            out.append(bytes(self._buffer[4 : 4 + size]))
            del self._buffer[: 4 + size]
        return out


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _read_string(body: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(body):
        raise ValueError("truncated length")
    size = int.from_bytes(body[at : at + 4], "big")
    end = at + 4 + size
    if end > len(body):
        raise ValueError("truncated string")
    return body[at + 4 : end], end


def parse_request(body: bytes) -> Request:
    """One message body (type byte and payload) as a request; malformed or unknown ones are
    :class:`Unsupported` (answered with a failure, as OpenSSH's agent does)."""
    if not body:
        return Unsupported(-1)
    kind = body[0]
    if kind == SSH_AGENTC_REQUEST_IDENTITIES:
        return RequestIdentities() if len(body) == 1 else Unsupported(-1)
    if kind != SSH_AGENTC_SIGN_REQUEST:
        return Unsupported(kind)
    try:
        key_blob, at = _read_string(body, 1)
        data, at = _read_string(body, at)
    except ValueError:
        return Unsupported(-1)
    if at + 4 != len(body):
        return Unsupported(-1)
    return SignRequest(key_blob, data, int.from_bytes(body[at : at + 4], "big"))


def encode_message(kind: int, payload: bytes = b"") -> bytes:
    return (len(payload) + 1).to_bytes(4, "big") + bytes([kind]) + payload


@dataclass(frozen=True, slots=True)
class Identity:
    key_blob: bytes
    """The SSH wire encoding of the public key or certificate."""
    comment: str


class AgentCore:
    """The agent's answers (pure): ``identities`` are offered, and a sign request for one of
    their blobs is signed by ``sign`` (data → SSH signature blob)."""

    def __init__(self, identities: Sequence[Identity], sign: Callable[[bytes], bytes]) -> None:
        self.identities = list(identities)
        self._blobs = {identity.key_blob for identity in identities}
        self._sign = sign

    def answer(self, request: Request) -> bytes:
        if isinstance(request, RequestIdentities):
            payload = len(self.identities).to_bytes(4, "big")
            for identity in self.identities:
                payload += _string(identity.key_blob) + _string(identity.comment.encode())
            return encode_message(SSH_AGENT_IDENTITIES_ANSWER, payload)
        if isinstance(request, SignRequest) and request.key_blob in self._blobs:
            try:
                signature = self._sign(request.data)
            except Exception:  # the TPM refused or is gone: the client tries its next key
                return encode_message(SSH_AGENT_FAILURE)
            return encode_message(SSH_AGENT_SIGN_RESPONSE, _string(signature))
        return encode_message(SSH_AGENT_FAILURE)

    def receive(self, framer: Framer, data: bytes) -> bytes:
        """The replies to the messages ``data`` completes. Raises: ProtocolError."""
        return b"".join(self.answer(parse_request(body)) for body in framer.feed(data))


def _handle(conn: socket.socket, core: AgentCore) -> None:
    framer = Framer()
    with conn:
        conn.settimeout(30)
        while True:
            try:
                data = conn.recv(65536)
                if not data:
                    return
                reply = core.receive(framer, data)
                if reply:
                    conn.sendall(reply)
            except (OSError, ProtocolError):
                return


def serve(
    listener: socket.socket, make_core: Callable[[], AgentCore], alive: Callable[[], bool]
) -> None:
    """Answer connections on ``listener`` while ``alive()`` (checked every half second);
    ``make_core`` runs per connection, so a new login's certificate is offered at once."""
    listener.settimeout(0.5)
    while alive():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        try:
            core = make_core()
        except Exception:  # the profile is gone or broken: nothing to offer
            conn.close()
            continue
        _handle(conn, core)


def listen(path: Path) -> socket.socket:
    """A Unix socket at ``path`` only its owner can use (its folder must be private)."""
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(4)
    return listener


def fork_agent(
    path: Path, core_factory: Callable[[], AgentCore], cleanup: Callable[[], None] | None = None
) -> None:
    """Serve the agent at ``path`` from a child process until this process ends (the caller
    then ``exec``s OpenSSH, which keeps the pid; ``cleanup`` runs in the child at the end).
    The socket listens before this returns."""
    listener = listen(path)
    parent = os.getpid()
    if os.fork() != 0:
        listener.close()
        return
    try:  # the child: detached from the terminal's signals, serving until the parent is gone
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)  # do not hold the caller's pipes open
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        serve(listener, core_factory, lambda: os.getppid() == parent)
    finally:
        listener.close()
        path.unlink(missing_ok=True)
        if cleanup is not None:
            cleanup()
        os._exit(0)
