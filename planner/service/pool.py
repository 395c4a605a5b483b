"""The service's bounded worker pool: processes, a queue limit, a time limit and a cache.

Planning and simulation are CPU-bound Python: they run in a process pool (`workers`
processes, started with "spawn": forking a server that already runs threads is unsafe), never
on the event loop. Around it:
- a semaphore bounds the work admitted (running + queued) to `workers + max_queue`; past that a
  request is refused at once (503, `Busy`) rather than queued without bound;
- each request has a time limit from its arrival (queue wait included): at the limit the
  client gets a 504 (`TimedOut`) and the worker interrupts the job itself (planner.service.jobs);
  the semaphore is released only when the worker is really free, so the bound stays honest;
- an LRU cache keyed by the canonical request JSON (sorted keys, defaults filled, plus the
  fingerprints of the files it reads) answers repeated requests without work, and a request
  identical to one still running waits for that one instead of computing it twice.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from costmodel.errors import ServePlanError
from planner.service.jobs import DeadlineExceeded, run_job


class Busy(Exception):
    """The pool is full: HTTP 503."""


class TimedOut(Exception):
    """The request passed its time limit: HTTP 504."""


def canonical_key(kind: str, kwargs: dict, fingerprints: list) -> str:
    """The cache key: the job kind, its arguments and its files' fingerprints as sorted JSON."""
    return json.dumps([kind, kwargs, sorted(map(list, fingerprints))], sort_keys=True,
                      separators=(",", ":"), default=str)


class JobPool:
    """Run service jobs in worker processes with a queue bound, a deadline and a cache."""

    def __init__(self, workers: int, *, timeout_s: float, max_queue: int, cache_size: int):
        if workers < 1:
            raise ServePlanError(f"workers {workers!r}; expected an integer >= 1")
        if not timeout_s > 0:
            raise ServePlanError(f"timeout {timeout_s!r} s; expected a number > 0")
        if max_queue < 0 or cache_size < 0:
            raise ServePlanError(f"queue {max_queue!r} / cache {cache_size!r}; expected >= 0")
        self.workers = workers
        self.timeout_s = float(timeout_s)
        self.max_in_flight = workers + max_queue
        self.cache_size = cache_size
        self._cache: OrderedDict[str, object] = OrderedDict()
        self._running: dict[str, asyncio.Future] = {}
        self._sem: threading.BoundedSemaphore | None = None
        self._executor: ProcessPoolExecutor | None = None
        self.in_flight = 0

    # --- life cycle ----------------------------------------------------------------------------
    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    async def start(self) -> None:
        """Start the processes and import the library in each (first requests then run warm)."""
        self._sem = threading.BoundedSemaphore(self.max_in_flight)
        self._executor = self._new_executor()
        warm = [self._executor.submit(run_job, "warm", {}, time.monotonic() + 600)
                for _ in range(self.workers)]
        await asyncio.gather(*(asyncio.wrap_future(f) for f in warm))

    def stop(self) -> None:
        ex, self._executor = self._executor, None
        if ex is None:
            return
        # a job past its deadline stops itself; do not wait for the rest of running ones
        procs = list(getattr(ex, "_processes", {}).values())
        ex.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.terminate()

    @property
    def cache_entries(self) -> int:
        return len(self._cache)

    # --- running a job -------------------------------------------------------------------------
    async def run(self, kind: str, kwargs: dict, fingerprints: list | None = None) -> tuple[dict, str]:
        """The job's result and how it was served: "hit" (cache), "joined" (an identical
        request was running) or "miss". Raises ServePlanError (bad input), Busy or TimedOut."""
        key = canonical_key(kind, kwargs, fingerprints or [])
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key], "hit"
        start = time.monotonic()
        deadline = start + self.timeout_s
        how = "joined"
        fut = self._running.get(key)
        if fut is None:
            fut, how = self._submit(kind, kwargs, key, deadline), "miss"
        try:
            status, payload = await asyncio.wait_for(asyncio.shield(fut),
                                                     max(deadline - time.monotonic(), 0.0))
        except asyncio.TimeoutError:
            raise TimedOut(self._late(kind)) from None
        except DeadlineExceeded:
            raise TimedOut(self._late(kind)) from None
        except BrokenProcessPool:
            self._restart()
            raise Busy("a worker process died (out of memory?); the pool was restarted: "
                       "retry the request") from None
        if status == "ok":
            return payload, how
        if status == "timeout":
            raise TimedOut(f"{self._late(kind)} ({payload})")
        raise ServePlanError(str(payload))

    def _late(self, kind: str) -> str:
        return (f"{kind} did not finish within the service's time limit of {self.timeout_s:g} s "
                "(serveplan serve --timeout-s); ask for less work (fewer requests, a smaller GPU "
                "inventory, no exhaustive search) or raise the limit")

    def _submit(self, kind: str, kwargs: dict, key: str, deadline: float) -> asyncio.Future:
        assert self._sem is not None and self._executor is not None, "JobPool.start() not awaited"
        if not self._sem.acquire(blocking=False):
            raise Busy(f"the service is busy: {self.in_flight} requests running or queued, the "
                       f"most it admits (serveplan serve --workers / --queue); retry shortly")
        try:
            cfut = self._executor.submit(run_job, kind, kwargs, deadline)
        except BrokenProcessPool:
            self._sem.release()
            self._restart()
            raise Busy("the worker pool had broken and was restarted: retry the request") from None
        self.in_flight += 1
        fut = asyncio.wrap_future(cfut)
        self._running[key] = fut
        fut.add_done_callback(lambda f: self._finished(key, f))
        return fut

    def _finished(self, key: str, fut: asyncio.Future) -> None:
        """The worker is free (the event loop thread runs this): release, cache a success."""
        self.in_flight -= 1
        self._sem.release()
        if self._running.get(key) is fut:
            del self._running[key]
        if fut.cancelled() or fut.exception() is not None:
            return
        status, payload = fut.result()
        if status == "ok" and self.cache_size:
            self._cache[key] = payload
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _restart(self) -> None:
        old = self._executor
        self._executor = self._new_executor()
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)
