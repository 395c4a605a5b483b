"""Shared CLI plumbing: one JSON document on stdout with --json, one error line on failure."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import typer

from costmodel.errors import ServePlanError
from costmodel.jsonio import dump_json


def emit_json(obj) -> None:
    """The one JSON document a command prints on stdout with --json."""
    sys.stdout.write(dump_json(obj) + "\n")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable) -> Callable:
    """Turn bad input (ServePlanError, and file errors) into one clear line and exit code 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ServePlanError as e:
            fail(str(e))
        except FileNotFoundError as e:
            fail(f"file not found: {e.filename or e}")
        except PermissionError as e:
            fail(f"permission denied: {e.filename or e}")
        except (IsADirectoryError, NotADirectoryError) as e:  # a folder given for a file, ...
            fail(f"{e.filename or 'file'}: {e.strerror or e}")

    return wrapper


def param_names(params: str | None) -> list[str] | None:
    """`--params a,b`: the names, or None (every parameter) when the option is not given."""
    if params is None:
        return None
    names = [p.strip() for p in params.split(",") if p.strip()]
    if not names:
        raise ServePlanError(f"--params {params!r}; expected comma-separated parameter names")
    return names


def output_paths(**paths: Path | None) -> None:
    """Refuse, before any work, an output path (`option=path`, as `out=...` for --out) that
    names a folder (a missing folder above it is created when the file is written)."""
    for option, path in paths.items():
        if path is not None and path.is_dir():
            raise ServePlanError(f"--{option.replace('_', '-')} {path} is a folder; expected a file "
                                 "to write")


def load_calibration_opt(path: Path | None):
    if path is None:
        return None
    from costmodel.calibration import CalibrationProfile

    return CalibrationProfile.load(path)


def ms_text(seconds: float) -> str:
    """A latency in ms as tables print it: three significant digits under 100 ms (24.9, 3.17),
    whole ms above (1,391), never in exponent form."""
    ms = seconds * 1e3
    return f"{ms:,.0f}" if abs(ms) >= 100 else f"{ms:.3g}"
