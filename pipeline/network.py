"""How long a network call may wait, and how often it is tried, for each client the pipeline uses.

Every request to a catalog, an asset or an object store gives up when the server sends nothing
for :func:`timeout` seconds (while connecting, or between two bytes of an answer: a slow but
moving download is never cut), so that a server that accepts a connection and never answers
ends a run with one line instead of hanging it. Requests that may pass on another try (a
time-out, a reset connection, a 429 or 5xx answer) are tried :data:`TRIES` times in all; a
tile whose reads still fail is tried again as a whole (see :mod:`pipeline.run.retry`).
"""

from __future__ import annotations

import math
import os
from typing import Any

from pipeline.errors import UserError

#: The environment variable that sets :func:`timeout`, in seconds.
TIMEOUT_ENV = "S2SR_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
#: Tries of one request that may pass on another try.
TRIES = 3
#: HTTP answers that may pass on another try.
RETRY_STATUS = (429, 500, 502, 503, 504)


def timeout() -> float:
    """Seconds a request may wait for the server: ``$S2SR_TIMEOUT``, else 30."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"${TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


#: GDAL's network file systems, whose answers (failures included) it remembers per process.
GDAL_NETWORK_PREFIXES = ("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/", "/vsiadls/", "/vsioss/")


def timed_out(err: BaseException) -> bool:
    """Whether ``err``, or an error it wraps, is a request's time-out (each client has its
    own types for it; their messages say "timed out")."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, TimeoutError) or "timed out" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def no_answer(seconds: float) -> str:
    """What a message says of a server that did not answer in time."""
    return f"no answer in {seconds:g} s (${TIMEOUT_ENV} sets how long to wait)"


def gdal_options(seconds: float, cached: bool = True) -> dict[str, str]:
    """GDAL configuration for reading assets over HTTP (and ``/vsis3``): connect and stall
    limits, retries; no ``HEAD`` request, which a URL signed for ``GET`` answers with 403.

    GDAL remembers what a URL answered for the life of the process, a 404 or a time-out
    too: without ``cached``, requests bypass that memory (and refresh it), as a retry must.
    """
    fresh = {} if cached else {"CPL_VSIL_CURL_NON_CACHED": ":".join(GDAL_NETWORK_PREFIXES)}
    return {
        **fresh,
        "GDAL_HTTP_CONNECTTIMEOUT": f"{seconds:g}",
        "GDAL_HTTP_LOW_SPEED_TIME": f"{math.ceil(seconds)}",  # whole seconds
        "GDAL_HTTP_LOW_SPEED_LIMIT": "1",  # byte per second: nothing at all
        "GDAL_HTTP_MAX_RETRY": str(TRIES - 1),
        "GDAL_HTTP_RETRY_DELAY": "1",
        "CPL_VSIL_CURL_USE_HEAD": "NO",
    }


def storage_options(url: str, seconds: float) -> dict[str, Any]:
    """fsspec options with the time limits and retries of the file system that ``url`` is on
    (none for a local path or a file system without such options)."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol in ("s3", "s3a"):
        return {
            "config_kwargs": {
                "connect_timeout": seconds,
                "read_timeout": seconds,
                "retries": {"max_attempts": TRIES, "mode": "standard"},
            }
        }
    if protocol in ("http", "https"):
        import aiohttp  # fsspec's HTTP client, present whenever fsspec reads HTTP

        return {
            "client_kwargs": {
                "timeout": aiohttp.ClientTimeout(
                    total=None, sock_connect=seconds, sock_read=seconds
                )
            }
        }
    return {}


def http_retries() -> Any:
    """The retry rule of a ``requests`` session (the STAC API client): every method, a STAC
    search being a POST that changes nothing."""
    from urllib3.util.retry import Retry

    return Retry(
        total=TRIES - 1,
        backoff_factor=0.5,
        status_forcelist=RETRY_STATUS,
        allowed_methods=None,
        raise_on_status=False,
    )
