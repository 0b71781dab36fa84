"""Plain OpenSSH to a leaf cluster's nodes through this (root) cluster: ``ssh NODE.LEAF``.

Layer: client edge (stdlib only, like :mod:`bastion.cli.proxy_fast`, which hands it its
``argv``: OpenSSH starts these commands on every connection). docs/trusted-clusters.md.

A leaf node accepts only certificates its own cluster signed, so each leaf has its own files in
the root profile, ``PROFILE/leaves/LEAF/``: ``key-cert.pub`` (a leaf certificate over the
profile's own key: the leaf mapped the user's roles and issued it, ``op: certs``),
``known_hosts`` (``@cert-authority *.LEAF`` with the leaf's host CA) and ``cert.json`` (its
expiry, and which root certificate it was fetched with). ``bsh config`` writes, per leaf::

    Match host *.LEAF exec "FRESH-TEST || bsh proxy leaf-cert --cluster=ROOT LEAF"
    Host *.LEAF
        ProxyCommand bsh proxy ssh --cluster=ROOT --leaf=LEAF %r@%h:%p
        CertificateFile PROFILE/leaves/LEAF/key-cert.pub ...

``Match exec`` runs while OpenSSH reads its configuration, before it loads the certificate, so a
stale or missing leaf certificate is fetched first (one route to the root proxy; when fresh, a
shell test over the ``fresh`` file only: see :func:`render_leaf_config`). The ProxyCommand
sends ``{"cluster": LEAF, "node": ..., "login": ..., "port": ...}`` to the root proxy, which
relays it through the leaf's tunnel (the leaf decides), then copies bytes like ``bsh proxy
ssh``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bastion.cli.proxy_fast import ProxyError, dial, profile_dir, pump, split_home

__all__ = [
    "cert_fresh",
    "ensure_leaf_cert",
    "fetch_leaf_cert",
    "find_leaf",
    "leaf_dir",
    "leaf_request",
    "main",
    "parse_leaf_args",
    "render_leaf_config",
    "split_leaf_target",
]

MAX_CERT_REPLY = 64 * 1024
MFA_MARKER = "mfa"
"""In ``leaves/LEAF/``: the leaf said the user's roles may require per-session MFA there."""
SESSION_FILE = "session.json"
"""In ``leaves/LEAF/``: the root per-session certificate for the next route (one use)."""
FRESH_MARGIN = timedelta(seconds=60)
"""A leaf certificate expiring sooner than this is fetched again."""


def leaf_dir(pdir: Path, leaf: str) -> Path:
    """Where the root profile ``pdir`` keeps the leaf ``leaf``'s certificate and host CA.

    Raises:
        ProxyError: ``leaf`` is not a plain cluster name (no path tricks).
    """
    if not leaf or leaf.startswith(".") or "/" in leaf or "\\" in leaf or len(leaf) > 253:
        raise ProxyError(f"invalid cluster name {leaf!r}", 2)
    return pdir / "leaves" / leaf


def leaf_request(leaf: str, **fields: object) -> bytes:
    """A route request line naming the leaf cluster (newline included)."""
    return json.dumps({"cluster": leaf, **fields}).encode() + b"\n"


def parse_leaf_args(argv: list[str]) -> tuple[str | None, str | None, str, str, str] | None:
    """``[--home H] proxy ssh --cluster ROOT --leaf LEAF TARGET`` or ``[--home H] proxy
    leaf-cert --cluster ROOT [--target LOGIN@HOST] LEAF`` -> ``(home, root, leaf, target,
    op)`` with op ``ssh`` or ``cert``; None for anything else (the full CLI answers)."""
    home, args = split_home(argv)
    if args[:1] != ["proxy"] or len(args) < 2 or args[1] not in ("ssh", "leaf-cert"):
        return None
    op = "ssh" if args[1] == "ssh" else "cert"
    values: dict[str, str] = {}
    positional: list[str] = []
    rest = args[2:]
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.partition("=")
        if name in ("--cluster", "--leaf", "--target"):
            if not eq:
                if not rest:
                    return None
                value = rest.pop(0)
            values[name[2:]] = value
        elif arg.startswith("-"):
            return None  # --help and friends
        else:
            positional.append(arg)
    if len(positional) != 1:
        return None
    if op == "cert":
        return home, values.get("cluster"), positional[0], values.get("target", ""), op
    if not values.get("leaf"):
        return None
    return home, values.get("cluster"), values["leaf"], positional[0], op


def split_leaf_target(target: str, leaf: str, root: str) -> tuple[str, str, int]:
    """``LOGIN@NODE.LEAF[.ROOT]:PORT`` -> ``(login, node, port)`` (pure).

    Raises:
        ProxyError: no login, a bad port or no node.
    """
    login, at, host_port = target.rpartition("@")
    if not at or not login:
        raise ProxyError(f"invalid target {target!r}: expected LOGIN@HOST:PORT", 2)
    host, sep, port_text = host_port.rpartition(":")
    if not sep:
        host, port_text = host_port, "22"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ProxyError(f"invalid port {port_text!r} in {target!r}", 2)
    host = host.strip("[]")
    for suffix in (f".{leaf}.{root}" if root else "", f".{leaf}"):
        if suffix and host.lower().endswith(suffix.lower()) and len(host) > len(suffix):
            host = host[: -len(suffix)]
            break
    if not host or host.lower() in (leaf.lower(), f"{leaf}.{root}".lower()):
        raise ProxyError(f"name a node: ssh NODE.{leaf}, not {host_port!r}", 2)
    return login, host, int(port_text)


def _root_cert_digest(pdir: Path) -> str:
    try:
        return hashlib.sha256((pdir / "key-cert.pub").read_bytes()).hexdigest()
    except FileNotFoundError:
        raise ProxyError(f"no SSH certificate in {pdir}: run bsh login", 4) from None


def cert_fresh(pdir: Path, leaf: str, now: datetime) -> bool:
    """Is the stored leaf certificate good for a while yet, and from the current root login
    (and not a per-session one)?"""
    d = leaf_dir(pdir, leaf)
    try:
        meta = json.loads((d / "cert.json").read_text())
        expires = datetime.fromisoformat(str(meta["expires"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return False
    if meta.get("session"):
        return False
    if not (d / "key-cert.pub").exists() or not (d / "known_hosts").exists():
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires - FRESH_MARGIN > now and meta.get("root_cert") == _root_cert_digest(pdir)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def fetch_leaf_cert(pdir: Path, leaf: str, cert_pem: str | None = None) -> dict[str, object]:
    """Ask the leaf (through the root proxy; with ``cert_pem``, a root per-session certificate,
    instead of the login one) for a certificate over the profile's key; write
    ``leaves/LEAF/``. Returns the leaf's answer (user, roles, logins, expires).

    Raises:
        ProxyError: the root or the leaf refused (the message says why), or no logins.
    """
    digest = _root_cert_digest(pdir)
    sock, reply, _ = dial(pdir, leaf_request(leaf, op="certs"), MAX_CERT_REPLY, cert_pem=cert_pem)
    sock.close()
    cert, host_cas = reply.get("ssh_cert"), reply.get("ssh_host_ca")
    if not cert or not isinstance(cert, str):
        raise ProxyError(f"cluster {leaf} gives you no logins (its roles grant none)", 3)
    if not isinstance(host_cas, list) or not host_cas:
        raise ProxyError(f"cluster {leaf} sent no host CA", 7)
    d = leaf_dir(pdir, leaf)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(d / "key-cert.pub", cert.strip() + "\n")
    lines = [f"@cert-authority *.{leaf},{leaf} {str(k).strip()}" for k in host_cas]
    _write_private(d / "known_hosts", "\n".join(lines) + "\n")
    meta = {"expires": str(reply.get("expires", "")), "root_cert": digest}
    _write_private(d / "cert.json", json.dumps(meta) + "\n")
    if reply.get("session_mfa"):  # bsh config's Match exec then asks for each target
        _write_private(d / MFA_MARKER, "per-session MFA may be required\n")
    else:
        (d / MFA_MARKER).unlink(missing_ok=True)
    try:  # for bsh config's Match exec: "fresh until" in epoch seconds (see render_leaf_config)
        until = datetime.fromisoformat(str(reply.get("expires"))) - FRESH_MARGIN
        _write_private(d / "fresh", f"{int(until.timestamp())}\n")
    except ValueError:
        (d / "fresh").unlink(missing_ok=True)
    return reply


def ensure_leaf_cert(pdir: Path, leaf: str, *, force: bool = False, target: str = "") -> bool:
    """Fetch the leaf certificate when missing, stale, per-session or from an older root login.
    With ``target`` (``LOGIN@HOST``, from ``Match exec``) on a leaf that said the user's roles
    may require per-session MFA (its ``certs`` answer), ask the leaf about that target and run
    the ceremony when it is required (:func:`session_leaf_cert`). Returns whether it fetched
    a certificate."""
    d = leaf_dir(pdir, leaf)
    (d / SESSION_FILE).unlink(missing_ok=True)
    fetched = force or not cert_fresh(pdir, leaf, datetime.now(UTC))
    if fetched:
        fetch_leaf_cert(pdir, leaf)
    if target and (d / MFA_MARKER).exists():
        login, node, _ = split_leaf_target(target, leaf, _root_name(pdir))
        sock, reply, _ = dial(pdir, leaf_request(leaf, op="mfa", node=node, login=login))
        sock.close()
        if reply.get("mfa_required"):
            session_leaf_cert(pdir, leaf, node, login)
            return True
    return fetched


def _root_name(pdir: Path) -> str:
    try:
        return str(json.loads((pdir / "profile.json").read_text()).get("cluster", ""))
    except FileNotFoundError:
        raise ProxyError(f"no profile {pdir.name!r}: run bsh login", 4) from None


def _tty_solver(origin: str, pdir: Path) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The security key answers; the prompt goes to the terminal (``/dev/tty``): OpenSSH
    runs ``Match exec`` with stdin and stdout on ``/dev/null``."""
    from bastion.client.mfa import solve

    def run(options: dict[str, Any]) -> dict[str, Any]:
        text = "per-session MFA: touch your security key\n"
        try:
            with open("/dev/tty", "w") as tty:
                tty.write(text)
        except OSError:
            sys.stderr.write(text)
        return solve(options, origin, profile_dir=pdir)

    return run


def session_leaf_cert(pdir: Path, leaf: str, node: str, login: str) -> None:
    """The per-session MFA ceremony for ``login@node`` of ``leaf`` (as ``bsh ssh --cluster``
    runs it): the root signs a 1-minute certificate scoped to that leaf, node and login; with
    it the leaf issues a leaf certificate carrying the MFA (``key-cert.pub``, for this
    connection), and the ProxyCommand presents it for the route (``session.json``, used once).

    Raises:
        ProxyError: the ceremony failed (no security key, refused) or the leaf refused.
    """
    import asyncio

    from bastion.client.mfa import origin_for
    from bastion.client.profile import ProfileStore
    from bastion.client.session_mfa import session_credentials
    from bastion.errors import BastionError

    try:
        profile = ProfileStore(pdir.parent.parent).load(pdir.name)
        solver = _tty_solver(origin_for(profile.proxy), pdir)
        creds = asyncio.run(session_credentials(profile, node, login, solver, cluster=leaf))
    except BastionError as exc:
        raise ProxyError(f"per-session MFA for {login}@{node}.{leaf}: {exc.message}", 3) from None
    if creds is None:  # the root always asks for a leaf target; fail closed
        raise ProxyError(f"the root cluster did not run the MFA ceremony for {leaf}", 3)
    fetch_leaf_cert(pdir, leaf, cert_pem=creds.tls_cert)
    d = leaf_dir(pdir, leaf)
    meta = json.loads((d / "cert.json").read_text())
    _write_private(d / "cert.json", json.dumps({**meta, "session": f"{login}@{node}"}) + "\n")
    (d / "fresh").unlink(missing_ok=True)
    session = {"node": node, "login": login, "expires": creds.expires, "tls_cert": creds.tls_cert}
    _write_private(d / SESSION_FILE, json.dumps(session) + "\n")


def _session_cert(pdir: Path, leaf: str, node: str, login: str) -> str | None:
    """The root per-session certificate ``session_leaf_cert`` left for this target (then
    removed: one connection), or None."""
    path = leaf_dir(pdir, leaf) / SESSION_FILE
    try:
        session = json.loads(path.read_text())
        path.unlink()
        expires = datetime.fromisoformat(str(session["expires"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if (session.get("node"), session.get("login")) != (node, login) or expires <= datetime.now(UTC):
        return None
    cert = session.get("tls_cert")
    return cert if isinstance(cert, str) else None


def find_leaf(pdir: Path, host: str, root: str) -> str | None:
    """The leaf cluster ``host`` (``NODE.LEAF`` or ``NODE.LEAF.ROOT``) names, among the leaves
    this profile knows (``bsh clusters`` and ``bsh config`` record them); None: not a leaf's."""
    try:
        known = [d.name for d in (pdir / "leaves").iterdir() if d.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return None
    lowered = host.lower()
    for leaf in sorted(known, key=len, reverse=True):
        for suffix in (f".{leaf}.{root}", f".{leaf}"):
            if lowered.endswith(suffix.lower()) and len(host) > len(suffix):
                return leaf
    return None


def render_leaf_config(
    root: str, leaf: str, profile_dir: Path, bsh: str, home: str | None, ciphers: str, algs: str
) -> str:
    """The OpenSSH block for ``ssh NODE.LEAF`` (pure; see the module doc). It goes before the
    root's own block: OpenSSH keeps the first value of each option.

    The ``Match exec`` test is a shell one-liner (a few milliseconds, where starting Python is
    a tenth of a second on every connection): the stored certificate is fresh while the
    ``fresh`` file (epoch seconds) is in the future and newer than the root certificate (a new
    ``bsh login`` makes a new key); otherwise ``bsh proxy leaf-cert`` fetches one."""
    d = leaf_dir(profile_dir, leaf)
    home_opt = f' --home="{home}"' if home else ""
    exec_home = f" --home='{home}'" if home else ""
    fresh, root_cert = f"'{d / 'fresh'}'", f"'{profile_dir / 'key-cert.pub'}'"
    mfa = f"'{d / MFA_MARKER}'"
    check = f"[ ! -e {mfa} ] && [ {fresh} -nt {root_cert} ] && [ $(date +%%s) -lt $(cat {fresh}) ]"

    def q(value: Path) -> str:
        text = str(value)
        return f'"{text}"' if any(c.isspace() for c in text) else text

    return (
        f"# Bastion leaf cluster {leaf} through {root} (generated by bsh config)\n"
        f"Match host *.{leaf} exec \"{check} 2>/dev/null || '{bsh}'{exec_home} proxy leaf-cert "
        f'--cluster={root} --target=%r@%h {leaf}"\n'
        f"Host *.{leaf}\n"
        f"    Port 22\n"
        f'    ProxyCommand "{bsh}"{home_opt} proxy ssh --cluster={root} --leaf={leaf} %r@%h:%p\n'
        f"    IdentityFile {q(profile_dir / 'key')}\n"
        f"    CertificateFile {q(d / 'key-cert.pub')}\n"
        f"    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {q(d / 'known_hosts')}\n"
        f"    StrictHostKeyChecking yes\n"
        f"    HostKeyAlgorithms {algs}\n"
        f"    Ciphers {ciphers}\n"
    )


def _run_ssh(pdir: Path, leaf: str, target: str) -> int:
    try:
        root = str(json.loads((pdir / "profile.json").read_text()).get("cluster", ""))
    except FileNotFoundError:
        raise ProxyError(f"no profile {pdir.name!r}: run bsh login", 4) from None
    login, node, port = split_leaf_target(target, leaf, root)
    request = leaf_request(leaf, node=node, login=login, port=port)
    sock, _, early = dial(pdir, request, cert_pem=_session_cert(pdir, leaf, node, login))
    try:
        pump(sock, early, sys.stdin.fileno(), sys.stdout.fileno())
    except OSError as exc:
        raise ProxyError(f"the connection to {node}.{leaf} ended: {exc}", 7) from None
    finally:
        sock.close()
    return 0


def main(argv: list[str]) -> int | None:
    """``proxy ssh --leaf=LEAF`` (the ProxyCommand) or ``proxy leaf-cert LEAF`` (``Match
    exec``: always exits 0, so OpenSSH goes on and reports its own error when there is no
    certificate; the reason is on stderr). None: not for this module."""
    parsed = parse_leaf_args(argv)
    if parsed is None:
        return None
    home, root, leaf, target, op = parsed
    try:
        pdir = profile_dir(home, root)
        if op == "cert":
            ensure_leaf_cert(pdir, leaf, target=target)
            return 0
        return _run_ssh(pdir, leaf, target)
    except ProxyError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 0 if op == "cert" else exc.code
    except OSError as exc:
        sys.stderr.write(f"error: cluster {leaf}: {exc}\n")
        return 0 if op == "cert" else 7
    except KeyboardInterrupt:
        return 130
