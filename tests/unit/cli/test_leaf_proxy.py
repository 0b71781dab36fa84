"""``ssh NODE.LEAF`` through the root (bastion.cli.leaf_proxy): the pure parts and the leaf
certificate's freshness on disk."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bastion.cli.leaf_proxy import (
    SESSION_FILE,
    _session_cert,
    cert_fresh,
    find_leaf,
    leaf_dir,
    leaf_request,
    parse_leaf_args,
    render_leaf_config,
    split_leaf_target,
)
from bastion.cli.proxy_fast import ProxyError
from bastion.cli.ssh_handoff import SSHArgs, ssh_argv


@pytest.mark.parametrize(
    ("argv", "parsed"),
    [
        (
            ["proxy", "ssh", "--cluster=r.t", "--leaf=l.t", "root@web1.l.t:22"],
            (None, "r.t", "l.t", "root@web1.l.t:22", "ssh"),
        ),
        (
            ["--home", "/h", "proxy", "ssh", "--leaf", "l.t", "root@web1.l.t:22"],
            ("/h", None, "l.t", "root@web1.l.t:22", "ssh"),
        ),
        (["proxy", "leaf-cert", "--cluster=r.t", "l.t"], (None, "r.t", "l.t", "", "cert")),
        (
            ["proxy", "leaf-cert", "--cluster=r.t", "--target=root@web1.l.t", "l.t"],
            (None, "r.t", "l.t", "root@web1.l.t", "cert"),
        ),
        (["proxy", "leaf-cert", "--force", "l.t"], None),  # the full CLI
        (["proxy", "ssh", "--cluster=r.t", "root@web1:22"], None),  # no leaf
        (["proxy", "ssh", "--leaf=l.t"], None),  # no target
        (["ls"], None),
    ],
)
def test_parse_leaf_args(argv: list[str], parsed: object) -> None:
    assert parse_leaf_args(argv) == parsed


def test_split_leaf_target() -> None:
    assert split_leaf_target("root@web1.l.t:2222", "l.t", "r.t") == ("root", "web1", 2222)
    assert split_leaf_target("root@web1.l.t.r.t:22", "l.t", "r.t") == ("root", "web1", 22)
    assert split_leaf_target("root@web1", "l.t", "r.t") == ("root", "web1", 22)
    for bad in ("web1.l.t:22", "root@l.t:22", "root@web1.l.t:x", "root@l.t.r.t:22"):
        with pytest.raises(ProxyError):
            split_leaf_target(bad, "l.t", "r.t")


def test_leaf_names_cannot_escape_the_profile(tmp_path: Path) -> None:
    assert leaf_dir(tmp_path, "l.t") == tmp_path / "leaves" / "l.t"
    for bad in ("", "..", "../x", "a/b", ".hidden"):
        with pytest.raises(ProxyError):
            leaf_dir(tmp_path, bad)
    assert json.loads(leaf_request("l.t", op="certs")) == {"cluster": "l.t", "op": "certs"}


def _profile(tmp_path: Path) -> Path:
    (tmp_path / "key-cert.pub").write_text("ssh-ed25519-cert-v01@openssh.com AAAA root\n")
    return tmp_path


def _store_leaf(pdir: Path, expires: datetime, root_cert: str | None = None) -> None:
    d = leaf_dir(pdir, "l.t")
    d.mkdir(parents=True)
    (d / "key-cert.pub").write_text("cert\n")
    (d / "known_hosts").write_text("@cert-authority *.l.t,l.t key\n")
    digest = root_cert or hashlib.sha256((pdir / "key-cert.pub").read_bytes()).hexdigest()
    (d / "cert.json").write_text(json.dumps({"expires": expires.isoformat(), "root_cert": digest}))


def test_cert_fresh(tmp_path: Path) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    pdir = _profile(tmp_path)
    assert not cert_fresh(pdir, "l.t", now)  # nothing stored
    _store_leaf(pdir, now + timedelta(hours=1))
    assert cert_fresh(pdir, "l.t", now)
    assert not cert_fresh(pdir, "l.t", now + timedelta(minutes=59, seconds=30))  # margin
    meta = json.loads((leaf_dir(pdir, "l.t") / "cert.json").read_text())
    (leaf_dir(pdir, "l.t") / "cert.json").write_text(json.dumps({**meta, "session": "x@y"}))
    assert not cert_fresh(pdir, "l.t", now)  # a per-session certificate: for one connection
    (leaf_dir(pdir, "l.t") / "cert.json").write_text(json.dumps(meta))
    (pdir / "key-cert.pub").write_text("a new root login\n")
    assert not cert_fresh(pdir, "l.t", now)  # fetched with an older root certificate


def test_the_session_certificate_is_for_one_route_to_its_target(tmp_path: Path) -> None:
    d = leaf_dir(tmp_path, "l.t")
    d.mkdir(parents=True)
    soon = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    stored = {"node": "web1", "login": "root", "expires": soon, "tls_cert": "PEM"}
    (d / SESSION_FILE).write_text(json.dumps(stored))
    assert _session_cert(tmp_path, "l.t", "web1", "root") == "PEM"
    assert _session_cert(tmp_path, "l.t", "web1", "root") is None  # used once
    (d / SESSION_FILE).write_text(json.dumps(stored))
    assert _session_cert(tmp_path, "l.t", "web2", "root") is None  # another target
    past = {**stored, "expires": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()}
    (d / SESSION_FILE).write_text(json.dumps(past))
    assert _session_cert(tmp_path, "l.t", "web1", "root") is None  # expired


def test_find_leaf(tmp_path: Path) -> None:
    assert find_leaf(tmp_path, "web1.l.t", "r.t") is None
    leaf_dir(tmp_path, "l.t").mkdir(parents=True)
    leaf_dir(tmp_path, "east.l.t").mkdir(parents=True)
    assert find_leaf(tmp_path, "web1.l.t", "r.t") == "l.t"
    assert find_leaf(tmp_path, "web1.east.l.t.r.t", "r.t") == "east.l.t"  # longest first
    assert find_leaf(tmp_path, "web1.r.t", "r.t") is None
    assert find_leaf(tmp_path, "l.t", "r.t") is None


def test_render_leaf_config() -> None:
    text = render_leaf_config("r.t", "l.t", Path("/p"), "/b/bsh", None, "aes128-ctr", "algs")
    match = text.splitlines()[1]
    assert match.startswith("Match host *.l.t exec \"[ ! -e '/p/leaves/l.t/mfa' ] && [ '/p/")
    assert "[ '/p/leaves/l.t/fresh' -nt '/p/key-cert.pub' ]" in match
    assert "$(date +%%s)" in match  # %% for OpenSSH's token expansion
    # the target (%r@%h) for a leaf that may require per-session MFA: the ceremony runs there
    assert match.endswith("|| '/b/bsh' proxy leaf-cert --cluster=r.t --target=%r@%h l.t\"")
    assert "Host *.l.t\n" in text
    assert '"/b/bsh" proxy ssh --cluster=r.t --leaf=l.t %r@%h:%p' in text
    assert "CertificateFile /p/leaves/l.t/key-cert.pub" in text
    assert "UserKnownHostsFile /p/leaves/l.t/known_hosts" in text
    assert "IdentityFile /p/key\n" in text
    homed = render_leaf_config("r.t", "l.t", Path("/p"), "/b/bsh", "/h", "c", "a")
    assert "--home='/h' proxy leaf-cert" in homed and '--home="/h" proxy ssh' in homed


def test_handoff_argv_for_a_leaf() -> None:
    argv = ssh_argv("ssh", "bsh", Path("/p"), "r.t", "web1", "root", SSHArgs("x"), leaf="l.t")
    assert "ProxyCommand=bsh proxy ssh --cluster=r.t --leaf=l.t %r@%h:%p" in argv
    assert "CertificateFile=/p/leaves/l.t/key-cert.pub" in argv
    assert "IdentityFile=/p/key" in argv and argv[-1] == "web1.l.t"
