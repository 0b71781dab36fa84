"""Access request notices: signed JSON webhooks, Slack-compatible messages, SMTP email.

Layer: auth (IO at the edge of the domain). :class:`Notifier` sends one notice per event
(``created``, ``reviewed``, ``resolved``) to every configured sink
(:class:`bastion.config.notifications.NotificationsConfig`), in the background: a slow receiver
never delays the API. Each sink is tried ``1 + retries`` times with exponential backoff and
jitter (a 5xx, a 429, a timeout or a refused connection is retried; a 4xx is not); a notice
no attempt delivered is appended to the dead-letter file (JSON Lines) with the sink and the last
error, and audited as ``access_request.notify`` with outcome failure.

The webhook body is the JSON of :func:`notice_payload`; ``X-Bastion-Signature`` is
``sha256=`` + hex HMAC-SHA256 of ``<timestamp>.<body>`` with the sink's secret, and
``X-Bastion-Timestamp`` the Unix time (receivers refuse old timestamps: no replay).
:func:`verify_signature` is the receiver's check.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import smtplib
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from bastion.config.notifications import EmailSink, NotificationsConfig, SlackSink, WebhookSink
from bastion.tasks import TaskSet
from bastion.types.requests import AccessRequest

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryFailed",
    "Notifier",
    "email_message",
    "notice_payload",
    "sign",
    "slack_payload",
    "verify_signature",
]

log = structlog.get_logger("bastion.notify")

SIGNATURE_HEADER = "X-Bastion-Signature"
TIMESTAMP_HEADER = "X-Bastion-Timestamp"
DELIVERY_HEADER = "X-Bastion-Delivery"
MAX_SKEW = 300
"""Seconds a receiver accepts between the timestamp and its clock."""


class DeliveryFailed(Exception):
    """One attempt failed; ``retry`` says whether another attempt may succeed."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``timestamp.body``."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def verify_signature(
    secret: bytes, timestamp: str, body: bytes, signature: str, now: float | None = None
) -> bool:
    """The receiver's check: the signature matches and the timestamp is fresh."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= MAX_SKEW and hmac.compare_digest(sign(secret, timestamp, body), signature)


def _links(web_url: str, request: AccessRequest) -> dict[str, str]:
    base = f"{web_url.rstrip('/')}/web/requests/{request.name}"
    return {"view": base, "approve": f"{base}?review=approve", "deny": f"{base}?review=deny"}


def notice_payload(event: str, request: AccessRequest, web_url: str) -> dict[str, Any]:
    """The webhook body: what happened and the request as it now stands."""
    spec = request.spec
    last = spec.reviews[-1] if spec.reviews and event != "created" else None
    return {
        "event": f"access_request.{event}",
        "request": {
            "id": request.name,
            "user": spec.user,
            "roles": spec.roles,
            "resources": spec.resources,
            "reason": spec.reason,
            "state": spec.state,
            "created": spec.created.isoformat(),
            "access_expires": spec.access_expires.isoformat(),
            "suggested_reviewers": spec.suggested_reviewers,
            "approvals": sum(r.verdict == "approve" for r in spec.reviews),
            "denials": sum(r.verdict == "deny" for r in spec.reviews),
        },
        "review": (
            {"author": last.author, "verdict": last.verdict, "reason": last.reason}
            if last is not None
            else None
        ),
        "links": _links(web_url, request),
    }


def _summary(event: str, request: AccessRequest) -> str:
    spec = request.spec
    what = ", ".join(spec.resources or spec.roles)
    if event == "created":
        return f"{spec.user} requests {what}"
    last = spec.reviews[-1] if spec.reviews else None
    by = f" by {last.author}" if last is not None else ""
    return f"access request of {spec.user} for {what}: {spec.state.lower()}{by}"


def slack_payload(event: str, request: AccessRequest, web_url: str) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the fallback) and Block Kit ``blocks``: a
    section with the fields and, while pending, an actions block with approve/deny link
    buttons (``url`` buttons need no Slack app)."""
    spec = request.spec
    links = _links(web_url, request)
    fields = [
        {"type": "mrkdwn", "text": f"*User:*\n{spec.user}"},
        {"type": "mrkdwn", "text": f"*State:*\n{spec.state}"},
        {"type": "mrkdwn", "text": f"*Roles:*\n{', '.join(spec.roles) or '-'}"},
        {"type": "mrkdwn", "text": f"*Resources:*\n{', '.join(spec.resources) or '-'}"},
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_summary(event, request)}*"}},
        {"type": "section", "fields": fields},
    ]
    if spec.reason:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Reason:* {spec.reason}"}}
        )
    if spec.state == "PENDING":
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Approve"},
                        "style": "primary",
                        "url": links["approve"],
                        "action_id": "approve",
                    },
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Deny"},
                        "style": "danger",
                        "url": links["deny"],
                        "action_id": "deny",
                    },
                ],
            }
        )
    return {"text": _summary(event, request), "blocks": blocks}


def email_message(
    event: str, request: AccessRequest, web_url: str, sink: EmailSink
) -> EmailMessage:
    spec = request.spec
    msg = EmailMessage()
    msg["Subject"] = f"[bastion] {_summary(event, request)}"
    msg["From"] = sink.sender
    extra = [r for r in spec.suggested_reviewers if "@" in r]
    msg["To"] = ", ".join(dict.fromkeys([*sink.to, *extra]))
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@bastion>"
    links = _links(web_url, request)
    lines = [
        _summary(event, request),
        "",
        f"Request:   {request.name}",
        f"User:      {spec.user}",
        f"Roles:     {', '.join(spec.roles) or '-'}",
        f"Resources: {', '.join(spec.resources) or '-'}",
        f"Reason:    {spec.reason or '-'}",
        f"State:     {spec.state}",
        f"Expires:   {spec.access_expires.isoformat()}",
        "",
        f"Review:    bsh request review {request.name} --approve|--deny --reason=...",
        f"Web:       {links['view']}",
    ]
    msg.set_content("\n".join(lines) + "\n")
    return msg


Send = Callable[[], Awaitable[None]]
AuditHook = Callable[[str, str, str, str], Awaitable[None]]
"""``(request id, sink, outcome, reason)``: records a notice that could not be delivered."""


class Notifier:
    """Sends notices to the configured sinks, in background tasks."""

    def __init__(
        self,
        config: NotificationsConfig,
        web_url: str,
        audit: AuditHook | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.web_url = config.web_url or web_url
        self._audit = audit
        self._sleep = sleep
        self._tasks = TaskSet()

    def notify(self, event: str, request: AccessRequest) -> None:
        """Queue the notice for every sink (returns at once)."""
        if not self.config.enabled:
            return
        self._tasks.spawn(self.deliver(event, request), f"notify-{request.name}")

    async def drain(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Wait for the notices in flight (tests, shutdown)."""
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def deliver(self, event: str, request: AccessRequest) -> list[str]:
        """Send to every sink now (with retries). Returns the sinks that failed."""
        jobs: list[tuple[str, Send]] = []
        body = json.dumps(notice_payload(event, request, self.web_url)).encode()
        for hook in self.config.webhooks:
            jobs.append((f"webhook {hook.url}", self._webhook_sender(hook, body)))
        for slack in self.config.slack:
            text = json.dumps(slack_payload(event, request, self.web_url)).encode()
            jobs.append((f"slack {slack.url}", self._slack_sender(slack, text)))
        if self.config.email is not None:
            email = self.config.email
            message = email_message(event, request, self.web_url, email)
            jobs.append((f"email {email.host}:{email.port}", self._email_sender(email, message)))
        results = await asyncio.gather(
            *(self._with_retries(name, send, event, request) for name, send in jobs)
        )
        return [name for name, ok in zip((j[0] for j in jobs), results, strict=True) if not ok]

    async def _with_retries(
        self, sink: str, send: Send, event: str, request: AccessRequest
    ) -> bool:
        delay = self.config.backoff.total_seconds()
        error = ""
        for attempt in range(self.config.retries + 1):
            try:
                await send()
                return True
            except DeliveryFailed as exc:
                error = str(exc)
                log.warning("notification failed", sink=sink, attempt=attempt + 1, error=error)
                if not exc.retry or attempt == self.config.retries:
                    break
            await self._sleep(delay * (1 + random.random() / 2))  # noqa: S311 - jitter only
            delay *= 2
        await self._dead_letter(sink, event, request, error)
        return False

    async def _dead_letter(self, sink: str, event: str, request: AccessRequest, error: str) -> None:
        record = {
            "time": time.time(),
            "sink": sink,
            "error": error,
            "notice": notice_payload(event, request, self.web_url),
        }
        if self.config.dead_letter:
            path = Path(self.config.dead_letter)
            line = json.dumps(record, sort_keys=True) + "\n"
            await asyncio.to_thread(_append, path, line)
        if self._audit is not None:
            await self._audit(request.name, sink, "failure", error)

    def _webhook_sender(self, hook: WebhookSink, body: bytes) -> Send:
        async def send() -> None:
            try:
                key = hook.key()
            except OSError as exc:
                raise DeliveryFailed(f"cannot read secret_file: {exc.strerror}", False) from None
            stamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: sign(key, stamp, body),
                DELIVERY_HEADER: uuid.uuid4().hex,
            }
            await _post(hook.url, body, headers, hook.timeout.total_seconds())

        return send

    def _slack_sender(self, slack: SlackSink, body: bytes) -> Send:
        async def send() -> None:
            headers = {"Content-Type": "application/json"}
            await _post(slack.url, body, headers, slack.timeout.total_seconds())

        return send

    def _email_sender(self, sink: EmailSink, message: EmailMessage) -> Send:
        async def send() -> None:
            await asyncio.to_thread(_smtp_send, sink, message)

        return send


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(line)


async def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:  # noqa: ASYNC109
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(url, data=body, headers=headers) as resp,
        ):
            if resp.status >= 500 or resp.status == 429:
                raise DeliveryFailed(f"HTTP {resp.status}")
            if resp.status >= 300:
                raise DeliveryFailed(f"HTTP {resp.status} (not retried)", retry=False)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None


def _smtp_send(sink: EmailSink, message: EmailMessage) -> None:
    try:
        with smtplib.SMTP(sink.host, sink.port, timeout=sink.timeout.total_seconds()) as smtp:
            if sink.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if sink.username:
                password = (
                    Path(sink.password_file).read_text().strip() if sink.password_file else ""
                )
                smtp.login(sink.username, password)
            smtp.send_message(message)
    except smtplib.SMTPResponseException as exc:
        raise DeliveryFailed(
            f"SMTP {exc.smtp_code}", retry=exc.smtp_code >= 400 and exc.smtp_code < 500
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
