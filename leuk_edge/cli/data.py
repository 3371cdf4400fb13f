"""`leuk-edge data synth|others|fields|inspect|reviews`."""

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

    from ..synth.cells import write_synthetic_cnmc

    with user_errors(), Progress(console=console, transient=True) as bar:
        task = bar.add_task("synthesising cells", total=None)
        summary = write_synthetic_cnmc(out, subjects=subjects, cells_per_subject=cells_per_subject, seed=seed,
                                       final_cells=final_cells,
                                       progress=lambda i, n: bar.update(task, completed=i, total=n))
    console.print(f"wrote {summary['train']} training + {summary['test']} labelled test + "
                  f"{summary['final']} unlabelled cells to {summary['root']} (synthetic)")


@data_app.command("others")
def others(
    out: Path = typer.Argument(..., help="Folder to write <kind>/*.png and index.csv into."),
    per_kind: int = typer.Option(20, "--per-kind", help="Images of each kind."),
    size: int = typer.Option(450, "--size", help="Tile side in pixels (450 = a C-NMC tile, 30 um)."),
    kinds: str = typer.Option("all", "--kinds", help="Comma-separated kinds, or 'all'."),
    seed: int = typer.Option(0, help="Random seed."),
):
    """Write out-of-scope cells (neutrophils, eosinophils, monocytes, basophils, red-cell and platelet clumps,
    debris, test images) as C-NMC-style tiles. For tests and evaluation ONLY: never train on them."""
    from ..synth.others import KINDS, ONLY_FOR_EVALUATION, write_out_of_scope

    with user_errors():
        chosen = KINDS if kinds.strip() == "all" else tuple(k.strip() for k in kinds.split(",") if k.strip())
        written = write_out_of_scope(out, per_kind, size=size, seed=seed, kinds=chosen)
    console.print(f"wrote {len(written)} out-of-scope tiles ({per_kind} each of {', '.join(chosen)}) to {out} "
                  f"(synthetic). {ONLY_FOR_EVALUATION}", highlight=False)


@data_app.command("fields")
def fields(
    out: Path = typer.Argument(..., help="Folder for frames/, ground_truth.json, drift.mp4 and drift.json."),
    frames: int = typer.Option(6, "--frames", min=0, help="Still fields to write."),
    video_frames: int = typer.Option(60, "--video-frames", min=0, help="Frames of the drifting video (0: none)."),
    fps: float = typer.Option(15.0, "--fps", min=1.0, help="Frame rate of the video."),
    width: int = typer.Option(1280, "--width", min=64),
    height: int = typer.Option(720, "--height", min=64),
    um_per_px: float = typer.Option(0.15, "--um-per-px", help="Scale: micrometres per pixel (0.15 ~ 100x)."),
    leukocytes: int = typer.Option(5, "--leukocytes", min=0, help="White cells per field."),
    blast_fraction: float = typer.Option(0.5, "--blast-fraction", min=0.0, max=1.0,
                                         help="--mix lymphoid: probability that a white cell is a blast (all)."),
    mix: str = typer.Option("lymphoid", "--mix",
                            help="White cells: 'lymphoid' (blasts and lymphocytes only) or 'normal' (a normal "
                                 "differential: neutrophils, lymphocytes, monocytes, eosinophils, basophils, plus "
                                 "--blast-share blasts)."),
    blast_share: float = typer.Option(None, "--blast-share",
                                      help="--mix normal: the share of all white cells that are blasts (default 0)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
):
    """Write synthetic microscope fields (red cells, platelets, a few white cells) with their ground truth
    (each cell's box, kind, in_scope and expected label all/hem/other)."""
    from rich.progress import Progress

    from ..synth.fields import FieldConfig, write_fields

    with user_errors(), Progress(console=console, transient=True) as bar:
        if blast_share is not None and mix != "normal":
            raise ValueError("--blast-share needs --mix normal (the lymphoid mix uses --blast-fraction)")
        cfg = FieldConfig(width=width, height=height, um_per_px=um_per_px, leukocytes=leukocytes,
                          blast_fraction=blast_fraction, mix=mix, blast_share=blast_share or 0.0).validate()
        task = bar.add_task("rendering fields", total=None)
        summary = write_fields(out, frames=frames, video_frames=video_frames, fps=fps, cfg=cfg, seed=seed,
                               progress=lambda i, n: bar.update(task, completed=i, total=n))
    video = f" and {video_frames}-frame video {summary['video']}" if summary["video"] else ""
    console.print(f"wrote {summary['frames']} fields ({summary['cells']} white cells){video} to {summary['root']} "
                  "(synthetic)", highlight=False)


@data_app.command("inspect")
def inspect(
    data: Path = typer.Argument(..., help="A C-NMC folder (or DIR/{all,hem})."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
):
    """Counts per split, fold, class and subject; image sizes; unreadable files."""
    from rich.table import Table

    from ..train.inspect import inspect_dataset

    with user_errors():
        report = inspect_dataset(data)
    if as_json:
        echo_json(report)
        return
    table = Table(title=f"{report['root']} ({report['layout']}{', synthetic' if report['synthetic'] else ''})")
    for col in ("split", "images", "all", "hem", "subjects"):
        table.add_column(col)
    for name, s in report["splits"].items():
        table.add_row(name, *(str(s[k]) for k in ("images", "all", "hem", "subjects")))
    table.add_row("final (unlabelled)", str(report["final_unlabelled"]), "", "", "")
    console.print(table)
    console.print(f"folds: {report['folds']}", highlight=False)
    console.print(f"image sizes: {report['image_sizes']}", highlight=False)
    console.print(f"unreadable: {len(report['unreadable'])}", highlight=False)
    for bad in report["unreadable"]:
        console.print(f"  {bad['path']}: {bad['reason']}", highlight=False)


@data_app.command("reviews")
def reviews(
    reviews_jsonl: Path = typer.Argument(..., help="The station folder (its station.db), the station.db itself, "
                                                   "or its reviews.jsonl export."),
    out: Path = typer.Argument(..., help="Folder to write C-NMC_Leukemia/ into."),
):
    """Turn a station's reviewed cells into a labelled C-NMC-layout dataset (subject = slide) for `train`."""
    from ..station.reviews_data import write_reviews_dataset

    with user_errors():
        s = write_reviews_dataset(reviews_jsonl, out)
    console.print(f"wrote {s['all']} all + {s['hem']} hem reviewed cells from {len(s['subjects'])} slide(s) to "
                  f"{s['root']} ({s['not classed']} not classed and {s['other']} other left out, {s['missing_crop']} without their crop, "
                  f"{s['bad_lines']} unreadable lines)", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
