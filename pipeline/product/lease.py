"""Which runs are writing a product: one lease file per run, renewed while the run lives.

Runs that resume a product with the same recipe may write it together (each tile is its own
shard, and they write the same bytes), but ``--overwrite`` deletes the product first: while
another run holds a lease on it, :meth:`pipeline.product.store.ProductStore.create` refuses to. A
lease
is alive while its run renews it (every :data:`RENEW_EVERY` seconds; one not renewed for
:data:`EXPIRES_AFTER` seconds is a dead run's) and, on the machine that took it, while its
process exists, so that a run killed outright frees the product for the next one at once.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.product.store import ProductStore

#: Folder of the leases inside the product (not a Zarr node).
LEASES = "leases"
RENEW_EVERY = 30.0
EXPIRES_AFTER = 120.0


def holders(store: ProductStore) -> list[dict[str, Any]]:
    """The live leases on the product: what each says of its run (host, pid, since)."""
    now = time.time()
    return [lease for lease in store.documents(LEASES) if _alive(lease, now)]


def describe(lease: dict[str, Any]) -> str:
    """``process 123 on host-a since 2025-06-01T10:00:00+00:00``."""
    return f"process {lease.get('pid')} on {lease.get('host')} since {lease.get('since')}"


@contextlib.contextmanager
def held(store: ProductStore) -> Iterator[None]:
    """Hold a lease on the product while the block runs (renewed by a daemon thread); it is
    removed at the end, or expires if the process dies."""
    name = f"{LEASES}/{uuid.uuid4().hex}.json"
    lease = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }

    def renew() -> None:
        store.put_json(name, {**lease, "renewed": time.time()})

    renew()
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(RENEW_EVERY):
            with contextlib.suppress(Exception):  # a missed renewal is retried; 4 may be
                renew()

    thread = threading.Thread(target=keep, name="product-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(Exception):  # else it expires
            store.remove(name)


def _alive(lease: dict[str, Any], now: float) -> bool:
    renewed = lease.get("renewed")
    if not isinstance(renewed, int | float) or now - renewed > EXPIRES_AFTER:
        return False
    if lease.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(lease["pid"]), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True  # another user's process, or a lease this host cannot judge
    return True
