"""Reading C-NMC 2019 ("leukemia-classification" on Kaggle) as downloaded, and subject-disjoint splits.

Layout (under --data, at any depth <= 3, usually DATA/C-NMC_Leukemia):
  training_data/fold_{0,1,2}/{all,hem}/UID_<subject>_<image>_<cell>_<all|hem>.bmp
  validation_data/C-NMC_test_prelim_phase_data/{1..N}.bmp
  validation_data/C-NMC_test_prelim_phase_data_labels.csv   (Patient_ID,new_names,labels; 1 = all)
  testing_data/C-NMC_test_final_phase_data/*.bmp            (no labels)
A plain DIR/{all,hem}/ folder works too. numpy/OpenCV only: no TensorFlow here.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..edge.files import expand_paths
from ..edge.preprocess import ImageReadError, decode_image

LABELS = {"hem": 0, "all": 1}
NAME_RE = re.compile(r"^UID_(?P<subject>H?\d+|[^_]+)_(?P<image>[^_]+)_(?P<cell>[^_]+)_(?P<label>all|hem)\.[a-z]+$",
                     re.IGNORECASE)
PRELIM_DIR = Path("validation_data") / "C-NMC_test_prelim_phase_data"
PRELIM_CSV = Path("validation_data") / "C-NMC_test_prelim_phase_data_labels.csv"
FINAL_DIR = Path("testing_data") / "C-NMC_test_final_phase_data"


class DataError(ValueError):
    """The dataset folder cannot be used (missing, empty, a class without images)."""


@dataclass(frozen=True)
class Item:
    path: str
    label: int  # 0 hem, 1 all
    subject: str
    fold: str  # "fold_0".., "prelim", or "" for a plain folder


@dataclass
class Dataset:
    root: Path
    layout: str  # "cnmc" or "plain"
    train: list[Item] = field(default_factory=list)  # training_data (train + val come from here)
    test: list[Item] = field(default_factory=list)  # the labelled prelim-phase set
    final: list[str] = field(default_factory=list)  # unlabelled final-phase images
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    synthetic: bool = False  # written by `leuk-edge data synth`
    image_sizes: Counter = field(default_factory=Counter)  # "WxH" -> count, of the checked labelled images


def subject_of(name: str) -> str:
    """`UID_H10_43_1_hem.bmp` -> `H10`; `UID_11_10_1_all.bmp` -> `11`; other names: the file stem."""
    m = NAME_RE.match(Path(name).name)
    return m.group("subject") if m else Path(name).stem


def find_root(data: str | Path) -> tuple[Path, str]:
    """Locate the C-NMC root (the folder holding training_data/) or a plain {all,hem} folder."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"data folder not found: {data}")
    for depth in range(4):
        for cand in [data] if depth == 0 else sorted(data.glob("/".join(["*"] * depth))):
            if (cand / "training_data").is_dir():
                return cand, "cnmc"
    if (data / "all").is_dir() or (data / "hem").is_dir():
        return data, "plain"
    raise DataError(f"{data} holds neither the C-NMC layout (training_data/fold_*/{{all,hem}}) "
                    "nor all/ and hem/ folders")


def _images(folder: Path) -> list[Path]:
    return expand_paths([folder]).images


def _class_items(folder: Path, fold: str) -> list[Item]:
    items = []
    for cls, label in LABELS.items():
        for p in _images(folder / cls) if (folder / cls).is_dir() else []:
            items.append(Item(str(p), label, subject_of(p.name), fold))
    return items


def _prelim_items(root: Path) -> list[Item]:
    csv_path, folder = root / PRELIM_CSV, root / PRELIM_DIR
    if not csv_path.is_file() or not folder.is_dir():
        return []
    items = []
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            path = folder / row["new_names"].strip()
            if path.is_file():
                items.append(Item(str(path), int(row["labels"]), subject_of(row["Patient_ID"].strip()), "prelim"))
    return items


def probe_images(paths: list[str], workers: int = 4) -> list[tuple[str | None, str | None]]:
    """Decode every image once (threads: OpenCV releases the GIL) -> (error reason, "WxH") per path."""
    def probe(path: str):
        try:
            img = decode_image(path)
            return None, f"{img.shape[1]}x{img.shape[0]}"
        except ImageReadError as exc:
            return str(exc), None

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(probe, paths))


def _check_readable(items: list[Item], sizes: Counter) -> tuple[list[Item], list[tuple[str, str]]]:
    """Unreadable images are listed, not fatal; the sizes of the readable ones are counted into `sizes`."""
    results = probe_images([it.path for it in items])
    sizes.update(size for _, size in results if size)
    good = [it for it, (err, _) in zip(items, results) if err is None]
    bad = [(it.path, err) for it, (err, _) in zip(items, results) if err is not None]
    return good, bad


def load_dataset(data: str | Path, check_images: bool = True) -> Dataset:
    root, layout = find_root(data)
    ds = Dataset(root=root, layout=layout, synthetic=(root / "SYNTHETIC.txt").is_file())
    if layout == "plain":
        ds.train = _class_items(root, "")
    else:
        for fold in sorted(p for p in (root / "training_data").iterdir() if p.is_dir()):
            ds.train += _class_items(fold, fold.name)
        ds.test = _prelim_items(root)
        if (root / FINAL_DIR).is_dir():
            ds.final = [str(p) for p in _images(root / FINAL_DIR)]
    if check_images:
        ds.train, bad_train = _check_readable(ds.train, ds.image_sizes)
        ds.test, bad_test = _check_readable(ds.test, ds.image_sizes)
        ds.unreadable = bad_train + bad_test
    if not ds.train:
        raise DataError(f"no readable training images under {root}")
    for cls, label in LABELS.items():
        if not any(it.label == label for it in ds.train):
            raise DataError(f"class '{cls}' has no readable training images under {root}")
    return ds


def _allocate(subjects: dict[str, int], fraction: float, rng: np.random.Generator) -> set[str]:
    """Pick whole subjects until ~fraction of the images are taken; at least one, never all."""
    names = sorted(subjects)
    rng.shuffle(names)
    target = fraction * sum(subjects.values())
    chosen, taken = set(), 0
    for s in names:
        if len(chosen) >= len(names) - 1:
            break
        if chosen and taken + subjects[s] / 2 > target:
            continue
        chosen.add(s)
        taken += subjects[s]
    return chosen


def split_by_subject(items: list[Item], fractions: dict[str, float], seed: int = 0) -> dict[str, list[Item]]:
    """Subject-disjoint split stratified by class: each class's subjects are divided separately, so every
    split gets both classes in about the same proportion. `fractions` e.g. {"val": 0.2} (rest is "train").
    A subject is assigned by its majority label (in C-NMC a subject is either a patient or healthy)."""
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[int, int]] = {}
    for it in items:
        counts.setdefault(it.subject, {0: 0, 1: 0})[it.label] += 1
    assign: dict[str, str] = {}
    for label in (0, 1):
        pool = {s: sum(c.values()) for s, c in counts.items() if max(c, key=c.get) == label}
        need = len(fractions) + 1
        if len(pool) < need:
            raise DataError(f"class '{'all' if label else 'hem'}' has {len(pool)} subject(s); a subject-disjoint "
                            f"split into {need} parts needs at least {need}")
        remaining = dict(pool)
        total = sum(pool.values())
        for name, frac in fractions.items():
            chosen = _allocate(remaining, frac * total / max(sum(remaining.values()), 1), rng)
            assign.update({s: name for s in chosen})
            remaining = {s: n for s, n in remaining.items() if s not in chosen}
        assign.update({s: "train" for s in remaining})
    out: dict[str, list[Item]] = {"train": [], **{k: [] for k in fractions}}
    for it in items:
        out[assign[it.subject]].append(it)
    return out


def make_splits(ds: Dataset, val_fraction: float = 0.2, seed: int = 0) -> dict[str, list[Item]]:
    """train/val from training_data; test = the labelled prelim set. A plain folder also yields a test split
    carved out by subject, since it has no separate test set."""
    if ds.layout == "plain" or not ds.test:
        fr = {"val": val_fraction, "test": 0.2} if ds.layout == "plain" else {"val": val_fraction}
        return split_by_subject(ds.train, fr, seed)
    splits = split_by_subject(ds.train, {"val": val_fraction}, seed)
    splits["test"] = list(ds.test)
    return splits


def split_subjects(splits: dict[str, list[Item]]) -> dict[str, list[str]]:
    return {name: sorted({it.subject for it in items}) for name, items in splits.items()}
