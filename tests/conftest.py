"""Shared fixtures: real servers on 127.0.0.1 started by the test session itself, and the
products that several test modules read.

Fixtures (all session-scoped, started lazily the first time a test asks for them):

``s3_server`` -> :class:`tests.servers.S3Server`
    SeaweedFS S3 gateway.  While it runs its :meth:`~tests.servers.S3Server.env` (AWS_* variables
    for GDAL/rasterio and s3fs/botocore) is set in ``os.environ``, so ``s3://`` URLs work
    in rasterio, s3fs and zarr without extra options, in this process and in processes
    started afterwards.
``dask_client`` -> :class:`distributed.Client`
    A ``LocalCluster`` of 2 worker processes x 1 thread on 127.0.0.1 (no dashboard).  It
    depends on ``s3_server`` so the workers inherit the S3 environment.
``rustac_api`` -> ``(collection: dict, items: list[dict]) -> str``
    Starts a new in-memory ``rustac serve`` STAC API over that collection and items and
    returns its root URL.  No query/filter conformance.
``pgstac_api`` -> ``(collection: dict, items: list[dict]) -> str``
    Upserts the collection and items into the session's one pgstac database and returns
    the root URL of its stac-fastapi-pgstac API (query + CQL2 filter conformance).  Items
    from earlier calls stay: give each test its own collection id and search with
    ``collections=[id]``.  Fails (never skips) when PostgreSQL/PostGIS are missing.
``pgstac_server`` -> :class:`tests.servers.PgstacServer`
    The server behind ``pgstac_api``.
``hub`` -> :class:`Hub` (per test; the session itself keeps ``HF_HOME`` and ``S2SR_CACHE``
    in its temporary folder)
    A folder of model repositories of its own, served by the session's
    :class:`tests.servers.HubServer` (``hub_server``), with ``HF_ENDPOINT`` pointing at it and
    ``HF_HOME`` and ``S2SR_CACHE`` in the test's temporary folder, so downloads and the
    weights' trust file start empty.
``sr_without_hparams`` -> ``(checkpoint path, hparams.yaml text)``
    The SR fixture checkpoint without its hyper-parameters, and its run's ``hparams.yaml``.
``demo_product``, ``diffusion_product`` -> :class:`pathlib.Path`
    Products made by the region command (see :mod:`tests.products`), for tests that read them.
``fusion_product`` -> :class:`tests.products.Made`
    A small corner of the demo made with the learned fusion, and the command's run.
``flagged_product`` -> :class:`tests.products.Made`
    A product made on ``dask_client``'s cluster with a fusion model known to be bad, and the
    command's run that made it (its exit code and output).

Asset hrefs given to the STAC fixtures must be absolute (``file:///``, ``s3://``,
``http://``).  ``bash scripts/bootstrap.sh --test`` installs everything these need.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.products import (
    Made,
    make_demo_product,
    make_diffusion_product,
    make_flagged_product,
    make_fusion_product,
)
from tests.servers import (
    HubServer,
    PgstacServer,
    RustacServer,
    S3Server,
    ServerError,
    loopback_no_proxy,
)

StacApiFactory = Callable[[dict[str, Any], list[dict[str, Any]]], str]
#: The DiffFuSR reference fixture (random-weight checkpoints, their configs).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "difffusr"


def _start_or_fail(server: S3Server | RustacServer | PgstacServer | HubServer, what: str) -> None:
    """Start ``server``; on failure clean up and fail the test (never skip) with the reason."""
    try:
        server.start()
        return
    except ServerError as e:
        reason = str(e)
    server.stop()
    pytest.fail(f"{what} could not start:\n{reason}", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _loopback_bypasses_proxies() -> Iterator[None]:
    """Requests to our 127.0.0.1 servers never go through a proxy the machine may set."""
    with pytest.MonkeyPatch.context() as mp:
        value = loopback_no_proxy()
        mp.setenv("NO_PROXY", value)
        mp.setenv("no_proxy", value)
        yield


@pytest.fixture(scope="session", autouse=True)
def _own_caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hub downloads and the weights cache of the session in its temporary folder, never in
    the user's caches (``huggingface_hub`` reads ``HF_HOME`` at import: its constant too)."""
    from huggingface_hub import constants

    root = tmp_path_factory.mktemp("caches")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(root / "hf"))
        mp.setenv("S2SR_CACHE", str(root / "s2sr"))
        mp.setattr(constants, "HF_HUB_CACHE", str(root / "hf" / "hub"))
        yield


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """PyTorch on one thread for a module's tests (``pytest.mark.usefixtures``): fixed
    reduction orders, so results compare bit for bit with the reference fixtures."""
    import torch  # here, not at import: most tests never load it

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A running SeaweedFS S3 server whose env is set in ``os.environ`` meanwhile."""
    server = S3Server()
    _start_or_fail(server, "S3 server")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in server.env().items():
                mp.setenv(name, value)
            yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dask_client(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A ``distributed.Client`` on a 2-process local cluster whose workers see the S3 env."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # The scheduler serves /health etc. even without a dashboard; by default on
            # port 8787, which another cluster on the machine may hold.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            local_directory=str(tmp_path_factory.mktemp("dask")),
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def rustac_api() -> Iterator[StacApiFactory]:
    """Factory: ``rustac_api(collection, items) -> url`` of a fresh in-memory STAC API."""
    started: list[RustacServer] = []

    def start(collection: dict[str, Any], items: list[dict[str, Any]]) -> str:
        server = RustacServer(collection, items)
        started.append(server)
        _start_or_fail(server, "rustac STAC API")
        return server.url

    try:
        yield start
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture(scope="session")
def pgstac_server() -> Iterator[PgstacServer]:
    """The session's PostgreSQL + pgstac + stac-fastapi-pgstac server."""
    server = PgstacServer()
    _start_or_fail(server, "pgstac STAC API")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pgstac_api(pgstac_server: PgstacServer) -> StacApiFactory:
    """Factory: ``pgstac_api(collection, items) -> url`` after upserting them into pgstac."""

    def load(collection: dict[str, Any], items: list[dict[str, Any]]) -> str:
        pgstac_server.load(collection, items)
        return pgstac_server.url

    return load


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """The session's stand-in for the Hugging Face hub (see ``hub``)."""
    server = HubServer(tmp_path_factory.mktemp("hub"))
    _start_or_fail(server, "hub server")
    try:
        yield server
    finally:
        server.stop()


class Hub:
    """One test's model repositories on the hub server, and the environment that uses them."""

    def __init__(self, server: HubServer, space: str, home: Path) -> None:
        self.server, self.space = server, space
        self.env = {
            "HF_ENDPOINT": server.endpoint(space),
            "HF_HOME": str(home / "hf"),
            "S2SR_CACHE": str(home / "s2sr"),
        }

    def put(self, repo: str, path: str, content: bytes | Path) -> Path:
        """Publish ``content`` (bytes, or a file's) at ``path`` in ``repo`` (org/name)."""
        target = self.server.root / self.space / repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.read_bytes() if isinstance(content, Path) else content)
        return target

    def remove(self, repo: str, path: str) -> None:
        (self.server.root / self.space / repo / path).unlink()

    def requests(self) -> list[str]:
        """``"<METHOD> <path in the repository>"`` of every request made so far."""
        return self.server.requests(self.space)


@pytest.fixture
def hub(hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hub:
    """Repositories of this test's own on the hub server, with this process (and the
    processes it starts) pointed at them and at empty caches."""
    from huggingface_hub import constants

    served = Hub(hub_server, uuid.uuid4().hex, tmp_path)
    for name, value in served.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return served


@pytest.fixture(scope="session")
def sr_without_hparams(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The SR fixture checkpoint with its hyper-parameters removed, and an ``hparams.yaml``
    written from its config: a published checkpoint that the reference loads with its run's
    ``hparams.yaml``."""
    import torch
    import yaml

    checkpoint = torch.load(FIXTURES / "sr_small.ckpt", weights_only=True, map_location="cpu")
    del checkpoint["hyper_parameters"]
    path = tmp_path_factory.mktemp("sr-run") / "last.ckpt"
    torch.save(checkpoint, path)
    config = json.loads((FIXTURES / "sr_small_config.json").read_text())
    return path, yaml.safe_dump(config)


@pytest.fixture(scope="session")
def demo_product(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded demo made by the region command (baselines, 6 tiles); read it, never
    change it: copy it first."""
    return make_demo_product(tmp_path_factory.mktemp("demo-product"))


@pytest.fixture(scope="session")
def diffusion_product(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small corner of the demo with the diffusion RGB drawn twice (uncertainty layer)."""
    return make_diffusion_product(tmp_path_factory.mktemp("diffusion-product"))


@pytest.fixture(scope="session")
def fusion_product(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """A small corner of the demo with bicubic and the learned fusion's demo weights, and the
    command's run that made it. Read it, never change it: copy it first."""
    return make_fusion_product(tmp_path_factory.mktemp("fusion-product"))


@pytest.fixture(scope="session")
def flagged_product(tmp_path_factory: pytest.TempPathFactory, dask_client: Any) -> Made:
    """A small corner of the demo made with a colour-casting fusion model: its verdict is a
    hallucination risk. Read it, never change it: copy it first."""
    return make_flagged_product(
        tmp_path_factory.mktemp("flagged-product"), dask_client.scheduler.address
    )
