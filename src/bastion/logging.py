"""structlog configuration: human-readable text on a terminal, JSON lines for machines.

Records of the standard ``logging`` module (our modules that use it, asyncssh, aiohttp, asyncio)
go through the same renderer, so ``log.format: json`` gives JSON on every line and text lines
all carry a time and a level. asyncssh's per-connection details stay at warning unless the
level is debug.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = ["configure_logging"]

# Libraries whose info lines describe every connection (asyncssh: accepted, auth, channel open
# and close): useful when debugging, noise otherwise.
CHATTY = ("asyncssh",)
HANDLER_NAME = "bastion"


def configure_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    numeric = logging.getLevelNamesMapping()[level.upper()]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    # JSON needs the traceback as text (log.exception); the console renderer formats it itself
    tracebacks: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info] if fmt == "json" else []
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tracebacks,
                renderer,
            ],
            foreign_pre_chain=[structlog.stdlib.add_log_level, stamp],
        )
    )
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)  # configured again: replace ours, keep others' (pytest's)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in CHATTY:
        logging.getLogger(name).setLevel(
            logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING
        )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            *tracebacks,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
