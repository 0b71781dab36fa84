"""The SSH client of bsh: asyncssh over a proxy route, with the profile's certificate identity.

Layer: client edge (IO). Trust is the cluster's host CA only: ``known_hosts`` is built from the
profile's ``@cert-authority`` lines, no plain host key is ever trusted (no trust on first use), and
a host certificate must name the node we asked for among its principals. asyncssh exceptions are
translated to the Bastion error tree in exactly one place, :func:`ssh_errors`.

Pure helpers (argument parsing, output prefixing) live here too so that the CLI stays thin:
:func:`parse_forward`, :func:`parse_destination`, :func:`parse_selector`, :class:`LinePrefixer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import selectors
import signal
import ssl
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import IO, Final

import asyncssh

from bastion.client.escape import ESCAPE_HELP, Escape, EscapeScanner
from bastion.client.nodes import match_labels, node_labels, parse_selector
from bastion.client.profile import Profile
from bastion.client.proxy_conn import DIAL_TIMEOUT, ProxyTunnel, check_profile, strip_cluster
from bastion.client.session_mfa import session_credentials, session_ssl_context
from bastion.errors import (
    AccessDenied,
    BadParameter,
    BastionError,
    ConnectionProblem,
    NotFound,
)
from bastion.protocols.sshroute import PREFERRED_CIPHERS

__all__ = [
    "Forward",
    "LinePrefixer",
    "connect",
    "default_login",
    "host_ca_keys",
    "match_labels",
    "node_labels",
    "parse_destination",
    "RemotePath",
    "copy_files",
    "parse_copy_path",
    "parse_forward",
    "parse_selector",
    "run_prefixed",
    "run_session",
    "ssh_errors",
    "start_forwards",
]

CHUNK: Final = 256 * 1024
SSH_LOGIN_TIMEOUT: Final = 30.0


# ---- pure helpers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Forward:
    """One ``-L``/``-R`` spec: ``[bind:]port:host:hostport``."""

    bind: str
    port: int
    host: str
    host_port: int


def _port(text: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(f"invalid port {text!r} in forward spec {spec!r}") from None
    if not 0 <= value <= 65535:
        raise BadParameter(f"port {value} out of range in forward spec {spec!r}")
    return value


def _split_forward(spec: str) -> list[str]:
    """Split on ``:`` but keep ``[v6]`` addresses whole."""
    parts: list[str] = []
    current = ""
    depth = 0
    for ch in spec:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p[1:-1] if p.startswith("[") and p.endswith("]") else p for p in parts]


def parse_forward(spec: str) -> Forward:
    """Parse ``[bind:]port:host:hostport`` as OpenSSH's ``-L``/``-R`` do.

    Raises:
        BadParameter: not three or four fields, or a port that is not 0-65535.
    """
    parts = _split_forward(spec)
    if len(parts) == 3:
        bind, (port, host, host_port) = "", parts
    elif len(parts) == 4:
        bind, port, host, host_port = parts
    else:
        raise BadParameter(f"invalid forward {spec!r}: expected [bind_address:]port:host:hostport")
    if not host:
        raise BadParameter(f"invalid forward {spec!r}: the destination host is empty")
    return Forward(bind, _port(port, spec), host, _port(host_port, spec))


def parse_destination(text: str) -> tuple[str | None, str]:
    """``[login@]node`` into ``(login or None, node)``.

    Raises:
        BadParameter: empty login or node.
    """
    login, sep, node = text.rpartition("@")
    if not node or (sep and not login):
        raise BadParameter(f"invalid destination {text!r}: expected [LOGIN@]NODE")
    return (login if sep else None), node


class LinePrefixer:
    """Prefix every output line with ``[node] ``; keeps partial lines until they complete."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self._partial = b""

    def feed(self, data: bytes) -> bytes:
        data = self._partial + data
        head, sep, self._partial = data.rpartition(b"\n")
        if not sep:  # no complete line yet: everything stays in _partial
            return b""
        return b"".join(self.prefix + line + b"\n" for line in head.split(b"\n"))

    def flush(self) -> bytes:
        rest, self._partial = self._partial, b""
        return self.prefix + rest + b"\n" if rest else b""


def default_login(profile: Profile) -> str:
    """The first of the profile's logins, else the local user name."""
    return (profile.logins or [getpass.getuser()])[0]


# ---- identity and trust ------------------------------------------------------------------------


def host_ca_keys(profile: Profile) -> list[asyncssh.SSHKey]:
    """The host CA keys of the profile's ``@cert-authority`` lines.

    Raises:
        NotFound: no known_hosts or no CA line in it (run bsh login).
    """
    try:
        text = (profile.path / "known_hosts").read_text()
    except FileNotFoundError:
        raise NotFound(f"profile {profile.name} has no known_hosts: run bsh login") from None
    keys = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "@cert-authority":
            try:
                keys.append(asyncssh.import_public_key(" ".join(fields[2:4])))
            except (asyncssh.KeyImportError, ValueError):
                continue
    if not keys:
        raise NotFound(
            f"profile {profile.name} holds no host CA to verify nodes with: run bsh login again"
        )
    return keys


def _user_identity(
    profile: Profile,
) -> tuple[asyncssh.SSHKey | asyncssh.SSHKeyPair, asyncssh.SSHCertificate]:
    try:
        key: asyncssh.SSHKey | asyncssh.SSHKeyPair
        if (profile.path / "key.tpm").exists():  # bsh login --key-store=tpm: the TPM signs
            from bastion.client.device.tpm_ssh import profile_keypair

            key = profile_keypair(profile.path)
        else:
            key = asyncssh.read_private_key(str(profile.path / "key"))
        cert = asyncssh.read_certificate(str(profile.path / "key-cert.pub"))
    except FileNotFoundError:
        raise AccessDenied(
            f"your login {profile.user} has no SSH certificate (no logins in your roles); ask an "
            "admin for a role with logins, then run bsh login again"
        ) from None
    except (asyncssh.KeyImportError, OSError) as exc:
        raise BadParameter(f"cannot read the SSH key of profile {profile.name}: {exc}") from None
    return key, cert


@contextlib.contextmanager
def ssh_errors(node: str, login: str) -> Iterator[None]:
    """Translate asyncssh and socket errors into the Bastion error tree (the one boundary)."""
    try:
        yield
    except BastionError:
        raise
    except ExceptionGroup as group:  # a TaskGroup of session pumps: report the first cause
        first: BaseException = group
        while isinstance(first, ExceptionGroup):
            first = first.exceptions[0]
        with ssh_errors(node, login):
            raise first from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise AccessDenied(
            f"refusing to connect to {node}: its host certificate is not signed by the cluster's "
            f"host CA or does not name it ({exc.reason}); this may be a man in the middle"
        ) from None
    except asyncssh.PermissionDenied:
        raise AccessDenied(
            f"the node {node} refused login {login!r}: is it among your logins (bsh status)?"
        ) from None
    except asyncssh.SFTPNoSuchFile as exc:
        raise NotFound(f"{node}: {exc.reason}") from None
    except asyncssh.SFTPPermissionDenied as exc:
        raise AccessDenied(f"{node}: {exc.reason}") from None
    except asyncssh.SFTPError as exc:
        raise BastionError(f"{node}: {exc.reason}") from None
    except asyncssh.ChannelOpenError as exc:
        raise ConnectionProblem(f"{node}: {exc.reason}") from None
    except asyncssh.DisconnectError as exc:
        raise ConnectionProblem(f"the connection to {node} was closed: {exc.reason}") from None
    except TimeoutError:
        raise ConnectionProblem(f"timed out talking to {node}") from None
    except FileNotFoundError as exc:
        raise NotFound(f"{exc.filename or node}: no such file or directory") from None
    except OSError as exc:
        raise ConnectionProblem(f"{node}: {exc.strerror or exc}") from None


async def connect(
    profile: Profile,
    node: str,
    login: str,
    port: int = 22,
    *,
    agent_forwarding: bool = False,
    dial_timeout: float = DIAL_TIMEOUT,
    session_mfa: bool = True,
    forwards: bool = False,
    keepalive_interval: float = 30,
    keepalive_count_max: int = 3,
) -> asyncssh.SSHClientConnection:
    """An authenticated SSH connection to ``login@node`` through the profile's proxy.

    With ``session_mfa`` (the default) the auth server is asked first whether the target needs
    per-session MFA; if so the security key answers a challenge and the connection uses the
    1-minute certificates for this node and login (:mod:`bastion.client.session_mfa`). With
    ``forwards`` (``-L``/``-R`` asked for) roles without port forwarding are refused there first.

    Raises:
        AuthenticationFailed: expired profile (run bsh login).
        AccessDenied: a host certificate that the cluster host CA did not sign for ``node``, or
            the login refused.
        NotFound / ConnectionProblem: as the proxy reported, or the network failed.
    """
    check_profile(profile)
    key, cert = _user_identity(profile)
    agent_path: str | None = None
    if agent_forwarding:
        agent_path = os.environ.get("SSH_AUTH_SOCK")
        if not agent_path:
            raise BadParameter("-A: there is no agent to forward (SSH_AUTH_SOCK is not set)")
    host = strip_cluster(node, profile.cluster)
    tls: ssl.SSLContext | None = None
    if session_mfa:
        creds = await session_credentials(profile, host, login, forwards=forwards)
        if creds is not None:
            try:
                cert = asyncssh.import_certificate(creds.ssh_cert)
                if (profile.path / "key.tpm").exists() and (profile.path / "tls.key").exists():
                    # an older --key-store=tpm profile: issued for its software TLS key
                    key = asyncssh.read_private_key(str(profile.path / "tls.key"))
            except (asyncssh.KeyImportError, ValueError, OSError) as exc:
                raise BadParameter(f"the session SSH certificate does not load: {exc}") from None
            tls = session_ssl_context(profile, creds)
    with ssh_errors(node, login):
        conn: asyncssh.SSHClientConnection = await asyncssh.connect(
            host,
            port,
            tunnel=ProxyTunnel(profile, login, dial_timeout, tls),
            config=[],
            username=login,
            client_keys=[(key, cert)],
            known_hosts=([], host_ca_keys(profile), []),
            agent_path=agent_path,
            agent_forwarding=agent_forwarding,
            encryption_algs=PREFERRED_CIPHERS,
            login_timeout=SSH_LOGIN_TIMEOUT,
            keepalive_interval=keepalive_interval,
            keepalive_count_max=keepalive_count_max,
        )
    return conn


async def start_forwards(
    conn: asyncssh.SSHClientConnection, local: list[Forward], remote: list[Forward]
) -> list[asyncssh.SSHListener]:
    """Open ``-L`` listeners here and ask the node for ``-R`` listeners there."""
    listeners = []
    for fwd in local:
        with ssh_errors(fwd.host, ""):
            try:
                listeners.append(
                    await conn.forward_local_port(
                        fwd.bind or "localhost", fwd.port, fwd.host, fwd.host_port
                    )
                )
            except OSError as exc:
                raise ConnectionProblem(
                    f"-L: cannot listen on {fwd.bind or 'localhost'}:{fwd.port}: "
                    f"{exc.strerror or exc}"
                ) from None
    for fwd in remote:
        with ssh_errors(fwd.host, ""):
            try:
                listeners.append(
                    await conn.forward_remote_port(fwd.bind, fwd.port, fwd.host, fwd.host_port)
                )
            except asyncssh.ChannelListenError:
                raise AccessDenied(
                    f"-R {fwd.port}: the node refused to listen on port {fwd.port} (is it in "
                    "use there? remote forwards listen on the node's loopback only)"
                ) from None
    return listeners


# ---- sessions ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode on a terminal for the session; the saved mode is restored on any exit."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSADRAIN)  # not TCSAFLUSH: keep what was typed ahead (as ssh)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _pollable(fd: int) -> bool:
    """Can the event loop watch ``fd``? Regular files and /dev/null (epoll says EPERM) cannot;
    reading them never blocks for long, so a worker thread reads those."""
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        return False
    with selectors.DefaultSelector() as probe:
        try:
            probe.register(fd, selectors.EVENT_READ)
        except (PermissionError, ValueError, OSError):
            return False
    return True


@contextlib.asynccontextmanager
async def _stdin_reader(fd: int) -> AsyncIterator[asyncio.StreamReader | None]:
    """A StreamReader on ``fd`` (pipes, sockets, ttys), or None when it is not pollable.

    connect_read_pipe makes the fd non-blocking, a flag it shares with the parent shell;
    it is put back as it was.
    """
    if not _pollable(fd):
        yield None
        return
    blocking = os.get_blocking(fd)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK)
    pipe = os.fdopen(fd, "rb", buffering=0, closefd=False)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        yield reader
    finally:
        transport.close()
        os.set_blocking(fd, blocking)


def _escaped(
    scanner: EscapeScanner, data: bytes, process: asyncssh.SSHClientProcess[bytes]
) -> bytes | None:
    """What of ``data`` goes to the node; ``~?`` prints the escapes, ``~.`` closes the
    connection (None: the session is over)."""
    out = b""
    for item in scanner.feed(data):
        if item is Escape.HELP:
            sys.stderr.buffer.write(("~?\r\n" + ESCAPE_HELP).encode())
            sys.stderr.flush()
        elif item is Escape.DISCONNECT:
            process.channel.get_connection().close()  # even a hung node: do not wait for it
            return None
        elif isinstance(item, bytes):
            out += item
    return out


async def _pump_stdin(
    fd: int,
    writer: asyncssh.SSHWriter[bytes],
    escapes: asyncssh.SSHClientProcess[bytes] | None = None,
) -> None:
    """Copy ``fd`` to the session's stdin, then send EOF. With ``escapes`` (the session's
    process; interactive terminals only), OpenSSH's ``~.`` and ``~?`` are acted on here.

    A session that ends while input is still flowing closes the channel under us: that
    BrokenPipeError only means "nobody reads any more", so the pump stops quietly.
    """
    scanner = EscapeScanner() if escapes is not None else None
    async with _stdin_reader(fd) as reader:
        try:
            while True:
                if reader is None:  # a regular file: reads never block for long
                    data = await asyncio.to_thread(os.read, fd, CHUNK)
                else:
                    data = await reader.read(CHUNK)
                if not data:
                    break
                if scanner is not None and escapes is not None:
                    sent = _escaped(scanner, data, escapes)
                    if sent is None:
                        return
                    if not sent:
                        continue
                    data = sent
                writer.write(data)
                await writer.drain()
            if not writer.is_closing():
                writer.write_eof()
        except (BrokenPipeError, ConnectionResetError, asyncssh.DisconnectError):
            return


async def _pump_out(reader: asyncssh.SSHReader[bytes], out: IO[bytes]) -> None:
    while data := await reader.read(CHUNK):
        out.write(data)
        out.flush()


def _exit_code(process: asyncssh.SSHClientProcess[bytes]) -> int:
    if process.exit_status is not None:
        return int(process.exit_status)
    return 255  # killed by a signal or closed without a status, as OpenSSH reports it


async def run_session(
    conn: asyncssh.SSHClientConnection,
    command: str | None,
    *,
    pty: bool,
    stdin_fd: int = 0,
    env: dict[str, str] | None = None,
) -> int:
    """An interactive shell (command None) or one command, wired to this process's stdio.

    With ``pty`` the remote side gets a terminal of the local size and type, the local terminal
    is raw for the session (restored on exit), SIGWINCH resizes the remote one, and OpenSSH's
    escape sequences work (``~.`` disconnects with status 255, ``~?`` lists them).
    ``env``: variables to set on the node (``-o SetEnv``; the node may refuse them).

    Returns:
        The remote exit status (255 when the node sent none).
    """
    tty_in = os.isatty(stdin_fd)
    term_type = os.environ.get("TERM", "xterm-256color") if pty else None
    term_size = tuple(os.get_terminal_size(stdin_fd)) if pty and tty_in else None
    process: asyncssh.SSHClientProcess[bytes] = await conn.create_process(
        command,
        encoding=None,
        term_type=term_type,
        term_size=term_size,
        request_pty="force" if pty else False,
        env=env or (),
    )
    loop = asyncio.get_running_loop()
    if pty and tty_in:

        def resize() -> None:
            cols, rows = os.get_terminal_size(stdin_fd)
            process.change_terminal_size(cols, rows)

        loop.add_signal_handler(signal.SIGWINCH, resize)
    raw = _raw_terminal(stdin_fd) if pty and tty_in else contextlib.nullcontext()
    try:
        with raw:
            async with asyncio.TaskGroup() as tg:
                escapes = process if pty and tty_in else None
                stdin_task = tg.create_task(_pump_stdin(stdin_fd, process.stdin, escapes))
                tg.create_task(_pump_out(process.stdout, sys.stdout.buffer))
                tg.create_task(_pump_out(process.stderr, sys.stderr.buffer))
                await process.wait_closed()
                stdin_task.cancel()  # the session is over; unread input stays unread
    finally:
        if pty and tty_in:
            loop.remove_signal_handler(signal.SIGWINCH)
    return _exit_code(process)


async def run_prefixed(
    conn: asyncssh.SSHClientConnection, command: str, prefix: str, out: IO[bytes], err: IO[bytes]
) -> int:
    """Run ``command`` without stdin; every output line is written as ``[prefix] line``.

    Returns:
        The remote exit status (255 when none was sent).
    """
    process: asyncssh.SSHClientProcess[bytes] = await conn.create_process(
        command, encoding=None, stdin=asyncssh.DEVNULL
    )

    async def copy(reader: asyncssh.SSHReader[bytes], sink: IO[bytes]) -> None:
        prefixer = LinePrefixer(f"[{prefix}] ".encode())
        while data := await reader.read(CHUNK):
            sink.write(prefixer.feed(data))
            sink.flush()
        sink.write(prefixer.flush())
        sink.flush()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(copy(process.stdout, out))
        tg.create_task(copy(process.stderr, err))
    await process.wait_closed()
    return _exit_code(process)


# ---- scp ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemotePath:
    """``[login@]node:path`` of ``bsh scp``."""

    login: str | None
    node: str
    path: str


def parse_copy_path(text: str) -> RemotePath | str:
    """A remote ``[login@]node:path`` or a local path (as scp decides: a ``:`` before any ``/``).

    Raises:
        BadParameter: an empty node name.
    """
    colon = text.find(":")
    slash = text.find("/")
    if colon < 0 or (0 <= slash < colon):
        return text
    login, node = parse_destination(text[:colon]) if text[:colon] else (None, "")
    if not node:
        raise BadParameter(f"invalid remote path {text!r}: expected [LOGIN@]NODE:PATH")
    return RemotePath(login, node, text[colon + 1 :] or ".")


async def copy_files(
    profile: Profile,
    sources: list[str],
    dest: str,
    *,
    recurse: bool = False,
    port: int = 22,
    login: str | None = None,
) -> None:
    """scp between local paths and nodes (both ways; node to node too) over proxy routes.

    Raises:
        BadParameter: nothing remote, or a label selector as a node.
        NotFound / AccessDenied / ConnectionProblem: as :func:`connect`, or a missing file.
    """
    parsed = [parse_copy_path(p) for p in [*sources, dest]]
    if not any(isinstance(p, RemotePath) for p in parsed):
        raise BadParameter("scp: name a remote path as [LOGIN@]NODE:PATH (none was given)")
    conns: dict[tuple[str, str], asyncssh.SSHClientConnection] = {}
    try:
        args: list[str | tuple[asyncssh.SSHClientConnection, str]] = []
        for item in parsed:
            if isinstance(item, str):
                args.append(item)
                continue
            if parse_selector(item.node) is not None:
                raise BadParameter(f"scp: {item.node!r}: copy to one node at a time, by name")
            who = item.login or login or default_login(profile)
            key = (who, item.node)
            if key not in conns:
                conns[key] = await connect(profile, item.node, who, port)
            args.append((conns[key], item.path))
        node = ", ".join(n for _, n in conns) or "scp"
        with ssh_errors(node, ""):
            await asyncssh.scp(args[:-1], args[-1], recurse=recurse, preserve=False)
    finally:
        for conn in conns.values():
            conn.close()
        for conn in conns.values():
            await conn.wait_closed()
