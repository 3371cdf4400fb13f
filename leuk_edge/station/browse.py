"""`--data-root`: folders on the station that the page may list and classify, and nothing outside them.

A requested path is relative, has no `..` part, and must still lie inside the root once every symlink is resolved;
anything else is `Forbidden` (HTTP 403). Files met while walking a folder are checked the same way, so a symlink
that points out of the root is never read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from ..edge.preprocess import is_image_file


class Forbidden(ValueError):
    """A path outside the data root."""


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_under(root: Path, rel: str) -> Path:
    """The real folder for `rel` under `root`; Forbidden when it leaves the root, FileNotFoundError when absent."""
    root = Path(root).resolve()
    rel = rel or ""
    if "\\" in rel or "\x00" in rel or re.match(r"^[A-Za-z]:", rel):
        raise Forbidden("only relative paths with '/' under the data root")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts:
        raise Forbidden("absolute paths and '..' are not allowed")
    real = (root / p).resolve()
    if not _inside(real, root):
        raise Forbidden("that path leads out of the data root")
    if not real.is_dir():
        raise FileNotFoundError(f"no folder {rel!r} under the data root")
    return real


def listing(root: Path, rel: str) -> dict:
    root = Path(root).resolve()
    folder = resolve_under(root, rel)
    dirs, images = [], 0
    for entry in sorted(folder.iterdir(), key=lambda e: e.name.lower()):
        real = entry.resolve()
        if not _inside(real, root):
            continue  # a symlink out of the root is not shown either
        if real.is_dir():
            dirs.append(entry.name)
        elif real.is_file() and is_image_file(entry):
            images += 1
    here = folder.relative_to(root).as_posix()
    return {"path": "" if here == "." else here, "folders": dirs, "images": images}


def folder_images(root: Path, rel: str, limit: int) -> tuple[list[Path], list[str]]:
    """The image files under `rel` (recursive, sorted), each inside the root -> (paths, names relative to it)."""
    root = Path(root).resolve()
    folder = resolve_under(root, rel)
    found = []
    for base, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            p = Path(base) / name
            if is_image_file(p) and _inside(p.resolve(), root):
                found.append(p)
    found.sort()
    if len(found) > limit:
        raise OverflowError(f"{len(found)} images in that folder; the station classifies at most {limit} at once")
    return found, [p.relative_to(root).as_posix() for p in found]
