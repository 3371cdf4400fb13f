"""`leuk-edge audit FOLDER`: verify a station's hash-chained audit log. Edge-only: stdlib sqlite3."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, user_errors


def audit(folder: Path = typer.Argument(..., help="The station folder (serve --folder) holding station.db.")):
    """Verify the station's audit log: every entry holds the SHA-256 of the one before; every review and signature
    matches its entry; every signed file names an entry still in the log. Exit 0 when whole, 1 at the first break."""
    from ..station.audit import verify

    with user_errors():
        verdict = verify(folder)
    if verdict.ok:
        console.print(f"audit log whole: {verdict.entries} entries, last hash {verdict.head}", highlight=False)
        typer.echo(f"ok {verdict.entries} {verdict.head}")
        return
    console.print(f"[bold red]audit log broken:[/] {verdict.problem} ({verdict.entries} entries verified before it)",
                  highlight=False, soft_wrap=True)
    typer.echo(f"broken {verdict.problem}")
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
