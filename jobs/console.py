"""How a ``prescore`` command talks to its caller: the stderr console, JSON on stdout, exit codes, option dates.

Exit codes: 0 success, 1 a user error (one line on stderr saying what to do), 2 a usage error, 3 Redis is
unavailable (one line; nothing was changed by the failed step: retry when it answers again).
``--json`` prints a machine-readable summary on stdout; human output and logs go to stderr.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from warehouse.datasets import storage
from warehouse.errors import StoreUnavailableError, UserError

err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
EXIT_UNAVAILABLE = 3  # Redis could not be reached: retry; nothing the failed step would have changed was changed
JSON_OPT = typer.Option(False, "--json", help="Print a machine-readable JSON summary on stdout.")


def say(message: str) -> None:
    """One line of human output on stderr, printed as given (no highlighting, no wrapping)."""
    err.print(message, highlight=False, soft_wrap=True)


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        logging.getLogger("alembic").setLevel(logging.WARNING)  # catalog migrations: quiet unless they fail


def user_errors(fn: F) -> F:
    """Turn a ``UserError`` into one line on stderr and exit code 1, Redis being unavailable into one line and exit
    code 3 (retryable: a wrong password is a ``StoreAuthError``, a user error), a full or read-only volume or a
    permission error into one line (path, uid, what to do) and exit 1; bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _setup_logging()
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except StoreUnavailableError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_UNAVAILABLE) from None
        except OSError as exc:
            denied = storage.permission_problem(exc)
            if denied:
                err.print(f"[red]error:[/red] {denied}", highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None
            no_room = storage.no_room(exc)
            if not no_room:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            err.print(f"[red]error:[/red] no room to write{where}: {no_room}; free space (or point "
                      "PRESCORE_HOME at a larger volume), then rerun", highlight=False, soft_wrap=True)  # fmt: skip
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else str(value)


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=_plain) + "\n")


def parse_day(value: str, option: str) -> dt.date:
    """``YYYY-MM-DD`` given to ``option`` → the date; ``UserError`` naming the option otherwise."""
    try:
        if len(value) != 10 or value[4] != "-" or value[7] != "-":
            raise ValueError(value)
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option} {value!r} is not a date: expected YYYY-MM-DD") from None
