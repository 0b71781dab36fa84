"""A throwaway OpenSSH ``sshd`` for tests and benchmarks (integration layer, agentless nodes).

Not used in production. :func:`start_sshd` runs the system ``sshd`` in the foreground
(``-D -e -f CONFIG``) on a free ``127.0.0.1`` port, with everything it needs inside one temporary
directory: its own ed25519 host key (or one given), an optional host certificate, an optional
``TrustedUserCAKeys`` file (the cluster's user CA: the agentless-node recipe) and an optional
``AuthorizedKeysFile`` (plain key authentication, for the OpenSSH baselines).
:meth:`SshdServer.stop` ends the daemon and the per-connection processes it forked, by PID.

Users: as root, ``root`` may log in (and any other local account). As an ordinary user sshd
cannot switch users, so only the current user can log in; :attr:`SshdServer.login` names the
account that works either way.

Missing binaries raise :class:`SshdUnavailable`: tests skip on it, except under ``CI=true``
where :func:`bastion.testing.missing_peer` says they must fail (STYLE.md: CI installs its peers).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bastion.testing.peers.ports import free_port

__all__ = [
    "SshdServer",
    "SshdUnavailable",
    "find_ssh_binary",
    "find_sshd",
    "generate_key",
    "local_login",
    "start_sshd",
]

START_TIMEOUT = 15.0
"""Seconds for sshd to accept connections and send its banner."""
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin")


class SshdUnavailable(RuntimeError):
    """The OpenSSH server or a client tool is not installed (tests skip, or fail under CI)."""


def find_sshd() -> str:
    """Absolute path of ``sshd`` (it refuses to start from a relative path: it re-executes).

    Raises:
        SshdUnavailable: not on PATH nor in the usual sbin directories.
    """
    found = shutil.which("sshd")
    if found:
        return os.path.abspath(found)
    for directory in _SBIN:
        candidate = os.path.join(directory, "sshd")
        if os.access(candidate, os.X_OK):
            return candidate
    raise SshdUnavailable("OpenSSH server 'sshd' not found; install openssh-server")


def find_ssh_binary(name: str) -> str:
    """Absolute path of an OpenSSH client tool (``ssh``, ``scp``, ``ssh-keygen``).

    Raises:
        SshdUnavailable: not installed.
    """
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    raise SshdUnavailable(f"OpenSSH tool {name!r} not found; install openssh-client")


def local_login() -> str:
    """The account a test sshd accepts: ``root`` as root, else the current user."""
    return "root" if os.geteuid() == 0 else getpass.getuser()


def generate_key(path: Path, comment: str = "bastion-test") -> str:
    """Write a new ed25519 key pair at ``path`` / ``path.pub`` (no passphrase); returns the
    public key line.

    Raises:
        SshdUnavailable: ``ssh-keygen`` is missing.
        RuntimeError: ssh-keygen failed.
    """
    keygen = find_ssh_binary("ssh-keygen")
    path.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ssh-keygen failed: {done.stderr.strip()}")
    path.chmod(0o600)
    return Path(f"{path}.pub").read_text().strip()


@dataclass
class SshdServer:
    """A running sshd. ``host_key_pub`` is the host's public key line (``ssh-ed25519 AAAA..``)."""

    port: int
    host_key: Path
    host_key_pub: str
    root: Path
    log: Path
    proc: subprocess.Popen[bytes] = field(repr=False)
    host: str = "127.0.0.1"
    login: str = field(default_factory=local_login)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def known_hosts_line(self) -> str:
        """A ``known_hosts`` line pinning this server's plain host key at its address."""
        return f"[{self.host}]:{self.port} {self.host_key_pub}"

    def output(self) -> str:
        """sshd's log so far (``-e``: everything it would send to syslog)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """Stop sshd and the per-connection processes it forked (they call setsid(), so a
        process group signal would miss them). Safe to call twice."""
        # Only sshd's own per-connection processes: signalling the users' shells could kill a
        # command halfway (e.g. a rehash holding a lock file).
        children = [p for p in _descendants(self.proc.pid) if _comm(p) == "sshd"]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        for pid in children:
            _signal(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in children):
            time.sleep(0.05)
        for pid in children:
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _descendants(root_pid: int) -> list[int]:
    """PIDs of every live descendant of ``root_pid`` (Linux /proc; empty elsewhere)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [root_pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _config_text(
    port: int,
    root: Path,
    host_key: Path,
    host_cert: Path | None,
    trusted_user_ca: Path | None,
    authorized_keys: Path,
    extra: Mapping[str, str],
) -> str:
    options: dict[str, str] = {
        "ListenAddress": f"127.0.0.1:{port}",
        "HostKey": str(host_key),
        "PidFile": str(root / "sshd.pid"),
        "AuthorizedKeysFile": str(authorized_keys),
        "UsePAM": "no",
        "StrictModes": "no",
        "PermitRootLogin": "yes",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "PubkeyAuthentication": "yes",
        "AllowTcpForwarding": "yes",
        "PrintMotd": "no",
        "PrintLastLog": "no",
        "UseDNS": "no",
        "LogLevel": "VERBOSE",
        "Subsystem": "sftp internal-sftp",
        "MaxStartups": "100:30:400",
        "MaxSessions": "50",
        "LoginGraceTime": "30",
        # A login shell of root may run `pyenv rehash` from ~/.bashrc; killing it at teardown
        # leaves pyenv's lock behind and every later shell waits 60 s for it. Bound that wait.
        "SetEnv": "PYENV_REHASH_TIMEOUT=1",
    }
    if host_cert is not None:
        options["HostCertificate"] = str(host_cert)
    if trusted_user_ca is not None:
        options["TrustedUserCAKeys"] = str(trusted_user_ca)
    options.update(extra)
    lines = [f"# generated by bastion.testing.peers.sshd for {root}"]
    lines += [f"{key} {value}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def start_sshd(
    tmpdir: str | os.PathLike[str],
    *,
    trusted_user_ca: str | None = None,
    host_key: Path | None = None,
    host_cert: str | None = None,
    authorized_keys: str | None = None,
    extra: Mapping[str, str] | None = None,
    attempts: int = 3,
) -> SshdServer:
    """Start sshd in a fresh directory under ``tmpdir``.

    Args:
        trusted_user_ca: ``TrustedUserCAKeys`` content (``bctl auth export --type=user``);
            ``None`` = certificates are not accepted.
        host_key: an existing private host key (its ``.pub`` beside it); ``None`` = a new one.
        host_cert: ``HostCertificate`` content (``PREFIX-cert.pub`` of ``bctl auth sign``) for
            ``host_key``; ``None`` = plain host key only.
        authorized_keys: ``AuthorizedKeysFile`` content for plain key logins; ``None`` = empty.
        extra: more ``sshd_config`` options (override the defaults above by name).

    Raises:
        SshdUnavailable: sshd or ssh-keygen is not installed.
        RuntimeError: sshd did not come up (the message holds its log).
    """
    sshd = find_sshd()
    root = Path(tempfile.mkdtemp(prefix="sshd-", dir=tmpdir))
    if host_key is None:
        host_key = root / "ssh_host_ed25519_key"
        generate_key(host_key, "bastion-test-host")
    host_key_pub = Path(f"{host_key}.pub").read_text().strip()
    cert_path = ca_path = None
    if host_cert is not None:
        cert_path = root / "ssh_host_ed25519_key-cert.pub"
        cert_path.write_text(host_cert.strip() + "\n")
    if trusted_user_ca is not None:
        ca_path = root / "trusted_user_ca.pub"
        ca_path.write_text(trusted_user_ca.strip() + "\n")
    keys_path = root / "authorized_keys"
    keys_path.write_text((authorized_keys or "").strip() + "\n")
    keys_path.chmod(0o600)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    last = ""
    for attempt in range(attempts):
        port = free_port()
        config = root / "sshd_config"
        config.write_text(
            _config_text(port, root, host_key, cert_path, ca_path, keys_path, extra or {})
        )
        log = root / f"sshd-{attempt}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
        server = SshdServer(port, host_key, host_key_pub, root, log, proc)
        if _wait_ready(server):
            return server
        last = server.output()
        server.stop()
    raise RuntimeError(f"sshd did not start after {attempts} attempts:\n{last[-3000:]}")


def _wait_ready(server: SshdServer) -> bool:
    """Poll until sshd sends its ``SSH-2.0`` banner; False when it exited or timed out."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            with socket.create_connection((server.host, server.port), timeout=2) as sock:
                sock.settimeout(2)
                if sock.recv(64).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
