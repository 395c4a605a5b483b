"""Where ServePlan finds the public data it reads but never commits: `../shared`.

`$SERVEPLAN_SHARED` wins when set; otherwise the `shared/` folder beside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from costmodel.errors import ServePlanError

REPO_DIR = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The shared folder (it holds `data/`); a ServePlanError naming the path when missing."""
    env = os.environ.get("SERVEPLAN_SHARED")
    p = Path(env) if env else REPO_DIR.parent / "shared"
    if not (p / "data").is_dir():
        how = "$SERVEPLAN_SHARED" if env else "the default (the folder beside the repository)"
        raise ServePlanError(
            f"shared data not found at {p}/data (from {how}); set SERVEPLAN_SHARED to the folder "
            "that holds data/"
        )
    return p


def profiles_dir() -> Path:
    """`<shared>/data/profiles`: Vidur, AIConfigurator and Splitwise measurements."""
    return shared_dir() / "data" / "profiles"
