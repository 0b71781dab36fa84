"""Session recordings in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, ...), so
several auth servers share them (high availability).

Layer: storage adapter over boto3 (synchronous; every call runs in a worker thread). Objects
are ``<prefix><session id>.cast`` and ``<prefix><session id>.json``, the metadata written last
(as in :class:`~bastion.recording.store.LocalRecordingStore`). botocore errors are translated
here, once: a missing object is NotFound, anything else ConnectionProblem.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from bastion.errors import AlreadyExists, BadParameter, ConnectionProblem, NotFound
from bastion.recording.store import CHUNK, RecordingMeta, Sink, check_session_id

if TYPE_CHECKING:
    from bastion.config.schema import RecordingStorageConfig

__all__ = ["S3RecordingStore"]

_MISSING = {"404", "NoSuchKey", "NotFound"}


def _check_bucket(bucket: str) -> None:
    if not bucket:
        raise BadParameter("auth_service.recordings.bucket is required for type s3")


class S3RecordingStore:
    """Args:
    client: a boto3 S3 client.
    bucket: an existing bucket.
    prefix: key prefix (``recordings/``).
    """

    def __init__(self, client: Any, bucket: str, prefix: str = "recordings/") -> None:
        _check_bucket(bucket)
        self._s3 = client
        self.bucket = bucket
        self.prefix = prefix

    @classmethod
    def from_config(cls, config: RecordingStorageConfig) -> S3RecordingStore:
        """A store from ``auth_service.recordings`` (credentials from the config when set, else
        from the standard AWS sources: environment, profile, instance role).

        Raises:
            BadParameter: no bucket (checked before boto3 looks for credentials or a region).
        """
        _check_bucket(config.bucket)
        kwargs: dict[str, Any] = {
            "config": BotoConfig(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60
            ),  # fmt: skip
        }
        if config.endpoint_url:
            kwargs["endpoint_url"] = config.endpoint_url
        if config.region:
            kwargs["region_name"] = config.region
        if config.access_key_id:
            kwargs["aws_access_key_id"] = config.access_key_id
            kwargs["aws_secret_access_key"] = config.secret_access_key
        return cls(boto3.client("s3", **kwargs), config.bucket, config.prefix)

    def _key(self, session_id: str, suffix: str) -> str:
        return f"{self.prefix}{check_session_id(session_id)}{suffix}"

    def _call(self, what: str, func: Any, **kwargs: Any) -> Any:
        try:
            return func(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise NotFound(f"{what}: not found in bucket {self.bucket}") from exc
            raise ConnectionProblem(f"{what}: S3 refused ({code}): {exc}") from exc
        except BotoCoreError as exc:
            raise ConnectionProblem(f"{what}: cannot reach S3: {exc}") from exc

    def _exists(self, key: str) -> bool:
        try:
            self._call(key, self._s3.head_object, Key=key)
        except NotFound:
            return False
        return True

    def _put(self, meta: RecordingMeta, source: Path) -> None:
        meta_key = self._key(meta.session_id, ".json")
        if self._exists(meta_key):
            raise AlreadyExists(f"recording {meta.session_id} is stored already")
        with source.open("rb") as body:
            self._call(
                "store recording",
                self._s3.put_object,
                Key=self._key(meta.session_id, ".cast"),
                Body=body,
                ContentType="application/x-asciicast",
            )
        self._call(
            "store recording metadata",
            self._s3.put_object,
            Key=meta_key,
            Body=meta.model_dump_json().encode(),
            ContentType="application/json",
        )

    async def put(self, meta: RecordingMeta, source: Path) -> None:
        await asyncio.to_thread(self._put, meta.check(), source)

    def _get(self, key: str, session_id: str) -> bytes:
        try:
            obj = self._call("read recording", self._s3.get_object, Key=key)
        except NotFound:
            raise NotFound(f"no recording of session {session_id}") from None
        data: bytes = obj["Body"].read()
        return data

    async def meta(self, session_id: str) -> RecordingMeta:
        raw = await asyncio.to_thread(self._get, self._key(session_id, ".json"), session_id)
        return RecordingMeta.parse(raw)

    async def read(self, session_id: str) -> bytes:
        await self.meta(session_id)
        return await asyncio.to_thread(self._get, self._key(session_id, ".cast"), session_id)

    def _copy(self, session_id: str, sink: Sink) -> None:
        try:
            obj = self._call(
                "read recording", self._s3.get_object, Key=self._key(session_id, ".cast")
            )
        except NotFound:
            raise NotFound(f"no recording of session {session_id}") from None
        try:
            for chunk in obj["Body"].iter_chunks(CHUNK):
                sink.write(chunk)
        except BotoCoreError as exc:
            raise ConnectionProblem(f"read recording: S3 connection broke: {exc}") from exc

    async def copy_to(self, session_id: str, sink: Sink) -> None:
        await self.meta(session_id)
        await asyncio.to_thread(self._copy, session_id, sink)

    def _list(self) -> list[RecordingMeta]:
        out = []
        token: dict[str, str] = {}
        while True:
            page = self._call(
                "list recordings", self._s3.list_objects_v2, Prefix=self.prefix, **token
            )
            for item in page.get("Contents", []):
                key = str(item["Key"])
                if not key.endswith(".json"):
                    continue
                try:
                    raw = self._call("read metadata", self._s3.get_object, Key=key)
                    out.append(RecordingMeta.parse(raw["Body"].read()))
                except (NotFound, BadParameter):
                    continue  # deleted meanwhile, or not ours
            if not page.get("IsTruncated"):
                break
            token = {"ContinuationToken": str(page["NextContinuationToken"])}
        return sorted(out, key=lambda m: (m.started.timestamp() if m.started else 0, m.session_id))

    async def list(self) -> list[RecordingMeta]:
        return await asyncio.to_thread(self._list)
