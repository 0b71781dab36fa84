"""Every log line goes through one renderer: stdlib records too (JSON stays JSON)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from bastion.logging import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatty = logging.getLogger("asyncssh").level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.getLogger("asyncssh").setLevel(chatty)
    structlog.reset_defaults()


def test_json_format_renders_stdlib_records_as_json() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    logging.getLogger("bastion.proxy.listener").info("proxy listening on %s:%d", "127.0.0.1", 3080)
    structlog.get_logger().info("auth service listening", addr="127.0.0.1:3025")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["event"] == "proxy listening on 127.0.0.1:3080"
    assert lines[0]["level"] == "info" and lines[0]["timestamp"].endswith("Z")
    assert lines[1]["event"] == "auth service listening" and lines[1]["addr"] == "127.0.0.1:3025"


def test_text_format_gives_stdlib_records_a_time_and_level() -> None:
    out = io.StringIO()
    configure_logging("info", "text", stream=out)
    logging.getLogger("bastion.tunnel.client").warning("tunnel: lost the proxy")
    line = out.getvalue().strip()
    assert "[warning" in line and "tunnel: lost the proxy" in line and line[:4].isdigit()


def test_asyncssh_connection_chatter_only_at_debug() -> None:
    out = io.StringIO()
    configure_logging("info", "text", stream=out)
    logging.getLogger("asyncssh").info("[conn=1] Accepted SSH client connection")
    logging.getLogger("asyncssh").warning("[conn=1] something is wrong")
    assert "Accepted" not in out.getvalue() and "something is wrong" in out.getvalue()
    configure_logging("debug", "text", stream=out)
    logging.getLogger("asyncssh").info("[conn=2] Accepted SSH client connection")
    assert "conn=2" in out.getvalue()


def test_configuring_twice_does_not_duplicate_lines() -> None:
    out = io.StringIO()
    configure_logging("info", "text", stream=out)
    configure_logging("info", "text", stream=out)
    logging.getLogger("bastion.x").info("once")
    assert out.getvalue().count("once") == 1


def test_json_log_of_an_exception_carries_the_traceback() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    for logger in (structlog.get_logger("bastion.auth.api"), logging.getLogger("bastion.x")):
        try:
            raise ValueError("boom in handler")
        except ValueError:
            logger.exception("internal error")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert line["event"] == "internal error" and line["level"] == "error"
        assert (
            "Traceback" in line["exception"] and "ValueError: boom in handler" in line["exception"]
        )
