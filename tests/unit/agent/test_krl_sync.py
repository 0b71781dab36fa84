"""Tests for bastion.agent.krl_sync: accept only trusted, newer KRLs; report staleness."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from bastion.agent.krl_sync import KrlSync, check_published, load_trusted_keys
from bastion.ca.keys import generate_private_key, public_key_to_openssh
from bastion.ca.krl import build_krl, parse_krl, sign_krl
from bastion.errors import AccessDenied, BadParameter, ConnectionProblem, RemoteProtocolError

CA = generate_private_key("ed25519")
OTHER = generate_private_key("ed25519")


def doc(version: int, signer: Any = CA, key_ids: tuple[str, ...] = ("eve",)) -> dict[str, Any]:
    data = build_krl([CA.public_key()], key_ids, version=version, generated=1_700_000_000)
    return {
        "krl": base64.b64encode(data).decode(),
        "signature": sign_krl(data, signer),
        "version": version,
        "key_ids": list(key_ids),
        "unenforced_locks": ["l-node"],
    }


def test_check_published_accepts_trusted_and_refuses_the_rest() -> None:
    data, krl = check_published(doc(5), [CA.public_key()], None)
    assert krl.version == 5 and parse_krl(data) == krl
    with pytest.raises(AccessDenied, match="not a trusted"):
        check_published(doc(5, signer=OTHER), [CA.public_key()], None)
    with pytest.raises(AccessDenied, match="older"):
        check_published(doc(4), [CA.public_key()], krl)
    lying = {**doc(6), "version": 7}
    with pytest.raises(RemoteProtocolError, match="announced"):
        check_published(lying, [CA.public_key()], None)
    with pytest.raises(RemoteProtocolError):
        check_published({"krl": "!!"}, [CA.public_key()], None)


def test_load_trusted_keys() -> None:
    text = f"# comment\n{public_key_to_openssh(CA.public_key())}\n\n"
    assert load_trusted_keys(text) == [CA.public_key()]
    with pytest.raises(BadParameter):
        load_trusted_keys("# nothing\n")


async def test_sync_installs_then_keeps_last_krl_and_goes_stale(tmp_path: Path) -> None:
    answers: list[Any] = [doc(10), ConnectionProblem("auth down"), doc(9)]
    now = [2_000_000_000.0]

    async def fetch() -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    out, status_file = tmp_path / "krl", tmp_path / "status.json"
    sync = KrlSync(fetch, [CA.public_key()], out, status_file, period=30, now=lambda: now[0])
    assert sync.status().stale  # nothing installed yet
    first = await sync.sync_once()
    assert first.ok and first.version == 10 and not first.stale
    assert json.loads(status_file.read_text())["unenforced_locks"] == ["l-node"]
    installed = out.read_bytes()

    now[0] += 60  # two periods: old but not yet stale
    down = await sync.sync_once()
    assert not down.ok and "auth down" in down.last_error and not down.stale
    assert down.version == 10 and down.age_seconds == 60 and out.read_bytes() == installed

    now[0] += 60  # four periods > 3: stale, and a rollback is refused
    rollback = await sync.sync_once()
    assert not rollback.ok and "older" in rollback.last_error and rollback.stale
    assert out.read_bytes() == installed
    assert json.loads(status_file.read_text())["stale"] is True


def test_period_must_be_positive(tmp_path: Path) -> None:
    async def fetch() -> Any:
        return None

    with pytest.raises(BadParameter):
        KrlSync(fetch, [CA.public_key()], tmp_path / "krl", None, period=0)
