"""Session recordings: agents upload them (the body is the asciicast bytes, the metadata in the
``X-Bastion-Recording`` header); users list and fetch the ones they may see."""

from __future__ import annotations

from typing import Literal

from bastion.contract.base import Body, Empty, Endpoint, OpenReply, Reply

__all__ = ["GET_RECORDING", "LIST_RECORDINGS", "UPLOAD_RECORDING", "RecordingInfo"]


class RecordingInfo(OpenReply):
    session_id: str
    user: str
    login: str = ""
    node: str = ""
    kind: str = "shell"
    size: int = 0
    sha256: str = ""


class Recordings(Reply):
    items: list[RecordingInfo]


class FetchQuery(Body):
    purpose: Literal["view", "download"] = "download"


UPLOAD_RECORDING = Endpoint(
    "POST",
    "/v1/recordings/{session_id}",
    "host",
    "Upload a finished session's recording (body: asciicast bytes)",
    body=Empty,
    response=RecordingInfo,
    status=201,
    raw_body=True,
)
LIST_RECORDINGS = Endpoint(
    "GET", "/v1/recordings", "user", "The recordings you may see", body=Empty, response=Recordings
)
GET_RECORDING = Endpoint(
    "GET",
    "/v1/recordings/{session_id}",
    "user",
    "One recording's bytes (asciicast v2); viewing and downloading are audited",
    body=Empty,
    response=RecordingInfo,
    query=FetchQuery,
    stream="application/x-asciicast",
)
