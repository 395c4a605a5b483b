"""The service's data folder: the only place a request may name a file.

A request can name files in four places: a `trace:PATH` workload, a model or draft model given
as a `config.json` path, and a calibration profile. On a shared service none of them may reach
outside the folder the operator chose (`serveplan serve --data-dir`, by default the shared
traces folder): relative paths are taken inside it, absolute ones must resolve (symlinks
followed) inside it, anything else is a 422 naming the field. Presets and short trace names
(`azure-conv`, ...) need no file and are always accepted.

Each accepted file is also fingerprinted (path, size, modification time) so the response cache
never serves a result computed from an older version of the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from costmodel.errors import ServePlanError

SYNTHETIC_KINDS = ("fixed", "uniform", "lognormal")


class FieldError(ServePlanError):
    """Bad input in one request field: the 422 names `field`."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def default_data_dir() -> Path | None:
    """`<shared>/data/traces` when the shared data is present, else None (no files allowed)."""
    try:
        from costmodel.paths import shared_dir

        p = shared_dir() / "data" / "traces"
    except ServePlanError:
        return None
    return p if p.is_dir() else None


class DataDir:
    """Checks the file names in requests against one folder (None: no files at all)."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root).expanduser().resolve() if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise ServePlanError(f"data folder {root} is not a directory; give --data-dir an "
                                 "existing folder")

    def file(self, field: str, text: str, what: str, fingerprints: list) -> str:
        """The absolute path of `text` inside the data folder; FieldError otherwise."""
        if self.root is None:
            raise FieldError(field, f"{what} {text!r}: this service has no data folder "
                             "(serveplan serve --data-dir), so it reads no files")
        if "\x00" in text:
            raise FieldError(field, f"{what} {text!r}: a file name cannot hold a NUL byte")
        p = Path(text).expanduser()
        full = (p if p.is_absolute() else self.root / p).resolve()
        if not full.is_relative_to(self.root):
            raise FieldError(field, f"{what} {text!r} is outside the service's data folder; give "
                             "a path relative to that folder (serveplan serve --data-dir)")
        if not full.is_file():
            raise FieldError(field, f"{what} {text!r} " + ("is a folder; expected a file" if full.is_dir()
                                                           else "not found") + " in the service's data folder")
        st = full.stat()
        fingerprints.append((str(full), st.st_size, st.st_mtime_ns))
        return str(full)

    def workload(self, field: str, spec: str, fingerprints: list) -> str:
        """Synthetic workloads and short trace names pass; `trace:PATH` must be in the folder."""
        from sim.traces import TRACE_NAMES

        s = spec.strip()
        kind, sep, body = s.partition(":")
        if s.lower() in TRACE_NAMES or kind.lower() in SYNTHETIC_KINDS:
            return s
        if kind.lower() != "trace" or not sep:
            return s  # not a file: the library rejects it with the accepted forms
        if body.strip().lower() in TRACE_NAMES:
            return s
        return "trace:" + self.file(field, body.strip(), "trace file", fingerprints)

    def model(self, field: str, name: str, fingerprints: list) -> str:
        """A model preset (or alias) passes unchanged; else a config.json inside the folder."""
        from costmodel.specs import MODEL_PRESETS, load_model

        key = name.strip()
        if "\x00" in key:
            raise FieldError(field, f"model {key!r}: a name cannot hold a NUL byte")
        if key and not os.path.exists(key):
            try:
                spec = load_model(key)
            except ServePlanError:
                spec = None
            if spec is not None and MODEL_PRESETS.get(spec.name) is spec:
                return key
        if self.root is None or not (key.endswith(".json") or "/" in key or os.sep in key):
            raise FieldError(field, f"unknown model {key!r}; expected a preset "
                             f"({', '.join(sorted(MODEL_PRESETS))}) or a config.json inside the "
                             "service's data folder")
        return self.file(field, key, "model config", fingerprints)

    def calibration(self, field: str, value, fingerprints: list):
        """A file name inside the folder (returned as its absolute path) or an inline profile."""
        if value is None or isinstance(value, dict):
            return value
        return self.file(field, str(value), "calibration file", fingerprints)

    def deployment(self, field: str, dep: dict, fingerprints: list) -> dict:
        """A deployment dict with its model and draft models checked (a copy)."""
        if not isinstance(dep, dict):
            raise FieldError(field, f"expected an object (a Plan's deployment block), got "
                             f"{type(dep).__name__}")
        out = dict(dep)
        if isinstance(out.get("model"), str):
            out["model"] = self.model(f"{field}.model", out["model"], fingerprints)
        pools = out.get("pools")
        if isinstance(pools, list):
            out["pools"] = [self._pool(f"{field}.pools[{i}]", p, fingerprints)
                            for i, p in enumerate(pools)]
        return out

    def _pool(self, field: str, pool, fingerprints: list):
        if not isinstance(pool, dict) or not isinstance(pool.get("spec"), dict):
            return pool
        draft = pool["spec"].get("draft_model")
        if not isinstance(draft, str):
            return pool
        spec = dict(pool["spec"], draft_model=self.model(f"{field}.spec.draft_model", draft,
                                                          fingerprints))
        return dict(pool, spec=spec)
