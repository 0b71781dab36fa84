"""API routes of session recordings (:mod:`bastion.auth.recordings` does the checks).

* ``POST /v1/recordings/{session_id}`` — a node uploads a finished recording. The body is the
  raw asciicast bytes, streamed (not limited by ``max_request_bytes``; by
  ``auth_service.recordings.max_bytes``); header ``X-Bastion-Recording`` carries the metadata
  as base64url JSON (:class:`~bastion.recording.store.RecordingMeta`, with the SHA-256).
* ``GET /v1/recordings`` — ``{"items": [metadata, ...]}``, filtered per item.
* ``GET /v1/recordings/{session_id}?purpose=view|download`` — the asciicast bytes
  (``application/x-asciicast``); audited as ``recording.view`` or ``recording.download``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator

from aiohttp import web

from bastion.api.binding import Call, bind
from bastion.auth.recordings import GuardedRecordings, RecordingService
from bastion.auth.server import AuthServer
from bastion.contract import recordings as rec
from bastion.contract.base import Empty
from bastion.errors import BadParameter
from bastion.recording.store import RecordingMeta, check_session_id

__all__ = ["META_HEADER", "add_recording_routes", "decode_meta_header", "encode_meta_header"]

META_HEADER = "X-Bastion-Recording"
_CHUNK = 64 * 1024


def encode_meta_header(meta: RecordingMeta) -> str:
    return base64.urlsafe_b64encode(meta.model_dump_json().encode()).decode()


def decode_meta_header(value: str) -> RecordingMeta:
    """Raises: BadParameter."""
    try:
        raw = base64.urlsafe_b64decode(value.encode())
    except (binascii.Error, ValueError):
        raise BadParameter(f"{META_HEADER}: not base64url") from None
    return RecordingMeta.parse(raw)


def add_recording_routes(app: web.Application, auth: AuthServer) -> None:
    """Serve the recording API when auth has a recording store (``auth.deps.recordings``)."""
    if auth.deps.recordings is None:
        return
    service = RecordingService(auth)

    def guarded(call: Call[Empty]) -> GuardedRecordings:
        return GuardedRecordings(call.guard, service)

    async def upload(call: Call[Empty]) -> rec.RecordingInfo:
        request = call.request
        session_id = check_session_id(call.path("session_id"))
        meta = decode_meta_header(request.headers.get(META_HEADER, ""))
        if meta.session_id != session_id:
            raise BadParameter("the metadata's session_id does not match the URL")

        async def body() -> AsyncIterator[bytes]:
            async for chunk in request.content.iter_chunked(_CHUNK):
                yield chunk

        stored = await guarded(call).upload(meta, body())
        return rec.RecordingInfo.model_validate(stored.model_dump(mode="json"))

    async def list_recordings(call: Call[Empty]) -> rec.Recordings:
        items = await guarded(call).list()
        return rec.Recordings.model_validate({"items": [m.model_dump(mode="json") for m in items]})

    async def get_recording(call: Call[Empty]) -> web.StreamResponse:
        request = call.request
        session_id = check_session_id(call.path("session_id"))
        purpose = call.query(rec.FetchQuery).purpose
        meta, path = await guarded(call).fetch(session_id, purpose)
        try:
            response = web.StreamResponse(
                headers={
                    "Content-Type": "application/x-asciicast",
                    "X-Bastion-Recording-SHA256": meta.sha256,
                    "Content-Disposition": f'attachment; filename="{session_id}.cast"',
                }
            )
            response.content_length = meta.size or path.stat().st_size
            await response.prepare(request)
            with path.open("rb") as body:
                while chunk := await asyncio.to_thread(body.read, _CHUNK):
                    await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            path.unlink(missing_ok=True)

    bind(app, rec.UPLOAD_RECORDING, upload)
    bind(app, rec.LIST_RECORDINGS, list_recordings)
    bind(app, rec.GET_RECORDING, get_recording)
