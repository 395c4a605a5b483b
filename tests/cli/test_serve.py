"""`serveplan serve`: bad flags are one error line and exit 2, before anything starts. (The
server itself is tested over HTTP in tests/service.)"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from planner.cli import app


@pytest.mark.parametrize("args,words", [
    (["--workers", "0"], "workers 0; expected an integer >= 1"),
    (["--data-dir", "/nonexistent/folder"], "is not a directory"),
    (["--port", "70000"], "--port 70000; expected 1..65535"),
    (["--timeout-s", "0"], "expected a number > 0"),
])
def test_bad_serve_flags_are_one_line_and_exit_2(args, words):
    r = CliRunner().invoke(app, ["serve", *args])
    assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output, r.output
