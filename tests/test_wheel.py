"""The wheel is the runtime: `leuk_edge/` only, no test helpers, and scikit-learn imported only by training."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_the_package_only(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("leuk_edge", "tests"):  # tests/ is there, as in a checkout, and must stay out
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                          "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (wheel,) = (tmp_path / "dist").glob("leuk_edge-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        modules = {n: zf.read(n).decode("utf-8") for n in names if n.endswith(".py")}
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"leuk_edge"}, top
    assert not [n for n in names if "/testing/" in n or n.startswith(("tests/", "support/"))]
    sklearn = sorted(n for n, text in modules.items() if re.search(r"^\s*(from|import) sklearn", text, re.M))
    assert sklearn and all(n.startswith("leuk_edge/train/") for n in sklearn), sklearn
