"""Project error types. Every error names the bad value and what would be accepted."""


class ServePlanError(ValueError):
    """Bad input from a user: printed as one line by the CLI, a 422 by the service."""


class DoesNotFitError(ServePlanError):
    """A deployment whose weights, activations and minimum KV cache exceed GPU memory."""

    def __init__(self, message: str, need_bytes: float, have_bytes: float):
        super().__init__(message)
        self.need_bytes = need_bytes
        self.have_bytes = have_bytes

    def __reduce__(self):
        # rebuilt with all three arguments when it crosses a process boundary (a replay in a
        # worker process that does not fit, sim.runs.workers; the sweep's workers)
        return type(self), (str(self), self.need_bytes, self.have_bytes)
