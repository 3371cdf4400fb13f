"""`leuk-edge data synth|inspect`."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, echo_json, user_errors

data_app = typer.Typer(help="Make and inspect datasets.", no_args_is_help=True)


@data_app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="Folder to write C-NMC_Leukemia/ into."),
    subjects: int = typer.Option(12, help="Number of subjects (about 2/3 ALL, 1/3 normal)."),
    cells_per_subject: int = typer.Option(30, help="Cells per subject."),
    final_cells: int = typer.Option(10, help="Unlabelled final-phase test cells."),
    seed: int = typer.Option(0, help="Random seed."),
):
    """Write a synthetic dataset in the Kaggle C-NMC layout (stand-in data, not for medical claims)."""
    from rich.progress import Progress

    from ..train.synth import write_synthetic_cnmc

    with user_errors(), Progress(console=console, transient=True) as bar:
        task = bar.add_task("synthesising cells", total=None)
        summary = write_synthetic_cnmc(out, subjects=subjects, cells_per_subject=cells_per_subject, seed=seed,
                                       final_cells=final_cells,
                                       progress=lambda i, n: bar.update(task, completed=i, total=n))
    console.print(f"wrote {summary['train']} training + {summary['test']} labelled test + "
                  f"{summary['final']} unlabelled cells to {summary['root']} (synthetic)")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
