"""Which failures of a tile are worth another try, and after what delay."""

from __future__ import annotations

from concurrent.futures import CancelledError
from dataclasses import dataclass

from distributed.comm.core import CommClosedError
from distributed.scheduler import KilledWorker

#: Errors that may pass on a second try: reads and connections (OSError covers rasterio's
#: read errors and the network's), time-outs, workers lost under a task, and tasks cancelled
#: when the runner lost the scheduler (it reconnects, or the run stops).
TRANSIENT = (OSError, TimeoutError, KilledWorker, CommClosedError, CancelledError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after what delay, a tile that failed for a passing reason is tried again.

    The delay doubles from ``first_delay`` seconds; only :data:`TRANSIENT` errors are retried,
    since a bad model option or a corrupt file fails the same way every time.
    """

    attempts: int = 3
    first_delay: float = 2.0

    def again(self, error: BaseException, attempt: int) -> bool:
        return attempt < self.attempts and may_pass(error)

    def delay(self, attempt: int) -> float:
        return self.first_delay * 2 ** (attempt - 1)


def may_pass(error: BaseException) -> bool:
    """Whether ``error`` or one of its causes is :data:`TRANSIENT`, by type or, since stackstac
    wraps read errors in a RuntimeError that reaches the client as text, by name."""
    names = {t.__name__ for t in TRANSIENT} | {"RasterioIOError", "CPLE_HttpResponseError"}
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, TRANSIENT) or any(name in str(seen) for name in names):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
