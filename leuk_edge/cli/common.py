"""Shared CLI plumbing: one console, one-line errors with exit code 2 for usage/input problems."""

from __future__ import annotations

import contextlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)  # progress, tables and messages on stderr; stdout stays for machine output


class UsageError(ValueError):
    """Bad input from the user: reported as one line, exit code 2."""


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors():
    """Turn expected problems (bad paths, bad models, unavailable devices, bad data) into one clear line.
    The project's own error types (usage, model, metadata, device, data, weights) are all ValueErrors."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM inside edge.signals.graceful_stop()
        from ..edge.signals import Terminated, exit_code_for

        console.print("[yellow]terminated[/]" if isinstance(exc, Terminated) else "[yellow]interrupted[/]")
        raise typer.Exit(exit_code_for(exc))
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def echo_json(obj) -> None:
    import json

    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
