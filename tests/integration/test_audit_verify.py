"""The verifiable audit log end to end: a real daemon with a file witness, bctl audit checkpoint /
verify / proof / certs, and the SQLite file edited directly in each of the four ways (modify,
delete, reorder, insert): verify exits 1 and names the event (index, id, type)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from harness import Cluster, Env, run, start_cluster

from bastion.audit.witness import HttpWitness

PREFIX = "audit/events/"


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path, Path]]:
    work = tmp_path_factory.mktemp("audit")
    witness = work / "witness" / "checkpoint"
    config = work / "bastion.yaml"
    config.write_text(
        f"data_dir: {work / 'data'}\n"
        "auth_service:\n"
        "  audit:\n"
        "    checkpoint_interval: 3600\n"
        f"    witness: {witness}\n"
    )
    cluster = start_cluster(work, "-c", str(config))
    try:
        yield cluster, config, witness
    finally:
        cluster.stop()


def bctl(config: Path, home: Path, *args: str) -> tuple[int, str, str]:
    result = run("bctl", "-c", str(config), *args, home=home)
    return result.returncode, result.stdout, result.stderr


def key(i: int) -> str:
    return f"{PREFIX}{i:020d}"


class Store:
    """Direct edits of the daemon's SQLite file (what an intruder with file access does)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self) -> dict[str, bytes]:
        with sqlite3.connect(self.path) as db:
            return {
                k: bytes(v)
                for k, v in db.execute(
                    "SELECT key, value FROM kv WHERE key >= ? AND key < ?", (PREFIX, PREFIX + "~")
                )
            }

    def event(self, i: int) -> dict[str, object]:
        value: dict[str, object] = json.loads(self.rows()[key(i)])
        return value

    def execute(self, *statements: tuple[str, tuple[object, ...]]) -> None:
        with sqlite3.connect(self.path, timeout=10) as db:
            for sql, params in statements:
                db.execute(sql, params)

    def restore(self, snapshot: dict[str, bytes]) -> None:
        with sqlite3.connect(self.path, timeout=10) as db:
            db.execute("DELETE FROM kv WHERE key >= ? AND key < ?", (PREFIX, PREFIX + "~"))
            db.executemany(
                "INSERT INTO kv (key, value, expires, revision) VALUES (?, ?, NULL, 1)",
                list(snapshot.items()),
            )


def test_checkpoint_witness_verify_proof_and_certs(
    audited: tuple[Cluster, Path, Path], tmp_path: Path
) -> None:
    cluster, config, witness = audited
    env = Env(cluster, tmp_path)
    user = env.new_user("access", "alice")  # user.create, user.invite, cert.issued, ...
    code, out, err = bctl(config, tmp_path, "audit", "checkpoint", "--out", str(tmp_path / "cp"))
    assert code == 0, err
    origin = f"{cluster.cluster}/audit"
    assert out.startswith(origin + "\n") and "\u2014 " + origin in out and "verifier key:" in out
    assert witness.read_text() == (tmp_path / "cp").read_text()

    code, out, err = bctl(config, tmp_path, "audit", "verify")
    assert code == 0, err
    assert "OK: every event matches the signed checkpoints" in out

    env.admin_ok("users", "add", "later", "--roles=access")  # the log grows past the file
    assert bctl(config, tmp_path, "audit", "checkpoint")[0] == 0
    code, out, err = bctl(
        config,
        tmp_path,
        "audit",
        "verify",
        "--checkpoint",
        str(tmp_path / "cp"),
        "--format",
        "json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and any("consistency proof" in n for n in report["notes"])

    issued = json.loads(
        bctl(
            config,
            tmp_path,
            "audit",
            "certs",
            "--since",
            "1h",
            "--user",
            user.name,
            "--format",
            "json",
        )[1]
    )
    assert issued and issued[0]["user"] == user.name and issued[0]["principals"] == ["alice"]
    assert issued[0]["serial"].isdigit() and issued[0]["roles"] == ["access"]

    code, out, err = bctl(config, tmp_path, "audit", "proof", "--index", "1")
    assert code == 0, err
    assert "is included in the signed tree" in out and "verified" in out


@pytest.mark.parametrize("how", ["modify", "delete", "reorder", "insert"])
def test_verify_names_the_tampered_event(
    audited: tuple[Cluster, Path, Path], tmp_path: Path, how: str
) -> None:
    cluster, config, _ = audited
    env = Env(cluster, tmp_path)
    for i in range(3):
        env.admin_ok("users", "add", f"t{how}{i}", "--roles=access")
    assert bctl(config, tmp_path, "audit", "checkpoint")[0] == 0
    store = Store(cluster.data_dir / "backend.sqlite")
    snapshot = store.rows()
    n = len(snapshot)
    target = n - 4
    victim = store.event(target)
    try:
        if how == "modify":
            changed = {**victim, "user": "somebody-else"}
            store.execute(
                (
                    "UPDATE kv SET value = ? WHERE key = ?",
                    (json.dumps(changed).encode(), key(target)),
                )
            )
            expected = f"index {target} (id {victim['id']}, type {victim['type']}) was modified"
        elif how == "delete":
            store.execute(("DELETE FROM kv WHERE key = ?", (key(target),)))
            expected = f"index {target} (id {victim['id']}, type {victim['type']}) was deleted"
        elif how == "reorder":
            other = snapshot[key(target + 1)]
            store.execute(
                ("UPDATE kv SET value = ? WHERE key = ?", (other, key(target))),
                ("UPDATE kv SET value = ? WHERE key = ?", (snapshot[key(target)], key(target + 1))),
            )
            expected = f"index {target} (id {victim['id']}, type {victim['type']}) was reordered"
        else:
            shifts = [
                ("UPDATE kv SET key = ? WHERE key = ?", (key(i + 1), key(i)))
                for i in range(n - 1, target - 1, -1)
            ]
            forged = {**victim, "id": "forged-event", "type": "user.login", "user": "ghost"}
            store.execute(
                *shifts,
                (
                    "INSERT INTO kv (key, value, expires, revision) VALUES (?, ?, NULL, 1)",
                    (key(target), json.dumps(forged).encode()),
                ),
            )
            expected = f"index {target} (id forged-event, type user.login) was inserted"
        code, out, err = bctl(config, tmp_path, "audit", "verify")
        assert code == 1, out + err
        assert "audit log verification FAILED" in err
        assert expected in err, err
        assert "Traceback" not in err
    finally:
        store.restore(snapshot)
    code, out, err = bctl(config, tmp_path, "audit", "verify")
    assert code == 0, err


def test_http_witness_round_trip() -> None:
    async def go() -> None:
        held: list[str] = []

        async def post(request: web.Request) -> web.Response:
            held.append(await request.text())
            return web.Response(status=204)

        async def get(request: web.Request) -> web.Response:
            return web.Response(text=held[-1]) if held else web.Response(status=404)

        app = web.Application()
        app.router.add_post("/cp", post)
        app.router.add_get("/cp", get)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            w = HttpWitness(f"http://127.0.0.1:{port}/cp")
            assert await w.fetch() is None
            await w.publish("o\n1\nAAAA\n\n\u2014 o sig\n")
            assert await w.fetch() == "o\n1\nAAAA\n\n\u2014 o sig\n"
            bad = HttpWitness(f"http://127.0.0.1:{port}/missing")
            with pytest.raises(Exception, match="answered 405|answered 404"):
                await bad.publish("x")
        finally:
            await runner.cleanup()

    asyncio.run(go())


def test_shutdown_signs_the_last_events(tmp_path: Path) -> None:
    witness = tmp_path / "witness"
    config = tmp_path / "bastion.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"auth_service:\n  audit:\n    checkpoint_interval: 3600\n    witness: {witness}\n"
    )
    cluster = start_cluster(tmp_path, "-c", str(config))
    try:
        env = Env(cluster, tmp_path)
        env.admin_ok("users", "add", "late-user", "--roles=access")
    finally:
        cluster.stop()
    assert cluster.proc.returncode == 0, cluster.output()
    rows = Store(cluster.data_dir / "backend.sqlite").rows()
    size = int(witness.read_text().split("\n")[1])
    assert size == len(rows)  # every event, including the last ones, is signed and witnessed
    code, out, err = bctl(config, tmp_path, "audit", "verify")
    assert code == 0 and "OK" in out, err
