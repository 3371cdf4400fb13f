"""Files: expand `classify PATH…` arguments (folders recursively, files, globs -> sorted image paths); a file's
SHA-256 (the one hash function of the project: model files, sources, reports)."""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .preprocess import is_image_file

_GLOB_CHARS = set("*?[")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class FileList:
    """The images to classify, in a stable order, and how many other files were passed over."""

    images: list[Path] = field(default_factory=list)
    skipped: int = 0  # files without an image suffix (bmp, png, jpg/jpeg, tif/tiff)
    missing: list[str] = field(default_factory=list)  # arguments that matched nothing on disk

    def __len__(self) -> int:
        return len(self.images)


def _walk(folder: Path) -> Iterable[Path]:
    for root, _, files in os.walk(folder, followlinks=False):  # order does not matter: the result is sorted
        for name in files:
            yield Path(root) / name


def expand_paths(specs: Iterable[str | os.PathLike]) -> FileList:
    """Folders are searched recursively; files are taken as given; patterns (`*`, `?`, `[`, `**`) are globbed.

    A file counts as an image by its suffix; whether it really decodes is found out later (and reported as a row).
    Duplicates are dropped; the result is sorted so that runs are reproducible.
    """
    out = FileList()
    seen: set[Path] = set()

    def add(p: Path) -> None:
        if not p.is_file():
            return
        if not is_image_file(p):
            out.skipped += 1
            return
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.images.append(p)

    for spec in specs:
        text = os.fspath(spec)
        path = Path(text).expanduser()
        if path.is_dir():
            for p in _walk(path):
                add(p)
        elif path.is_file():
            add(path)
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                out.missing.append(text)
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    for p in _walk(mp):
                        add(p)
                else:
                    add(mp)
        else:
            out.missing.append(text)
    out.images.sort(key=lambda p: str(p))
    return out
