"""Options shared by commands are declared once (`cli/options.py`): `stream` and `serve` take the same live-source
options with the same checks, and `classify`, `stream`, `serve` the same model options."""

import pytest
from typer.testing import CliRunner

from leuk_edge.cli import app


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("command", ["stream", "serve"])
@pytest.mark.parametrize("args, message", [
    (["--backend", "bogus"], "unknown --backend 'bogus'"),
    (["--um-per-px", "0.1", "--magnification", "100"], "give --um-per-px or --magnification, not both"),
])
def test_live_options_are_checked_alike(command, args, message, tiny_onnx, tmp_path):
    # serve checked neither before (it re-declared stream's options without stream's checks)
    extra = ["--folder", tmp_path / "st"] if command == "serve" else ["--jsonl", tmp_path / "st" / "e.jsonl"]
    res = invoke([command, "-m", tiny_onnx, "--source", tmp_path, *extra, *args])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert not (tmp_path / "st").exists()  # refused before anything was opened


def _options(command: str) -> dict:
    import typer

    return {p.opts[0]: p for p in typer.main.get_command(app).commands[command].params}


def test_model_options_are_the_same_everywhere():
    ref = _options("classify")
    for command in ("stream", "serve", "bench"):
        opts = _options(command)
        for flag in ("--device", "--threads", "--precision"):
            assert opts[flag].help == ref[flag].help and opts[flag].default == ref[flag].default, (command, flag)
    assert "auto | fp32 | fp16 | int8" in ref["--precision"].help
    live = [f for f in _options("stream") if f not in ("--source", "--help")]
    shared = set(live) & set(_options("serve"))
    assert {"--backend", "--um-per-px", "--magnification", "--crop-um", "--stride", "--timeout-s"} <= shared
    for flag in shared:
        assert _options("serve")[flag].help == _options("stream")[flag].help, flag
