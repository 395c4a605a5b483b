"""Shared CLI plumbing: one JSON document on stdout with --json, one error line on failure."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import typer

from costmodel.errors import ServePlanError


def _clean(obj):
    """JSON-safe: NaN/inf become null (JSON has no NaN), numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dump_json(obj, out: Path | None = None) -> str:
    text = json.dumps(_clean(obj), indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return text


def emit_json(obj) -> None:
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

    return wrapper


def load_calibration_opt(path: Path | None):
    if path is None:
        return None
    from costmodel.calibration import CalibrationProfile

    return CalibrationProfile.load(path)
