import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bastion.cli.bbot_start import (
    Issued,
    backoff_cap,
    backoff_delay,
    load_config,
    renew_delay,
    write_outputs,
)
from bastion.errors import BadParameter
from bastion.testing import new_public_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_renew_at_a_third_of_the_lifetime_left_with_jitter() -> None:
    end = T0 + timedelta(hours=1)
    assert renew_delay(T0, end, T0, 1 / 3, 0.1, 0.0) == pytest.approx(40 * 60)
    assert renew_delay(T0, end, T0, 1 / 3, 0.1, 0.999) == pytest.approx(36 * 60, rel=0.01)
    assert renew_delay(T0, end, end, 1 / 3, 0.1, 0.5) == 0.0


def test_backoff_is_capped() -> None:
    assert [round(backoff_delay(n, 1.0)) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_cap(timedelta(hours=1)) == 60 and backoff_cap(timedelta(minutes=1)) == 6
    assert backoff_cap(timedelta(seconds=5)) == 1
    assert backoff_delay(9, 1.0, backoff_cap(timedelta(minutes=1))) == 6


def test_config_file_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "bbot.yaml"
    cfg.write_text("proxy: p:3080\ndest: /tmp/x\nttl: 2h\n")
    loaded = load_config(str(cfg), {"ttl": "30m", "oneshot": True, "token": None})
    assert loaded.ttl == timedelta(minutes=30) and loaded.oneshot and loaded.proxy == "p:3080"
    cfg.write_text("proxy: p\ndest: d\noutputs: [database]\n")
    with pytest.raises(BadParameter, match="outputs"):
        load_config(str(cfg), {})


def test_outputs_are_swapped_whole_with_private_files(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key, pub = new_public_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    ssh = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )  # fmt: skip
    certs = {
        "user": "bot-ci", "ssh_cert": "ssh-ed25519-cert-v01@openssh.com AAAA", "tls_cert": "C",
        "tls_host_ca": "H", "tls_user_ca": "U", "ssh_host_ca": ["ssh-ed25519 AAAAhost"],
        "expires": (T0 + timedelta(hours=1)).isoformat(), "generation": 1,
    }  # fmt: skip
    got = Issued(pem, ssh, pub, certs, "c.test", "p:3080", T0)
    write_outputs(tmp_path, got, ["ssh", "x509"])
    first = (tmp_path / "ssh").resolve()
    write_outputs(tmp_path, got, ["ssh", "x509"])
    assert (tmp_path / "ssh").resolve() != first  # a new directory, swapped in
    for name in ("state", "identity", "ssh", "x509"):
        assert (tmp_path / name).is_symlink()
    config = (tmp_path / "ssh" / "ssh_config").read_text()
    assert "Host *.c.test c.test" in config and "proxy ssh --cluster=c.test" in config
    assert (
        "@cert-authority *.c.test,c.test ssh-ed25519 AAAAhost"
        in (tmp_path / "ssh" / "known_hosts").read_text()
    )
    for path in (tmp_path / "ssh").resolve().iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "ssh").st_mode & 0o777 == 0o700
    assert (tmp_path / "identity" / "profiles" / "c.test" / "tls.crt").read_text() == "C"


def test_database_and_app_outputs_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bbot.yaml"
    cfg.write_text(
        "proxy: p:3080\ndest: d\napps: [grafana]\n"
        "databases: [orders, {name: pg, db_user: reader, db_name: app}]\n"
    )
    loaded = load_config(str(cfg), {"apps": (), "databases": ()})  # unset flags keep the file's
    assert loaded.apps == ["grafana"]
    assert [(d.name, d.db_user, d.db_name) for d in loaded.databases] == [
        ("orders", "", ""),
        ("pg", "reader", "app"),
    ]
    flagged = load_config(str(cfg), {"databases": ("orders:ro:main",)})
    assert [(d.name, d.db_user, d.db_name) for d in flagged.databases] == [("orders", "ro", "main")]
    for bad in ("databases: [../x]", "apps: [a/b]"):
        cfg.write_text(f"proxy: p\ndest: d\n{bad}\n")
        with pytest.raises(BadParameter, match="invalid database or app name"):
            load_config(str(cfg), {})


def test_routed_outputs_write_what_bsh_db_and_apps_login_write(tmp_path: Path) -> None:
    from bastion.cli.bbot_start import Routed, write_routed

    db = Routed("db", "orders", b"KEY", "CERT", "CA", "2026-01-01T01:00:00+00:00",
                db_user="reader", db_name="orders")  # fmt: skip
    app = Routed("app", "grafana", b"AK", "AC", "ACA", "x", public_addr="grafana.p.test:3080")
    write_routed(tmp_path, "p.test:3080", [db, app])
    d = (tmp_path / "db-orders").resolve()
    service = (tmp_path / "db-orders" / "pg_service.conf").read_text()
    assert service.startswith("[bastion-orders]\nhost=p.test\nport=3080\nuser=reader\n")
    assert f"sslcert={d}/orders.crt" in service and f"sslkey={d}/orders.key" in service
    assert (d / "orders.key").read_bytes() == b"KEY" and (d / "orders.ca").read_text() == "CA"
    meta = (tmp_path / "app-grafana" / "grafana.json").read_text()
    assert "https://grafana.p.test:3080/" in meta and "--cert" in meta
    for path in [*d.iterdir(), *(tmp_path / "app-grafana").resolve().iterdir()]:
        assert path.stat().st_mode & 0o777 == 0o600
