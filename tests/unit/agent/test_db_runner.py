"""Tests for bastion.agent.db_runner: the db_service config as db resources, heartbeats, and
streams that are not database streams."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bastion.agent.db_runner import DB_HEARTBEAT_INTERVAL, DbService, databases_from_config
from bastion.agent.db_service import DbClientCert
from bastion.clock import FakeClock
from bastion.config.schema import FileConfig
from bastion.errors import BadParameter, ConnectionProblem
from bastion.testing import make_auth, new_tls_key
from bastion.types.database import Database
from bastion.types.identity import Identity


def _config(tmp_path: Path, **tls: str) -> FileConfig:
    return FileConfig.model_validate(
        {
            "data_dir": str(tmp_path),
            "db_service": {
                "enabled": True,
                "databases": [
                    {
                        "name": "orders",
                        "uri": "db.internal:5432",
                        "labels": {"env": "prod"},
                        "commands": [
                            {"name": "role", "command": ["pg-role"], "period": "30s"},
                            {"name": "broken", "command": ["missing"]},
                        ],
                    },
                    {"name": "lab", "uri": "10.0.0.9:5433", "tls": tls},
                ],
            },
        }
    )


def test_databases_from_config(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("PEM")
    orders, lab = databases_from_config(
        _config(tmp_path, ca_file=str(ca), server_name="lab.internal"), "host-1"
    )
    assert orders.name == "orders"
    assert orders.all_labels() == {"env": "prod", "role": "", "broken": ""}  # not run yet
    assert orders.spec.dynamic_labels["role"].command == ["pg-role"]
    assert orders.spec.dynamic_labels["role"].period == "30s"
    assert lab.spec.dynamic_labels == {}
    assert orders.spec.host_id == "host-1" and orders.spec.tls.mode == "verify-full"
    assert lab.spec.tls.ca_pem == "PEM" and lab.spec.tls.server_name == "lab.internal"
    assert lab.address() == ("10.0.0.9", 5433)


def test_unreadable_ca_file_and_duplicate_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadParameter, match="ca_file"):
        databases_from_config(_config(tmp_path, ca_file=str(tmp_path / "missing")), "h")
    with pytest.raises(ValueError, match="unique"):
        FileConfig.model_validate(
            {
                "db_service": {
                    "databases": [{"name": "a", "uri": "h:1"}, {"name": "a", "uri": "h:2"}]
                }
            }
        )


async def _service(tmp_path: Path, send: Any, run: Any = None) -> DbService:
    fx = await make_auth(clock=FakeClock())
    key, pub = new_tls_key()
    ident = Identity(
        cluster="test.local",
        user="h1",
        kind="host",
        roles=("db",),
        host_id="h1",
        expires=fx.clock.now() + timedelta(days=1),
    )
    host = await fx.auth.issuer.issue_host(ident, pub, ["h1"], ["h1"], [], timedelta(days=1), "t")

    async def certs(db_user: str) -> DbClientCert:
        raise ConnectionProblem("not in this test")

    return DbService(
        name="h1",
        cluster="test.local",
        databases=databases_from_config(_config(tmp_path), "h1"),
        certs=certs,
        clock=fx.clock,
        proxy=("127.0.0.1", 3080),
        tls=(host.tls_cert, key.decode(), host.tls_host_ca),
        send_heartbeat=send,
        **({"command_runner": run} if run is not None else {}),
    )


async def test_heartbeat_announces_every_database_with_an_expiry(tmp_path: Path) -> None:
    sent: list[Database] = []

    async def send(db: Database) -> None:
        if db.name == "orders":
            raise ConnectionProblem("auth is down")  # logged; the others still go out
        sent.append(db)

    service = await _service(tmp_path, send)
    await service.heartbeat_once()
    assert [d.name for d in sent] == ["lab"]
    assert sent[0].metadata.expires == service.clock.now() + 3 * DB_HEARTBEAT_INTERVAL
    assert service.databases[1].metadata.expires is None  # the configured record is untouched


async def test_heartbeats_carry_the_dynamic_labels_latest_results(tmp_path: Path) -> None:
    sent: list[Database] = []
    answers = {"pg-role": "primary\nignored second line\n"}
    ran: list[str] = []

    async def send(db: Database) -> None:
        sent.append(db)

    async def run(argv: Any, time_limit: float) -> str:
        ran.append(argv[0])
        if argv[0] not in answers:
            raise OSError(f"{argv[0]}: not found")
        return answers[argv[0]]

    service = await _service(tmp_path, send, run)
    assert list(service.labels) == ["orders"]  # only the database with commands
    await service.run_labels_due()
    await service.heartbeat_once()
    orders = next(d for d in sent if d.name == "orders")
    assert orders.all_labels()["role"] == "primary" and orders.all_labels()["env"] == "prod"
    assert orders.all_labels()["broken"].startswith("error:")  # a failing label says so
    assert service.databases[0].spec.dynamic_labels["role"].result == ""  # config untouched

    # Due again after its period (30 s), not before; the next heartbeat has the new value.
    answers["pg-role"] = "replica"
    await service.run_labels_due()
    assert ran == ["pg-role", "missing"]
    service.clock.advance(timedelta(seconds=31))  # type: ignore[attr-defined]
    await service.run_labels_due()
    sent.clear()
    await service.heartbeat_once()
    assert next(d for d in sent if d.name == "orders").all_labels()["role"] == "replica"


async def test_a_stream_that_is_not_a_database_stream_is_closed(tmp_path: Path) -> None:
    async def send(db: Database) -> None:
        return None

    class Stream:
        closed = False

        def close(self) -> None:
            self.closed = True

    service = await _service(tmp_path, send)
    stream = Stream()
    await service._on_stream(stream, {"type": "ssh"})
    assert stream.closed


async def test_heartbeats_carry_the_version_a_mysql_server_greeted_with(tmp_path: Path) -> None:
    """After a session the agent knows the server's greeting version; the next heartbeat
    reports it (``bsh proxy db`` greets as that server), and the configured record is kept."""
    sent: list[Database] = []

    async def send(db: Database) -> None:
        sent.append(db)

    service = await _service(tmp_path, send)
    await service.heartbeat_once()
    assert all(d.spec.mysql_server_version == "" for d in sent)
    service.agent.server_versions["lab"] = "5.5.5-10.11.6-MariaDB-0+deb12u1"
    sent.clear()
    await service.heartbeat_once()
    lab = next(d for d in sent if d.name == "lab")
    assert lab.spec.mysql_server_version == "5.5.5-10.11.6-MariaDB-0+deb12u1"
    assert next(d for d in sent if d.name == "orders").spec.mysql_server_version == ""
    assert next(d for d in service.databases if d.name == "lab").spec.mysql_server_version == ""
