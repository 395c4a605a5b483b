"""Per-token speculative acceptance `a` from published results (spec_acceptance.csv-style tables).

The table lists, per method, target and task, the mean tokens a verify step yields (tau) and
sometimes the chain draft length k. With tau = (1 - a^(k+1)) / (1 - a) we solve for a; rows
without k (tree drafts) are read as k = 5. Our methods map to the table's as:

- ngram: n-gram (vLLM), PLD (prompt lookup), Lookahead
- draft: SpS, Draft-target speculative decoding, EAGLE (vLLM) (a separate small drafter)
- self:  MTP (native), Medusa, Hydra (the target drafts for itself)

Rows for the same target model (names compared without `meta-`, `-instruct`, `-hf`) win;
otherwise the median over the method's rows. Without a table (the `shared/` folder is optional
for planning) the documented defaults below are used, and the plan says so.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import median

DEFAULT_ACCEPTANCE = {"ngram": 0.3, "draft": 0.6, "self": 0.5}
ASSUMED_TREE_K = 5
METHOD_ROWS = {
    "ngram": ("n-gram (vllm)", "pld", "lookahead"),
    "draft": ("sps", "draft-target speculative decoding", "eagle (vllm)"),
    "self": ("mtp (native)", "medusa", "hydra"),
}


@dataclass(frozen=True)
class Acceptance:
    a: float  # per-token acceptance probability
    source: str  # where it came from (a sentence for the plan)


def acceptance_from_tau(tau: float, k: int) -> float:
    """Solve (1 - a^(k+1)) / (1 - a) = tau for a in [0, 1) by bisection."""
    tau = min(max(tau, 1.0), k + 1 - 1e-6)
    lo, hi = 0.0, 1.0 - 1e-9
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        val = (1 - mid ** (k + 1)) / (1 - mid)
        if val < tau:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _norm(name: str) -> str:
    n = name.strip().lower().split("/")[-1]
    for junk in ("meta-", "-instruct", "-hf", "-chat"):
        n = n.replace(junk, "")
    return n


def _k_of(text: str) -> int | None:
    m = re.search(r"k\s*=\s*(\d+)", text or "", re.IGNORECASE)
    return int(m.group(1)) if m else None


def _default_table() -> Path | None:
    try:
        from costmodel.paths import shared_dir

        p = shared_dir() / "data" / "spec_acceptance.csv"
    except Exception:  # noqa: BLE001 - no shared folder: planning still works, with defaults
        return None
    return p if p.is_file() else None


def lookup_acceptance(method: str, target: str, table: Path | str | None = None) -> Acceptance:
    """Acceptance for `method` drafting for `target` (a model preset name)."""
    if method not in METHOD_ROWS:
        return Acceptance(0.0, "no speculative decoding")
    path = Path(table) if table is not None else _default_table()
    default = DEFAULT_ACCEPTANCE[method]
    if path is None or not path.is_file():
        return Acceptance(default, f"default per-token acceptance {default} for {method} (no "
                                   "spec_acceptance.csv found: set SERVEPLAN_SHARED or pass "
                                   "--spec-acceptance)")
    names = METHOD_ROWS[method]
    same, other = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if (row.get("method") or "").strip().lower() not in names:
                continue
            try:
                tau = float(row.get("mean_accepted_tokens_tau") or "nan")
            except ValueError:
                continue
            if not tau == tau or tau < 1.0:
                continue
            k = _k_of(row.get("num_draft_tokens_or_tree", "")) or ASSUMED_TREE_K
            a = acceptance_from_tau(tau, k)
            (same if _norm(row.get("target_model", "")) == _norm(target) else other).append(a)
    rows = same or other
    if not rows:
        return Acceptance(default, f"default per-token acceptance {default} for {method} (no "
                                   f"{method} rows in {path.name})")
    a = round(median(rows), 3)
    where = f"{target} rows" if same else f"all {method} rows (none for {target})"
    return Acceptance(a, f"median per-token acceptance {a} of {len(rows)} {where} in {path.name}")
