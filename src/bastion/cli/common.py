"""What every CLI shares: turning errors into a clear message and exit code, never a traceback."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from bastion.errors import BastionError

__all__ = ["emit_json", "fail", "handle_errors"]

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Map BastionError (and OS-level problems) to ``error: ...`` on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BastionError as exc:
            fail(exc.message, exc.exit_code)
        except (ConnectionError, OSError) as exc:
            fail(f"{exc.strerror or exc}", 7)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
