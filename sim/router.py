"""Routers: which replica of a pool gets a request.

- `round_robin`: replicas in turn.
- `least_tokens`: the replica with the fewest outstanding tokens (prompt tokens not yet
  prefilled plus output tokens not yet generated, over its requests; it uses each request's
  output length, an oracle a real router approximates); ties go to the lowest index.
- `prefix_affinity`: the replica whose prefix cache holds the longest prefix of the request's
  block hashes, unless its outstanding tokens exceed the least loaded replica's by more than
  `AFFINITY_SLACK` x the request's own tokens (then, and for requests without hashes, as
  `least_tokens`).
"""

from __future__ import annotations

from costmodel.errors import ServePlanError

ROUTERS = ("round_robin", "least_tokens", "prefix_affinity")
AFFINITY_SLACK = 4.0


class Router:
    def __init__(self, policy: str, replicas: list):
        if policy not in ROUTERS:
            raise ServePlanError(f"router {policy!r}; expected one of {', '.join(ROUTERS)}")
        self.policy = policy
        self.replicas = replicas
        self._next = 0

    def pick(self, tokens: int, keys=None):
        reps = self.replicas
        if len(reps) == 1:
            return reps[0]
        if self.policy == "round_robin":
            r = reps[self._next % len(reps)]
            self._next += 1
            return r
        least = min(reps, key=_load)
        if self.policy == "prefix_affinity" and keys:
            best, best_hold = None, 0
            for r in reps:
                if r.cache is None:
                    continue
                h = r.cache.holds(keys)
                if h > best_hold or (h == best_hold and best is not None and r.outstanding < best.outstanding):
                    best, best_hold = r, h
            if best is not None and best_hold > 0 and \
                    best.outstanding - least.outstanding <= AFFINITY_SLACK * tokens:
                return best
        return least


def _load(r) -> int:
    return r.outstanding
