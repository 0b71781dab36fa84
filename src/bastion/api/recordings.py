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

from bastion.auth.recordings import GuardedRecordings, RecordingService
from bastion.auth.server import AuthServer
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

    def guarded(request: web.Request) -> GuardedRecordings:
        return GuardedRecordings(request["guard"], service)

    async def upload(request: web.Request) -> web.Response:
        session_id = check_session_id(request.match_info["session_id"])
        meta = decode_meta_header(request.headers.get(META_HEADER, ""))
        if meta.session_id != session_id:
            raise BadParameter("the metadata's session_id does not match the URL")

        async def body() -> AsyncIterator[bytes]:
            async for chunk in request.content.iter_chunked(_CHUNK):
                yield chunk

        stored = await guarded(request).upload(meta, body())
        return web.json_response(stored.model_dump(mode="json"), status=201)

    async def list_recordings(request: web.Request) -> web.Response:
        items = await guarded(request).list()
        return web.json_response({"items": [m.model_dump(mode="json") for m in items]})

    async def get_recording(request: web.Request) -> web.StreamResponse:
        session_id = check_session_id(request.match_info["session_id"])
        purpose = request.query.get("purpose", "download")
        if purpose not in ("view", "download"):
            raise BadParameter("purpose: view or download")
        meta, path = await guarded(request).fetch(
            session_id, "view" if purpose == "view" else "download"
        )
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

    app.router.add_post("/v1/recordings/{session_id}", upload)
    app.router.add_get("/v1/recordings", list_recordings)
    app.router.add_get("/v1/recordings/{session_id}", get_recording)
