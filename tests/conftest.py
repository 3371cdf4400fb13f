import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import make_tiny_onnx  # noqa: E402


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    return make_tiny_onnx(tmp_path_factory.mktemp("models") / "tiny.onnx", size=32)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium for the browser tests (Playwright's own download is unreachable). The one deliberate skip
    of the suite, for a developer machine without it; in CI (.ci/run installs it) a skip is a failure anyway."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does)")
    return path


@pytest.fixture
def interrupt_classify_after(monkeypatch):
    """`arm(n)`: the classify engine raises KeyboardInterrupt (as Ctrl-C would) after handing out n rows."""
    import leuk_edge.edge.classify as mod

    real = mod.classify_paths

    def arm(n: int) -> None:
        def interrupted(*args, **kwargs):
            for i, row in enumerate(real(*args, **kwargs)):
                if i == n:
                    raise KeyboardInterrupt
                yield row

        monkeypatch.setattr(mod, "classify_paths", interrupted)

    return arm


@pytest.fixture(scope="session")
def synth_cnmc(tmp_path_factory):
    """A small synthetic C-NMC dataset (8 subjects x 6 cells); returns the C-NMC_Leukemia folder."""
    from leuk_edge.synth.cells import write_synthetic_cnmc

    out = tmp_path_factory.mktemp("cnmc")
    return Path(write_synthetic_cnmc(out, subjects=8, cells_per_subject=6, final_cells=3, seed=1)["root"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (`LEUK_EDGE_REQUIRE_ALL=1`, set by .ci/run) a skipped test is a failure: a missing tool (ffmpeg,
    tf2onnx, Chromium) must never turn a gate's test into a silent skip."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("LEUK_EDGE_REQUIRE_ALL") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import (`pytest.importorskip("tf2onnx")`)."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("LEUK_EDGE_REQUIRE_ALL") == "1" and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"module skipped in CI, where every test must run: {report.longrepr}"
