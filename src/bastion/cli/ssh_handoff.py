"""``bsh ssh`` through the system's OpenSSH client: the fast path of the user's main command.

Layer: client edge (stdlib only, like :mod:`bastion.cli.proxy_fast`; no click, asyncio,
aiohttp, asyncssh or cryptography). When OpenSSH's ``ssh`` is installed, ``bsh ssh [LOGIN@]NODE``
asks the auth API (one HTTPS request with the profile's certificate) whether the target exists,
is allowed and needs per-session MFA, then *replaces itself* with ``ssh`` configured exactly as
``bsh config`` configures it (``ProxyCommand bsh proxy ssh``, the profile's key and certificate,
the cluster host CA as the only trust, ``StrictHostKeyChecking yes``). OpenSSH then carries the
session at its own speed, with its escape sequences (``~.``, ``~?``), terminal handling and
forwarding.

It steps aside (returns None: the asyncssh client of :mod:`bastion.cli.bsh_ssh` runs) when
``ssh`` is missing, ``BSH_SSH_CLIENT=builtin`` is set, the destination is a label selector
(fan-out), the target needs per-session MFA (the built-in client runs the ceremony), or the
arguments are anything it does not parse (the full CLI then explains the error).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path

from bastion.client.stdhttp import request
from bastion.client.tls import profile_context
from bastion.errors import BastionError, error_from_code
from bastion.protocols.sshroute import PREFERRED_CIPHERS

__all__ = [
    "BuiltinOptions",
    "SSHArgs",
    "SSHUsageError",
    "builtin_options",
    "main",
    "parse_ssh_args",
    "read_ssh_args",
    "ssh_argv",
]

CERT_HOST_KEY_ALGS = (
    "ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,"
    "rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com"
)
CIPHERS = ",".join(PREFERRED_CIPHERS)
API_TIMEOUT = 20.0
_VALUE_FLAGS = {"-p": "port", "-l": "login", "-L": "local", "-R": "remote", "-o": "options"}
_BOOL_FLAGS = {"-A": "agent", "-t": "tty", "-N": "no_command"}


class _Plain:
    """``repr`` and ``==`` by attributes. The option holders below are plain classes, not
    dataclasses: the hand-off runs before every OpenSSH connection, and importing
    ``dataclasses`` (with ``inspect`` and ``ast``) costs about a sixth of its start-up."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq


class SSHArgs(_Plain):
    """What ``bsh ssh`` was asked, parsed as OpenSSH parses it."""

    def __init__(
        self,
        destination: str = "",
        command: list[str] | None = None,
        port: int = 22,
        login: str | None = None,
        local: list[str] | None = None,
        remote: list[str] | None = None,
        options: list[str] | None = None,
        agent: bool = False,
        tty: bool = False,
        no_command: bool = False,
    ) -> None:
        self.destination = destination
        self.command: list[str] = list(command or [])
        self.port = port
        self.login = login
        self.local: list[str] = list(local or [])
        self.remote: list[str] = list(remote or [])
        self.options: list[str] = list(options or [])
        self.agent = agent
        self.tty = tty
        self.no_command = no_command


class SSHUsageError(ValueError):
    """``bsh ssh`` arguments OpenSSH would refuse; the message says which and why."""


def read_ssh_args(args: list[str]) -> SSHArgs:
    """``[-p PORT] [-l LOGIN] [-L SPEC] [-R SPEC] [-o OPT=V] [-A] [-t] [-N] [--] DEST [CMD...]``
    (pure), as OpenSSH parses them: flags may be bundled (``-tA``) or glued to their value
    (``-p2222``); options end at the destination or ``--``; what follows the destination is
    the command, flags included.

    Raises:
        SSHUsageError: an unknown flag, a flag without its value, a bad port, no destination.
    """
    out = SSHArgs()
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            rest.insert(0, arg)
            break
        flags = arg[1:]
        while flags:
            flag, flags = "-" + flags[0], flags[1:]
            if flag in _BOOL_FLAGS:
                setattr(out, _BOOL_FLAGS[flag], True)
                continue
            if flag not in _VALUE_FLAGS:
                shown = arg if arg.startswith("--") else flag
                raise SSHUsageError(
                    f"unknown option {shown}; bsh ssh takes -p -l -L -R -o -A -t -N "
                    "(bsh ssh --help)"
                )
            value = flags or (rest.pop(0) if rest else None)
            flags = ""
            if value is None:
                raise SSHUsageError(f"option {flag} needs a value")
            name = _VALUE_FLAGS[flag]
            if name == "port":
                if not value.isdigit() or not 0 < int(value) < 65536:
                    raise SSHUsageError(f"-p {value}: not a port number")
                out.port = int(value)
            elif name == "login":
                out.login = value
            else:
                getattr(out, name).append(value)
    if not rest:
        raise SSHUsageError("name the node: bsh ssh [OPTIONS] [LOGIN@]NODE [COMMAND...]")
    out.destination, out.command = rest[0], rest[1:]
    return out


def parse_ssh_args(args: list[str]) -> SSHArgs | None:
    """:func:`read_ssh_args`, or None for anything it refuses (``--help`` too): the full CLI
    answers those."""
    try:
        return read_ssh_args(args)
    except SSHUsageError:
        return None


class BuiltinOptions(_Plain):
    """What the ``-o`` options ask of the built-in (asyncssh) client; None: not given."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.login: str | None = None
        self.agent: bool | None = None
        self.tty: bool | None = None
        """True: a terminal even for a command (``RequestTTY=yes|force``); False: never one."""
        self.connect_timeout: float | None = None
        self.keepalive_interval: float | None = None
        self.keepalive_count_max: int | None = None
        self.local: list[str] = []
        self.remote: list[str] = []
        self.env: dict[str, str] = {}


_YES = {"yes": True, "true": True, "no": False, "false": False}
_IGNORED = {"loglevel", "batchmode", "compression", "visualhostkey", "hashknownhosts"}
_TRUST = {
    "stricthostkeychecking",
    "userknownhostsfile",
    "globalknownhostsfile",
    "hostkeyalgorithms",
    "identityfile",
    "certificatefile",
    "identitiesonly",
    "proxycommand",
    "proxyjump",
    "hostname",
}
SUPPORTED_OPTIONS = (
    "Port, User, ForwardAgent, RequestTTY, ConnectTimeout, ServerAliveInterval, "
    "ServerAliveCountMax, LocalForward, RemoteForward, SetEnv (LogLevel, BatchMode and "
    "Compression are accepted and ignored)"
)


def _split_option(text: str) -> tuple[str, str]:
    key, sep, value = text.strip().partition("=")
    if not sep:
        key, _, value = text.strip().partition(" ")
    key, value = key.strip(), value.strip().strip('"')
    if not key or not value:
        raise SSHUsageError(f"-o {text!r}: expected Option=value")
    return key, value


def _number(key: str, value: str) -> int:
    if not value.isdigit():
        raise SSHUsageError(f"-o {key}={value}: expected a number")
    return int(value)


def builtin_options(options: list[str]) -> BuiltinOptions:
    """Interpret ``-o Option=value`` for the built-in client (pure). As in OpenSSH, option
    names are case-insensitive and the first value of an option wins.

    Raises:
        SSHUsageError: an option the built-in client does not support (its trust settings are
            fixed: the cluster's host CA and the profile's certificate), or a bad value.
    """
    out = BuiltinOptions()
    seen: set[str] = set()
    for text in options:
        key, value = _split_option(text)
        name = key.lower()
        if name in _TRUST:
            raise SSHUsageError(
                f"-o {key}: not supported: bsh ssh always trusts only the cluster's host CA and "
                "uses your profile's certificate"
            )
        first = name not in seen or name in ("localforward", "remoteforward", "setenv")
        seen.add(name)
        if not first or name in _IGNORED:
            continue
        if name == "port":
            out.port = _number(key, value)
        elif name == "user":
            out.login = value
        elif name in ("forwardagent", "requesttty"):
            flag = {"force": True, "auto": None, **_YES}.get(value.lower(), "?")
            if flag == "?" or (name == "forwardagent" and flag is None):
                raise SSHUsageError(f"-o {key}={value}: expected yes or no")
            setattr(out, "agent" if name == "forwardagent" else "tty", flag)
        elif name == "connecttimeout":
            out.connect_timeout = float(_number(key, value))
        elif name == "serveraliveinterval":
            out.keepalive_interval = float(_number(key, value))
        elif name == "serveralivecountmax":
            out.keepalive_count_max = _number(key, value)
        elif name in ("localforward", "remoteforward"):
            listen, _, target = value.partition(" ")
            if not target.strip():
                raise SSHUsageError(f"-o {key}={value}: expected [bind:]port host:hostport")
            spec = f"{listen}:{target.strip()}"
            (out.local if name == "localforward" else out.remote).append(spec)
        elif name == "setenv":
            var, sep, val = value.partition("=")
            if not sep or not var:
                raise SSHUsageError(f"-o SetEnv={value}: expected NAME=value")
            out.env.setdefault(var, val)
        else:
            raise SSHUsageError(
                f"-o {key}: not supported by bsh's built-in SSH client (supported: "
                f"{SUPPORTED_OPTIONS})"
            )
    return out


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def _profile(home: Path) -> tuple[Path, dict[str, str]]:
    try:
        name = (home / "current").read_text().strip()
        pdir = home / "profiles" / name
        data = json.loads((pdir / "profile.json").read_text())
    except (FileNotFoundError, ValueError, NotADirectoryError):
        raise error_from_code(
            "not_found", "not logged in: run bsh login --proxy=HOST:PORT --user=NAME"
        ) from None
    return pdir, data


def _expired(profile: dict[str, str]) -> bool:
    try:
        return datetime.fromisoformat(str(profile.get("expires"))) <= datetime.now(UTC)
    except ValueError:
        return True


def challenge(pdir: Path, proxy: str, node: str, login: str) -> dict[str, object]:
    """``POST /v1/certs/session/challenge`` with the profile's certificate (stdlib HTTPS:
    :mod:`bastion.client.stdhttp`, so the hand-off loads neither aiohttp nor pydantic).

    Raises:
        BastionError: the server's error (its class rebuilt from the code), or the network's.
    """
    ctx = profile_context(pdir, pdir.name, ["http/1.1"])
    body = json.dumps({"node": node, "login": login}).encode()
    try:
        reply = request(
            ctx,
            proxy,
            "POST",
            "/v1/certs/session/challenge",
            body,
            {"Content-Type": "application/json"},
            timeout=API_TIMEOUT,
        )
    except ssl.SSLCertVerificationError as exc:
        raise error_from_code(
            "connection_problem",
            f"cannot verify the proxy at {proxy}: {exc.verify_message}; run bsh login again if "
            "the cluster was re-created",
        ) from None
    except ssl.SSLError as exc:
        raise error_from_code(
            "authentication_failed",
            f"the proxy refused the TLS connection ({exc.reason}): run bsh login",
        ) from None
    try:
        data = json.loads(reply.body) if reply.body else {}
    except ValueError:
        data = {}
    if reply.status >= 400:
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            raise error_from_code(str(err.get("code")), str(err.get("message")))
        raise BastionError(f"the proxy answered HTTP {reply.status}")
    return data if isinstance(data, dict) else {}


def ssh_argv(
    ssh: str,
    bsh: str,
    pdir: Path,
    cluster: str,
    node: str,
    login: str,
    args: SSHArgs,
    leaf: str = "",
    agent: str = "",
) -> list[str]:
    """The ``ssh`` command line: ``bsh config``'s settings, then the user's flags (pure).
    ``leaf``: a leaf cluster of ``cluster``, with its own certificate and host CA
    (:mod:`bastion.cli.leaf_proxy`). ``agent``: bsh's agent socket signing with the
    profile's TPM-held key (``bsh login --key-store=tpm``; there is no private key file)."""
    files = pdir / "leaves" / leaf if leaf else pdir
    via = f" --leaf={leaf}" if leaf else ""
    argv = [
        ssh,
        "-F",
        "none",  # the user's ~/.ssh/config must not weaken the trust set here
        "-o",
        f"ProxyCommand={bsh} proxy ssh --cluster={cluster}{via} %r@%h:%p",
        "-o",
        f"IdentityFile={pdir / ('key.pub' if agent else 'key')}",
        "-o",
        f"CertificateFile={files / 'key-cert.pub'}",
        *(("-o", f"IdentityAgent={agent}") if agent else ()),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={files / 'known_hosts'}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"HostKeyAlgorithms={CERT_HOST_KEY_ALGS}",
        "-o",
        "LogLevel=ERROR",
        "-p",
        str(args.port),
        "-l",
        login,
    ]
    for option in args.options:
        argv += ["-o", option]
    argv += ["-o", f"Ciphers={CIPHERS}"]  # after the user's: OpenSSH keeps the first value
    for spec in args.local:
        argv += ["-L", spec]
    for spec in args.remote:
        argv += ["-R", spec]
    argv += [
        flag for flag, on in (("-A", args.agent), ("-t", args.tty), ("-N", args.no_command)) if on
    ]
    argv += ["--", f"{node}.{leaf or cluster}", *args.command]
    return argv


def _which(name: str) -> str | None:
    """``shutil.which`` for a plain name, without importing ``shutil`` (and its archivers)."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder or ".", name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def _bsh() -> str:
    argv0 = Path(sys.argv[0])
    if argv0.name == "bsh" and argv0.exists():
        return str(argv0.absolute())
    found = _which("bsh")
    return str(Path(found).absolute()) if found else str(argv0.absolute())


def _leaf_handoff(
    ssh: str, pdir: Path, cluster: str, host: str, login: str, args: SSHArgs
) -> int | None:
    """``bsh ssh NODE.LEAF``: the leaf certificate first (fetched when stale), then OpenSSH
    through the root proxy's route to the leaf. None: ``host`` names no known leaf."""
    from bastion.cli.leaf_proxy import ensure_leaf_cert, find_leaf
    from bastion.cli.proxy_fast import ProxyError

    leaf = find_leaf(pdir, host, cluster)
    if leaf is None:
        return None
    node = host
    for suffix in (f".{leaf}.{cluster}", f".{leaf}"):
        if node.lower().endswith(suffix.lower()):
            node = node[: -len(suffix)]
            break
    try:
        target = f"{login}@{node}.{leaf}" if login else ""
        ensure_leaf_cert(pdir, leaf, target=target)  # per-session MFA: the ceremony first
    except ProxyError as exc:
        return _fail(str(exc), exc.code)
    except OSError as exc:
        return _fail(f"cluster {leaf}: {exc}", 7)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(ssh, ssh_argv(ssh, _bsh(), pdir, cluster, node, login, args, leaf=leaf))  # noqa: S606
    return 0  # not reached


def main(argv: list[str]) -> int | None:
    """Run ``bsh ssh`` through OpenSSH when it can (see the module docstring); None: not here."""
    if argv[:1] != ["ssh"] or os.environ.get("BSH_SSH_CLIENT", "") == "builtin":
        return None
    ssh = _which("ssh")
    args = parse_ssh_args(argv[1:])
    if ssh is None or args is None or "=" in args.destination:
        return None
    login_at, _, node = args.destination.rpartition("@")
    if not node or "@" in login_at:
        return None
    home = Path(os.environ.get("BSH_HOME") or Path.home() / ".bsh")
    try:
        pdir, profile = _profile(home)
        if _expired(profile):
            return None  # the full CLI says how to log in again
        if not (pdir / "key-cert.pub").exists():
            return None  # no SSH certificate: the full CLI explains
        cluster = str(profile.get("cluster", ""))
        logins = list(profile.get("logins") or [])
        login = args.login or login_at or (logins[0] if logins else os.environ.get("USER", ""))
        if (pdir / "leaves").is_dir():  # NODE.LEAF[.ROOT]: a leaf cluster (bsh clusters)
            leaf = _leaf_handoff(ssh, pdir, cluster, node, login, args)
            if leaf is not None:
                return leaf
        suffix = "." + cluster
        if cluster and node.lower().endswith(suffix.lower()) and len(node) > len(suffix):
            node = node[: -len(suffix)]
        answer = challenge(pdir, str(profile["proxy"]), node, login)
    except BastionError as exc:
        return _fail(exc.message, exc.exit_code)
    except (OSError, ValueError, KeyError):
        return None  # an unusable profile: the full CLI says what is wrong
    if answer.get("mfa_required"):
        return None  # the built-in client runs the per-session MFA ceremony
    if (args.local or args.remote) and answer.get("port_forwarding") is False:
        return _fail(
            "port forwarding (-L/-R) is not allowed by your roles (role option "
            "port_forwarding: false); ask an admin, or connect without -L/-R",
            3,
        )
    target = str(answer.get("node") or node)
    agent = ""
    if (pdir / "key.tpm").exists():  # bsh login --key-store=tpm: the TPM signs, via our agent
        from bastion.client.device.tpm_key import start_profile_agent

        try:
            agent = start_profile_agent(pdir)
        except BastionError as exc:
            return _fail(exc.message, exc.exit_code)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(ssh, ssh_argv(ssh, _bsh(), pdir, cluster, target, login, args, agent=agent))  # noqa: S606
    return 0  # not reached
