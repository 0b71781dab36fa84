"""The ``auth_service.notifications`` section: where access request notices go.

Layer: config (pydantic schema, no IO). Built into sinks by :mod:`bastion.auth.notify`; every
sink gets a notice when a request is created and on each review (docs/access-requests.md).

.. code-block:: yaml

    auth_service:
      notifications:
        web_url: https://bastion.example.com:3080
        webhooks:
          - url: https://hooks.example.com/bastion
            secret_file: /etc/bastion/webhook.secret
        slack:
          - url: https://hooks.slack.com/services/T000/B000/XXXX
        email:
          host: smtp.example.com
          port: 587
          starttls: true
          sender: bastion@example.com
          to: [oncall@example.com]
        on_call:                      # automatic approval for whoever is on call
          - name: dba-on-call
            schedule: /etc/bastion/dba-rotation.ics   # or a .yaml rotation
            roles: [dba]
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, field_validator

from bastion.types.duration import Duration
from bastion.types.meta import StrictModel

__all__ = ["EmailSink", "NotificationsConfig", "OnCallRule", "SlackSink", "WebhookSink"]


def _http_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError(f"{value!r}: use an http:// or https:// URL")
    return value


class WebhookSink(StrictModel):
    """A generic JSON webhook, signed: ``X-Bastion-Signature: sha256=<hex HMAC-SHA256 of the
    body>`` with the shared secret, plus ``X-Bastion-Timestamp`` and ``X-Bastion-Delivery``."""

    url: str
    secret: str = ""
    """The HMAC key (prefer ``secret_file``)."""
    secret_file: str = ""
    timeout: Duration = timedelta(seconds=5)

    _check_url = field_validator("url")(classmethod(lambda cls, v: _http_url(v)))

    def key(self) -> bytes:
        """The HMAC key. Raises: OSError when the secret file cannot be read."""
        if self.secret_file:
            return Path(self.secret_file).read_bytes().strip()
        return self.secret.encode()


class SlackSink(StrictModel):
    """A Slack-compatible incoming webhook (Block Kit message with approve/deny links)."""

    url: str
    timeout: Duration = timedelta(seconds=5)

    _check_url = field_validator("url")(classmethod(lambda cls, v: _http_url(v)))


class EmailSink(StrictModel):
    """SMTP delivery (``STARTTLS`` when set; login when a user is given)."""

    host: str
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    username: str = ""
    password_file: str = ""
    sender: str
    to: list[str] = Field(min_length=1)
    """Always notified; a request's suggested reviewers that look like addresses are added."""
    timeout: Duration = timedelta(seconds=10)


class OnCallRule(StrictModel):
    """Approve a request automatically when its requester is on call now for every requested
    role (:mod:`bastion.rbac.on_call` reads the schedule). The approval is audited with the
    rule's name as the reviewer; ``max_duration`` still bounds the access."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.@-]+$")
    schedule: str = Field(min_length=1)
    """Path of the schedule: ``.ics`` (iCalendar) or ``.yaml``/``.yml`` (a rotation)."""
    roles: list[str] = Field(min_length=1)
    """The roles this schedule is on call for (``*``: any role)."""

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        if not value.lower().endswith((".ics", ".yaml", ".yml")):
            raise ValueError(f"{value!r}: use a .ics (iCalendar) or .yaml (rotation) file")
        return value


class NotificationsConfig(StrictModel):
    web_url: str = ""
    """Base URL of the web UI for the links in messages; empty: the auth public address."""
    webhooks: list[WebhookSink] = Field(default_factory=list)
    slack: list[SlackSink] = Field(default_factory=list)
    email: EmailSink | None = None
    retries: int = Field(default=4, ge=0, le=20)
    """Further attempts after a failed delivery (5xx, timeout, refused), with backoff."""
    backoff: Duration = timedelta(seconds=1)
    """First wait between attempts; doubled each time (with jitter)."""
    dead_letter: str = ""
    """JSON Lines file of notices no attempt delivered; default ``<data_dir>/notifications-dead-
    letter.jsonl``."""

    def with_data_dir(self, data_dir: Path) -> NotificationsConfig:
        """This config with the dead-letter default resolved."""
        if self.dead_letter:
            return self
        return self.model_copy(
            update={"dead_letter": str(data_dir / "notifications-dead-letter.jsonl")}
        )

    on_call: list[OnCallRule] = Field(default_factory=list)
    """Automatic approval rules: whoever a schedule file has on call now for the requested roles
    gets the request approved (docs/access-requests.md#on-call-auto-approval)."""

    @property
    def enabled(self) -> bool:
        return bool(self.webhooks or self.slack or self.email)
