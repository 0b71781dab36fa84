from __future__ import annotations

import json

import pytest
from exportkit import make_event
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import RemoteProtocolError
from bastion.export.formats import (
    bulk_body,
    check_bulk_response,
    check_hec_response,
    hec_body,
    json_line,
    json_lines,
)


@given(st.text())
def test_json_line_is_one_line_whatever_the_content(value: str) -> None:
    event = make_event(1, reason=value, fields={"k": value})
    line = json_line(event)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert json.loads(line)["reason"] == value


def test_json_lines_keep_order() -> None:
    events = [make_event(n) for n in range(3)]
    lines = json_lines(events).splitlines()
    assert [json.loads(x)["id"] for x in lines] == [e.id for e in events]


def test_hec_body_is_concatenated_event_objects() -> None:
    events = [make_event(n) for n in range(2)]
    body = hec_body(events, host="auth-1", source="bastion", sourcetype="bastion:audit", index="")
    decoder = json.JSONDecoder()
    text, pos, objs = body.decode(), 0, []
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        objs.append(obj)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    assert [o["event"]["id"] for o in objs] == [e.id for e in events]
    assert objs[0]["time"] == pytest.approx(events[0].time.timestamp())
    assert set(objs[0]) == {"time", "host", "source", "sourcetype", "event"}
    assert objs[0]["host"] == "auth-1"
    indexed = hec_body(events[:1], host="h", source="s", sourcetype="t", index="audit")
    assert json.loads(indexed)["index"] == "audit"


def test_hec_response() -> None:
    check_hec_response(200, b'{"text":"Success","code":0}')
    with pytest.raises(RemoteProtocolError, match="Invalid token"):
        check_hec_response(403, b'{"text":"Invalid token","code":4}')
    with pytest.raises(RemoteProtocolError, match="HTTP 200"):
        check_hec_response(200, b'{"text":"Server is busy","code":9}')
    with pytest.raises(RemoteProtocolError, match="HTTP 503"):
        check_hec_response(503, b"<html>down</html>")


def test_bulk_body_uses_event_id() -> None:
    events = [make_event(n) for n in range(2)]
    lines = bulk_body(events, "bastion-audit").decode().splitlines()
    assert len(lines) == 4
    assert json.loads(lines[0]) == {"index": {"_index": "bastion-audit", "_id": events[0].id}}
    assert json.loads(lines[1])["id"] == events[0].id
    assert bulk_body(events, "x").endswith(b"\n")
    with pytest.raises(ValueError, match="no id"):
        bulk_body([make_event(1, id="")], "x")


def _reply(*statuses: int) -> bytes:
    items = []
    for n, status in enumerate(statuses):
        result: dict[str, object] = {"_id": f"id{n}", "status": status}
        if status >= 300:
            result["error"] = {"type": "mapper_parsing_exception", "reason": "bad field"}
        items.append({"index": result})
    return json.dumps({"errors": any(s >= 300 for s in statuses), "items": items}).encode()


def test_bulk_response_per_item_errors() -> None:
    assert check_bulk_response(200, _reply(201, 200), 2).ok
    verdict = check_bulk_response(200, _reply(201, 400, 429), 3)
    assert not verdict.ok
    assert verdict.failed == (("id1", 400, "bad field"), ("id2", 429, "bad field"))


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [
        (500, b"oops", "HTTP 500"),
        (200, b"not json", "not JSON"),
        (200, b'{"errors":false,"items":[]}', "0 items for 2"),
        (200, b"[]", "no items"),
    ],
)
def test_bulk_response_refusals(status: int, body: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        check_bulk_response(status, body, 2)


@given(st.binary())
def test_bulk_response_garbage_only_raises_protocol_error(body: bytes) -> None:
    try:
        check_bulk_response(200, body, 1)
    except RemoteProtocolError:
        pass


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@given(st.lists(JSON, min_size=1, max_size=3))
def test_bulk_response_odd_items_never_crash(items: list[object]) -> None:
    body = json.dumps({"items": items}).encode()
    try:
        verdict = check_bulk_response(200, body, len(items))
    except RemoteProtocolError:
        return
    assert len(verdict.failed) <= len(items)
