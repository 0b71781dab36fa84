"""The S3 store against moto's standalone S3 server (a real HTTP S3 endpoint on loopback)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config.schema import RecordingStorageConfig
from bastion.errors import ConnectionProblem
from bastion.recording.factory import open_store
from bastion.recording.s3 import S3RecordingStore

sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "recording"))
from storecases import check_store, meta  # noqa: E402


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto import server as server_mod

    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _config(endpoint: str, bucket: str) -> RecordingStorageConfig:
    return RecordingStorageConfig(
        type="s3",
        bucket=bucket,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        prefix="rec/",
    )


async def test_s3_store(moto_endpoint: str, tmp_path: Path) -> None:
    bucket = f"unit-{uuid.uuid4().hex[:12]}"  # moto keeps buckets per process: our own one
    store = open_store(_config(moto_endpoint, bucket), tmp_path)
    assert isinstance(store, S3RecordingStore)
    store._s3.create_bucket(Bucket=bucket)
    await check_store(store, tmp_path)
    keys = [o["Key"] for o in store._s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 4 and all(k.startswith("rec/") for k in keys)


async def test_s3_lists_across_pages(moto_endpoint: str, tmp_path: Path) -> None:
    store = S3RecordingStore.from_config(_config(moto_endpoint, "paged"))
    store._s3.create_bucket(Bucket="paged")
    src = tmp_path / "x.cast"
    src.write_bytes(b"x")
    wanted = [meta(minutes=i, data=b"x") for i in range(3)]
    for m in wanted:
        await store.put(m, src)
    original = store._s3.list_objects_v2
    store._s3.list_objects_v2 = lambda **kw: original(MaxKeys=2, **kw)
    assert [m.session_id for m in await store.list()] == [m.session_id for m in wanted]


async def test_s3_missing_bucket_is_a_clear_error(moto_endpoint: str, tmp_path: Path) -> None:
    store = S3RecordingStore.from_config(_config(moto_endpoint, "nosuchbucket"))
    with pytest.raises(ConnectionProblem, match="NoSuchBucket"):
        await store.list()
