"""The TensorFlow log filter keeps what matters: only Abseil lines below the chosen level are dropped."""

from leuk_edge.train.quiet import _keep

PRE_INIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
INFO = "I0000 00:00:1795816346.519162   10495 port.cc:153] oneDNN custom operations are on.\n"
ERROR = ("E0000 00:00:1795816438.351925   12401 node_def_util.cc:682] NodeDef mentions attribute "
         "use_unbounded_threadpool which is not in the op definition\n")
FATAL = "F1127 22:01:02.123456   12401 check.cc:1] Check failed\n"


def test_levels_follow_tf_cpp_min_log_level():
    assert not _keep(PRE_INIT, 3) and not _keep(INFO, 3) and not _keep(ERROR, 3) and _keep(FATAL, 3)
    assert not _keep(INFO, 1) and _keep(ERROR, 1)
    assert _keep(PRE_INIT, 0) and _keep(INFO, 0)


def test_other_output_always_passes():
    for line in ("Traceback (most recent call last):\n", "ImportError: libcudart.so.12\n",
                 "2026-11-27 22:01:02.123 W something else\n", "I am not a log line\n"):
        assert _keep(line, 3)
