"""Access request notices against real receivers: a signed webhook (HTTP server on loopback)
that fails once with 500, a Slack-compatible receiver, an SMTP server (aiosmtpd), and the
dead-letter file when a receiver never answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from bastion.auth.notify import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Notifier,
    slack_payload,
    verify_signature,
)
from bastion.config.notifications import NotificationsConfig
from bastion.testing.peers.ports import free_port
from bastion.types.meta import Metadata
from bastion.types.requests import AccessRequest, AccessRequestSpec

pytestmark = pytest.mark.integration
SECRET = b"s3cret-webhook-key"
NOW = datetime.now(UTC)


def _request() -> AccessRequest:
    spec = AccessRequestSpec(
        user="alice",
        roles=["dba"],
        reason="INC-1234",
        created=NOW,
        pending_expires=NOW + timedelta(hours=1),
        access_expires=NOW + timedelta(hours=1),
        suggested_reviewers=["bob@example.com"],
    )
    return AccessRequest(metadata=Metadata(name="r-1"), spec=spec)


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls = 0
        self.verified: list[dict[str, Any]] = []
        self.slack: list[dict[str, Any]] = []

    async def hook(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.read()
        if self.calls <= self.fail_first:
            return web.Response(status=500)
        ok = verify_signature(
            SECRET, request.headers[TIMESTAMP_HEADER], body, request.headers[SIGNATURE_HEADER]
        )
        if not ok:
            return web.Response(status=401)
        self.verified.append(json.loads(body))
        return web.Response(status=204)

    async def slack_hook(self, request: web.Request) -> web.Response:
        self.slack.append(await request.json())
        return web.Response(text="ok")


async def _serve(receiver: Receiver) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    app.router.add_post("/slack", receiver.slack_hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 OK"


async def _no_sleep(_: float) -> None:
    return None


async def test_signed_webhook_retried_after_500_slack_and_email(tmp_path: Path) -> None:
    receiver = Receiver(fail_first=1)
    runner, port = await _serve(receiver)
    inbox = Inbox()
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        config = NotificationsConfig.model_validate(
            {
                "web_url": "https://bastion.example.com:3080",
                "webhooks": [{"url": f"http://127.0.0.1:{port}/hook", "secret": SECRET.decode()}],
                "slack": [{"url": f"http://127.0.0.1:{port}/slack"}],
                "email": {
                    "host": "127.0.0.1",
                    "port": smtp_port,
                    "sender": "bastion@example.com",
                    "to": ["oncall@example.com"],
                },
                "dead_letter": str(tmp_path / "dead.jsonl"),
            }
        )
        notifier = Notifier(config, "https://auth", sleep=_no_sleep)
        failed = await notifier.deliver("created", _request())
        assert failed == []
        assert receiver.calls == 2  # a 500, then the retry
        (notice,) = receiver.verified
        assert notice["event"] == "access_request.created"
        assert notice["request"]["id"] == "r-1" and notice["request"]["roles"] == ["dba"]
        assert notice["links"]["approve"].startswith("https://bastion.example.com:3080/web/")
        (message,) = receiver.slack
        assert message == slack_payload("created", _request(), "https://bastion.example.com:3080")
        (mail,) = inbox.messages
        assert set(mail.rcpt_tos) == {"oncall@example.com", "bob@example.com"}
        assert b"INC-1234" in mail.content and b"bsh request review r-1" in mail.content
        assert not (tmp_path / "dead.jsonl").exists()
    finally:
        smtp.stop()
        await runner.cleanup()


async def test_undeliverable_notices_go_to_the_dead_letter_file(tmp_path: Path) -> None:
    receiver = Receiver(fail_first=100)
    runner, port = await _serve(receiver)
    audited: list[tuple[str, str, str, str]] = []

    async def audit(*args: str) -> None:
        audited.append(args)  # type: ignore[arg-type]

    try:
        config = NotificationsConfig.model_validate(
            {
                "webhooks": [{"url": f"http://127.0.0.1:{port}/hook", "secret": "x"}],
                "retries": 2,
                "dead_letter": str(tmp_path / "dead.jsonl"),
            }
        )
        notifier = Notifier(config, "https://auth", audit, sleep=_no_sleep)
        failed = await notifier.deliver("reviewed", _request())
        assert len(failed) == 1 and receiver.calls == 3
        (line,) = (tmp_path / "dead.jsonl").read_text().splitlines()
        record = json.loads(line)
        assert record["error"] == "HTTP 500" and record["notice"]["request"]["id"] == "r-1"
        assert audited == [("r-1", failed[0], "failure", "HTTP 500")]
    finally:
        await runner.cleanup()


def test_slack_payload_follows_the_incoming_webhook_schema() -> None:
    """Incoming webhooks take ``text`` plus Block Kit ``blocks``; a section's text is a text
    object, fields at most 10, an actions block holds at most 25 elements, and a link button
    has ``type``, ``text`` (plain_text), ``url`` and an ``action_id`` (api.slack.com/block-kit)."""
    payload = slack_payload("created", _request(), "https://b.example.com")
    assert isinstance(payload["text"], str) and payload["text"]
    assert set(payload) == {"text", "blocks"} and len(payload["blocks"]) <= 50
    for block in payload["blocks"]:
        assert block["type"] in ("section", "actions")
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            for text in [block.get("text"), *block.get("fields", [])]:
                if text is not None:
                    assert text["type"] in ("mrkdwn", "plain_text") and len(text["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
        else:
            assert 1 <= len(block["elements"]) <= 25
            for button in block["elements"]:
                assert button["type"] == "button" and button["text"]["type"] == "plain_text"
                assert button["url"].startswith("https://") and button["action_id"]
                assert button.get("style") in (None, "primary", "danger")
