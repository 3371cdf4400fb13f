"""Import TensorFlow without the C++ log lines a newcomer reads as failures.

TensorFlow's C++ side logs through Abseil. `TF_CPP_MIN_LOG_LEVEL` (read once, when TensorFlow is imported) governs
the lines logged after TensorFlow initialises its logging, e.g. tf.data's
`E... node_def_util.cc] NodeDef mentions attribute use_unbounded_threadpool ...` during `fit`/`predict`. The lines
logged while the shared libraries load come *before* that ("WARNING: All log messages before absl::InitializeLog()
is called are written to STDERR", oneDNN and "Could not find cuda drivers" notes, twice: two libraries) and ignore
the variable. So the import runs with the process's stderr (file descriptor 2, where C++ writes) sent to a
temporary file, and afterwards every line is passed back except the Abseil lines below the chosen level.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

# Abseil's line prefix: severity letter, MMDD, time, thread id, file:line]
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]]+\] ")  # before init the time reads 00:00:<epoch s>
_PRE_INIT_NOTE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def _keep(line: str, level: int) -> bool:
    if line.startswith(_PRE_INIT_NOTE):
        return level < 1
    m = _ABSL_LINE.match(line)
    return m is None or _SEVERITY[m.group(1)] >= level


def import_tensorflow(level: int | None = None):
    """`import tensorflow` with C++ log lines below `level` (default: $TF_CPP_MIN_LOG_LEVEL, else 3 = errors
    too; fatal lines always pass) dropped, including those logged before TensorFlow's own filter exists.
    Returns the module. A no-op filter once TensorFlow is already imported."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if level is None else str(level))
    level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"]) if level is None else level
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter (closed descriptor): nothing to keep quiet
        import tensorflow
        return tensorflow
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = "".join(line for line in text.splitlines(keepends=True) if _keep(line, level))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
    return tensorflow
