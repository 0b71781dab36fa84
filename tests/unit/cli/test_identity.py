"""Which identity bctl picks: data dir, bsh profile, ./bastion-data, or a helpful error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bastion.cli.identity import resolve_identity
from bastion.client.profile import ProfileStore
from bastion.errors import AuthenticationFailed, NotFound


def _admin_dir(data: Path, addr: str) -> None:
    admin = data / "admin"
    admin.mkdir(parents=True)
    (admin / "profile.json").write_text(json.dumps({"addr": addr, "cluster": "c1"}))
    (admin / "ca.pem").write_text("PEM")


def _profile(home: Path, expires: datetime) -> ProfileStore:
    d = home / "profiles" / "c2"
    d.mkdir(parents=True)
    (d / "profile.json").write_text(
        json.dumps(
            {
                "name": "c2",
                "proxy": "p:3025",
                "user": "bob",
                "cluster": "c2",
                "expires": expires.isoformat(),
            }
        )
    )
    (d / "ca.pem").write_text("PEM2")
    (home / "current").write_text("c2")
    return ProfileStore(home)


def test_data_dir_wins(tmp_path: Path) -> None:
    _admin_dir(tmp_path / "data", "127.0.0.1:1")
    store = _profile(tmp_path / "home", datetime.now(UTC) + timedelta(hours=1))
    ident = resolve_identity(str(tmp_path / "data"), None, store)
    assert (ident.addr, ident.cluster, ident.ca_pem) == ("127.0.0.1:1", "c1", "PEM")
    assert ident.cert.name == "identity.crt" and "local admin" in ident.source


def test_config_names_the_data_dir(tmp_path: Path) -> None:
    _admin_dir(tmp_path / "data", "127.0.0.1:2")
    config = tmp_path / "bastion.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\n")
    assert resolve_identity(None, str(config), ProfileStore(tmp_path / "h")).addr == "127.0.0.1:2"


def test_profile_then_expired(tmp_path: Path) -> None:
    store = _profile(tmp_path / "home", datetime.now(UTC) + timedelta(hours=1))
    ident = resolve_identity(None, None, store)
    assert (ident.addr, ident.cert.name, ident.ca_pem) == ("p:3025", "tls.crt", "PEM2")
    expired = _profile(tmp_path / "old", datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(AuthenticationFailed, match="expired.*bsh login --proxy=p:3025"):
        resolve_identity(None, None, expired)


def test_default_data_dir_then_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFound, match="--data-dir DIR.*bsh login"):
        resolve_identity(None, None, ProfileStore(tmp_path / "h"))
    _admin_dir(tmp_path / "bastion-data", "127.0.0.1:3")
    assert resolve_identity(None, None, ProfileStore(tmp_path / "h")).addr == "127.0.0.1:3"
    with pytest.raises(NotFound, match="no local admin identity"):
        resolve_identity(str(tmp_path / "nowhere"), None)
