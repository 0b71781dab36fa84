"""The auth_service.notifications section."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bastion.config.notifications import NotificationsConfig
from bastion.config.schema import FileConfig


def test_defaults_and_dead_letter_path() -> None:
    config = NotificationsConfig()
    assert not config.enabled and config.retries == 4
    resolved = config.with_data_dir(Path("/var/lib/bastion"))
    assert resolved.dead_letter == "/var/lib/bastion/notifications-dead-letter.jsonl"
    explicit = NotificationsConfig(dead_letter="/tmp/x.jsonl").with_data_dir(Path("/d"))
    assert explicit.dead_letter == "/tmp/x.jsonl"


def test_sinks_are_validated(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("k3y\n")
    config = NotificationsConfig.model_validate(
        {
            "webhooks": [{"url": "https://h.example.com/x", "secret_file": str(secret)}],
            "email": {"host": "smtp", "sender": "b@example.com", "to": ["o@example.com"]},
        }
    )
    assert config.enabled and config.webhooks[0].key() == b"k3y"
    with pytest.raises(ValidationError, match="http"):
        NotificationsConfig.model_validate({"webhooks": [{"url": "ftp://x"}]})
    with pytest.raises(ValidationError):
        NotificationsConfig.model_validate({"email": {"host": "h", "sender": "s", "to": []}})


def test_the_section_lives_in_the_auth_config() -> None:
    config = FileConfig.model_validate(
        {"auth_service": {"notifications": {"slack": [{"url": "https://hooks.slack.com/x"}]}}}
    )
    assert config.auth_service.notifications.slack[0].url == "https://hooks.slack.com/x"
