"""JSON files in and out, the one way every layer reads and writes them.

- `read_json(path, what)`: the parsed document, or a ServePlanError that names the file, says
  what it was meant to be, and for bad JSON the line and column (never a traceback).
- `dump_json(obj, out=None)`: JSON text with NaN and infinity as null (JSON has no NaN) and
  numpy scalars as plain numbers; also written to `out` when given (folders created).

It sits at the bottom of the import order (costmodel), so the simulator, the planner, its CLI
and service, and validate all use it without importing upwards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from costmodel.errors import ServePlanError


def read_json(path: str | Path, what: str):
    """The JSON document in `path` (any JSON value); `what` names it in errors ("plan file")."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path; not UTF-8
        raise ServePlanError(f"cannot read {what} {p}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ServePlanError(f"{p}: line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None
    except (ValueError, RecursionError) as e:  # a number of over 4300 digits; nesting too deep
        raise ServePlanError(f"{p}: not valid JSON ({type(e).__name__}: {str(e)[:80]})") from None


def json_number(v, finite: bool = False) -> float | None:
    """A JSON value as a float: None for a bool, a non-number, an integer past float's range (a
    400-digit JSON integer) and, when `finite`, NaN and infinities."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return None if finite and not math.isfinite(f) else f


def short_repr(v, limit: int = 40) -> str:
    """repr(v), cut to `limit` characters for an error message."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit] + "..."


def json_safe(obj):
    """JSON-safe: NaN/inf become null, numpy scalars become Python numbers, keys strings."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dump_json(obj, out: str | Path | None = None) -> str:
    """`obj` as indented JSON text (through `json_safe`); written to `out` too when given."""
    text = json.dumps(json_safe(obj), indent=2)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return text
