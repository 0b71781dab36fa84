"""Moderated database sessions (issue 17): ``require_session_join`` with ``kinds: [db]`` applies
to database sessions. Until database sessions can be joined, the proxy fails closed: real
``psql`` through the real proxy and agent to a real PostgreSQL gets one clean 28000 line naming
the moderation, and the refusal is audited; an ``ssh``-only policy leaves databases alone."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion.testing import missing_peer, require_binary
from bastion.testing.db_rig import DbRig, start_db_rig
from bastion.testing.peers.postgres import PostgresUnavailable
from bastion.types.sessions import SessionRequirePolicy

pytestmark = [pytest.mark.integration, pytest.mark.needs_postgres]


async def _psql(conninfo: str, sql: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        require_binary("psql"), conninfo, "-X", "-Atc", sql,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[DbRig]:
    require_binary("psql")
    try:
        async with start_db_rig(tmp_path) as started:
            yield started
    except PostgresUnavailable as exc:
        missing_peer(str(exc))


async def _moderate(rig: DbRig, kinds: list[str]) -> None:
    auth = rig.certs._auth
    role = await auth.roles.get("dba")
    policy = SessionRequirePolicy.model_validate(
        {"name": "dual", "filter": "", "kinds": kinds, "modes": ["moderator"], "count": 1}
    )
    options = role.spec.options.model_copy(update={"require_session_join": [policy]})
    await auth.roles.update(
        role.model_copy(update={"spec": role.spec.model_copy(update={"options": options})})
    )


async def test_a_db_session_of_a_moderated_role_is_refused_cleanly(rig: DbRig) -> None:
    await _moderate(rig, ["ssh"])  # ssh only: databases are not moderated
    code, out, err = await _psql(await rig.login("alice_db", "alice"), "select 1")
    assert code == 0 and out.strip() == "1", err
    await _moderate(rig, ["db"])
    code, out, err = await _psql(await rig.login("alice_db", "alice2"), "select 1")
    assert code != 0 and out == ""
    assert 'database sessions of role "dba" must be moderated' in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    refusal = rig.audit.of("db.session.start")[-1]
    assert refusal["outcome"] == "failure" and "moderation" in refusal["reason"]
