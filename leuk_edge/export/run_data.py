"""The images a run was trained and validated on, found again from its folder: what export gates on by default.

RUN/config.json names the data (`data_root`, `layout`) and RUN/split.json the subjects of each split. The
parity gate uses the validation subjects' images and INT8 calibration the training subjects' (never `test`):
the same kind of cells the model will see, unlike synthetic stand-ins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .parity import ImageSet


@dataclass(frozen=True)
class RunImages:
    val: ImageSet  # parity and variant gates
    train: ImageSet  # INT8 calibration


def run_images(run_dir: str | Path) -> tuple[RunImages | None, str]:
    """-> (the run's val/train images, "") or (None, why not) when they cannot be found on this machine."""
    from ..train.data import DataError, load_dataset

    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())
        split = json.loads((run_dir / "split.json").read_text())
    except (OSError, ValueError):
        return None, f"no readable config.json and split.json in {run_dir}"
    root = config.get("data_root")
    if not root:
        return None, "config.json names no data_root"
    if not Path(root).is_dir():
        return None, f"the run's data ({root}) is not on disk"
    try:
        ds = load_dataset(root, check_images=False)
    except DataError as exc:
        return None, f"the run's data cannot be read: {exc}"
    sets = {}
    for name in ("val", "train"):
        subjects = set(split.get(name) or ())
        # Only the training_data items: `test` (the prelim set, or a carved-out test split) is never touched.
        files = tuple(sorted(it.path for it in ds.train if it.subject in subjects))
        if not files:
            return None, f"no images of the run's {name} subjects under {ds.root}"
        sets[name] = ImageSet(files, f"run:{name}",
                              f"the run's {name} split ({len(subjects)} subjects) of {ds.root}")
    return RunImages(val=sets["val"], train=sets["train"]), ""
