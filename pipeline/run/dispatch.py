"""The dispatch loop: every unfinished tile to the cluster as two tasks, a bounded number at a
time, with retries.

The client's part per tile is picking the tile's scenes from the plan's index and submitting
two tasks (see :mod:`pipeline.run.tile`): a composite task, which any thread may run, then a
model task (models, quality layers, write), which claims half the ``GPU`` resource on a
cluster whose workers offer one, so that a GPU runs one tile's models while the tile before
writes. Enough tiles are in flight that while a GPU runs one tile's models, CPU threads
composite the next ones; model tasks go first when both wait, so composites never pile up
ahead of the GPUs.
"""

from __future__ import annotations

import functools
import heapq
import pickle
import queue
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field

from distributed import Client, Future

from pipeline.errors import reason
from pipeline.geo.grid import Tile
from pipeline.product.overviews import level_one_with_tiles
from pipeline.product.store import ProductStore
from pipeline.run.cluster import GPU_RESOURCE, has_gpu_workers
from pipeline.run.plan import Plan
from pipeline.run.retry import RetryPolicy
from pipeline.run.tile import TileInput, TileJob, complete_tile, prepare_tile

#: Key prefixes of a tile's two tasks, by which the task stream tells them apart.
COMPOSITE_TASK, MODEL_TASK = "composite", "superresolve"
#: Scheduler tasks per tile.
TASKS_PER_TILE = 2
#: The share of a GPU worker's ``GPU`` resource that a model task claims: two tiles' model
#: tasks run on a GPU worker at once, one using the GPU while the other writes (the models
#: themselves take turns, see :mod:`pipeline.run.tile`).
MODEL_SHARE = 0.5
#: Seconds between two looks at the cluster's size, so that workers joining a running job
#: (a worker group scaled up, CPU workers added) raise the number of tiles in flight.
RESIZE_EVERY = 30.0


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: The runner's own time handing out tiles (picking their scenes, submitting their tasks).
    client_seconds: float = 0.0
    #: The scheduler's address when the run lost it before every tile was tried; the tiles
    #: neither done nor failed are left for the next run.
    lost: str | None = None


def tile_job(
    plan: Plan, store: ProductStore, level_one: bool = False, exclusive: bool = False
) -> TileJob:
    """What the workers need of the plan besides the tile and its scenes."""
    r = plan.request
    return TileJob(
        store,
        plan.grid,
        r.bands,
        plan.resolver,
        r.devices,
        r.mask_snow,
        r.block_size,
        level_one,
        exclusive,
        signer=plan.signer,
    )


class ScenePayloads:
    """A tile's scenes as the bytes its composite task carries.

    They travel pickled: the scheduler unpickles every task it is given, and a CRS or a
    footprint takes it far longer to rebuild than bytes, which only the workers unpickle.
    Each scene is pickled once per run: a scene covers thousands of tiles, and pickling a
    European tile's 46 scenes anew would cost the runner more than the rest of its work on
    the tile.
    """

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._pickled: dict[int, bytes] = {}

    def __call__(self, tile: Tile) -> bytes:
        pickled = [self._scene(i) for i in self._plan.scene_indices_over(tile)]
        return pickle.dumps(pickled, protocol=pickle.HIGHEST_PROTOCOL)

    def _scene(self, index: int) -> bytes:
        if index not in self._pickled:
            scene = self._plan.items[index]
            self._pickled[index] = pickle.dumps(scene, protocol=pickle.HIGHEST_PROTOCOL)
        return self._pickled[index]


def submit_tile(
    client: Client,
    job: bytes,
    scenes: bytes,
    tile: Tile,
    name: str,
    resources: dict[str, float] | None,
) -> Future:
    """Submit one tile's two tasks; return the future of the second (the tile's summary).

    ``job`` is the pickled :class:`TileJob`, ``scenes`` the tile's (see :class:`ScenePayloads`).
    """
    prepared = client.submit(_prepare, job, tile, scenes, key=f"{COMPOSITE_TASK}-{name}")
    return client.submit(
        _complete,
        job,
        tile,
        prepared,
        key=f"{MODEL_TASK}-{name}",
        resources=resources,
        priority=1,
    )


@functools.lru_cache(maxsize=4)
def _job(job: bytes) -> TileJob:
    """The run's job, unpickled once per worker process."""
    return pickle.loads(job)


def _prepare(job: bytes, tile: Tile, scenes: bytes) -> TileInput:
    return prepare_tile(_job(job), tile, [pickle.loads(s) for s in pickle.loads(scenes)])


def _complete(job: bytes, tile: Tile, prepared: TileInput) -> dict:
    return complete_tile(_job(job), tile, prepared)


def tiles_in_flight(client: Client) -> int:
    """Two tiles per worker thread: one composited while the other is modelled."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return max(2, 2 * sum(w.get("nthreads", 1) for w in workers.values()))


def run_tiles(
    plan: Plan,
    store: ProductStore,
    client: Client,
    on_progress: Callable[[str, str | None], None] | None = None,
    retry: RetryPolicy | None = None,
    on_retry: Callable[[str, str, float], None] | None = None,
) -> RunSummary:
    """Compute every unfinished tile on the cluster, a bounded number at a time.

    A tile that fails for a reason that may pass (a read error, a lost worker) is submitted
    again after a growing delay; one that still fails, or fails for any other reason, is
    recorded with its reason and the run goes on. ``on_progress(tile key, error or None)``
    follows each tile that is finished with; ``on_retry(tile key, error, delay)`` each retry.
    ``retry`` defaults to :class:`RetryPolicy`'s defaults.
    """
    summary = RunSummary()
    finished = store.done_tiles()
    todo = deque(t for t in plan.tiles if t.key not in finished)
    summary.skipped = [t.key for t in plan.tiles if t.key in finished]
    _Dispatch(plan, store, client, summary, retry or RetryPolicy(), on_progress, on_retry).run(todo)
    return summary


class _Dispatch:
    """One call of :func:`run_tiles`: the tiles in flight, those waiting for a retry, and the
    futures that ended."""

    def __init__(
        self,
        plan: Plan,
        store: ProductStore,
        client: Client,
        summary: RunSummary,
        retry: RetryPolicy,
        on_progress: Callable[[str, str | None], None] | None,
        on_retry: Callable[[str, str, float], None] | None,
    ) -> None:
        self.client, self.summary, self.retry = client, summary, retry
        self.on_progress, self.on_retry = on_progress, on_retry
        gpu = has_gpu_workers(client)
        level_one = level_one_with_tiles(store, plan.grid)
        self.job = pickle.dumps(tile_job(plan, store, level_one, exclusive=gpu))
        self.resources = {GPU_RESOURCE: MODEL_SHARE} if gpu else None
        self.payloads = ScenePayloads(plan)
        self.in_flight, self.resized = tiles_in_flight(client), time.monotonic()
        self.run_id = uuid.uuid4().hex[:8]  # keys unique to this run, should two share a scheduler
        self.running: dict[Future, tuple[Tile, int]] = {}
        self.delayed: list[tuple[float, int, Tile, int]] = []  # (due time, order, tile, attempt)
        # each future reports its own end here: waiting on all of them at every turn would cost
        # the number in flight, thousands on a large cluster, per tile
        self.ended: queue.SimpleQueue[Future] = queue.SimpleQueue()

    def run(self, todo: deque[Tile]) -> None:
        """Hand out ``todo`` until every tile is done or failed, or the scheduler is lost."""
        address = self.client.scheduler.address if self.client.scheduler else None
        while todo or self.delayed or self.running:
            if self.client.status != "running":  # reconnecting to a lost scheduler, or given up
                if self.client.status in ("closing", "closed"):
                    self.summary.lost = address
                    return
                time.sleep(0.1)
                continue
            self._top_up(todo)
            for future in self._wait():
                self._settle(future)

    def _submit(self, tile: Tile, attempt: int) -> None:
        started = time.perf_counter()
        name = f"{tile.key}-{self.run_id}-{attempt}"
        future = submit_tile(self.client, self.job, self.payloads(tile), tile, name, self.resources)
        self.running[future] = (tile, attempt)
        future.add_done_callback(self.ended.put)
        self.summary.client_seconds += time.perf_counter() - started

    def _top_up(self, todo: deque[Tile]) -> None:
        """Submit the retries that are due, then new tiles, up to the number in flight."""
        if time.monotonic() - self.resized > RESIZE_EVERY:
            self.in_flight, self.resized = tiles_in_flight(self.client), time.monotonic()
        delayed = self.delayed
        while len(self.running) < self.in_flight and (
            delayed and delayed[0][0] <= time.monotonic()
        ):
            _, _, tile, attempt = heapq.heappop(delayed)
            self._submit(tile, attempt)
        while len(self.running) < self.in_flight and todo:
            self._submit(todo.popleft(), 1)

    def _wait(self) -> list[Future]:
        """The futures that ended, after waiting for one a second at most (so that Ctrl-C is
        seen), or until the next retry is due."""
        wait_for = max(0.0, self.delayed[0][0] - time.monotonic()) if self.delayed else None
        if not self.running:
            time.sleep(wait_for or 0.0)
            return []
        try:
            done = [self.ended.get(timeout=min(wait_for, 1.0) if wait_for is not None else 1.0)]
        except queue.Empty:
            return []
        while not self.ended.empty():
            done.append(self.ended.get())
        return done

    def _settle(self, future: Future) -> None:
        """Record how a tile's tasks ended, or schedule the tile's retry."""
        tile, attempt = self.running.pop(future)
        # a future is cancelled when the client loses the scheduler (see retry.TRANSIENT)
        cancelled = future.cancelled()
        error = CancelledError("lost the scheduler") if cancelled else future.exception()
        message = None if error is None else f"{type(error).__name__}: {reason(error)}"
        if error is not None and self.retry.again(error, attempt):
            delay = self.retry.delay(attempt)
            heapq.heappush(self.delayed, (time.monotonic() + delay, attempt, tile, attempt + 1))
            if self.on_retry:
                self.on_retry(tile.key, message, delay)
            return
        if message is None:
            self.summary.done.append(tile.key)
        else:
            self.summary.failed[tile.key] = message
        if self.on_progress:
            self.on_progress(tile.key, message)
