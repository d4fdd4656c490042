"""One process of OpenHES, built from its :class:`adapters.config.Settings`: what ``openhes
serve`` runs and what ``openhes demo`` runs on the embedded default.

:func:`build_services` opens the store and the task bus and wires the parts together:

- the head-end (:class:`headend.service.HeadEnd`) and its event consumption;
- the durable outbox and its delivery loop (:mod:`adapters.delivery`, messages retried for
  ``outbox.max_age`` seconds), the :class:`headend.subscriptions.Notifier` that turns head-end
  events into pushes to the configured ``[[subscriptions]]`` (waking the delivery loop);
- the router (``soap.sync_timeout``), which at start finishes the asynchronous requests a
  previous run accepted and did not answer (:meth:`headend.router.Router.resume`);
- ``worker.in_process`` workers (:class:`headend.worker.Worker`, ``worker.concurrency``
  sessions each, the DLMS driver, the engine settings ``engine.*``, ``retry.*`` and the
  per-path limits ``paths.*``, each worker with its own throttles) taking tasks from the bus;
  with ``memory://`` the tasks a previous run left open are published again first
  (:meth:`Services._republish`);
- the schedule runner (:class:`headend.schedules.ScheduleRunner`);
- the ESB edge (:func:`adapters.esb.serve`) when ``esb.enabled``, the file drop
  (:class:`adapters.filedrop.FileDrop`) when ``filedrop.folder`` is set;
- the authenticator (``auth.required``, lockout policy ``auth.lockout_*``) and the SOAP
  application (:func:`adapters.soap.app.create_app`).

:meth:`Services.start` starts the background parts in the running event loop,
:meth:`Services.start_http` serves the SOAP application with uvicorn in the same loop,
:meth:`Services.stop` stops everything in order (the router's pending asynchronous work first,
then the workers, which finish their running tasks, then the bus and the store).

With ``soap.processes`` > 1 the SOAP edge runs under gunicorn (uvicorn workers) in a child
process: each gunicorn worker builds its own *edge* services after the fork (store, bus,
head-end, router, authenticator: nothing that must run once), while this process runs the
*background* ones (workers, delivery, notifier, schedules, ESB, file drop). That needs a
broker all processes share: ``memory://`` is refused.

Every failure to start (bad setting, database or broker unreachable, port in use) is a
:class:`ServeError` whose message is one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import uvicorn

from adapters.cli_support import one_line
from adapters.config import ConfigError, Settings, engine_options

if TYPE_CHECKING:
    from adapters.auth.authenticator import Authenticator
    from adapters.delivery import Delivery
    from adapters.filedrop import FileDrop
    from adapters.soap.settings import SoapSettings
    from drivers.base import Driver
    from headend.keys import Keyring
    from headend.outbox import Outbox
    from headend.router import Router
    from headend.schedules import ScheduleRunner
    from headend.service import HeadEnd
    from headend.subscriptions import Notifier
    from headend.taskbus import TaskBus
    from headend.worker import Worker
    from mdm.database import Store

log = logging.getLogger("openhes.serve")

Role = Literal["all", "edge", "background"]
BROKER_PROBE_SECONDS = 10.0
STOP_GRACE_SECONDS = 30.0


class ServeError(Exception):
    """A process that cannot start; the message is one line for the operator."""


def hidden_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def soap_settings(settings: Settings, *, port: int | None = None) -> SoapSettings:
    """The SOAP edge's settings from the process settings."""
    from adapters.soap.settings import SoapSettings

    try:
        return SoapSettings(
            host=settings["soap.host"],
            port=settings["soap.port"] if port is None else port,
            workers=max(1, settings["soap.processes"]),
            max_request_bytes=settings["soap.max_request_bytes"],
            certfile=settings["tls.certificate"] or None,
            keyfile=settings["tls.key"] or None,
            client_ca=settings["tls.client_ca"] or None,
        )
    except ValueError as exc:
        raise ServeError(f"SOAP settings: {exc}") from None


def check_settings(settings: Settings) -> None:
    """Refuse combinations that cannot run (before anything is opened)."""
    memory = settings["broker.url"].split("://", 1)[0].lower() == "memory"
    if settings["soap.enabled"] and settings["soap.processes"] > 1 and memory:
        raise ServeError(
            "soap.processes > 1 needs a broker the processes share (broker.url = amqp://...); "
            "memory:// works inside one process only"
        )
    if memory and settings["worker.in_process"] == 0:
        raise ServeError(
            "worker.in_process = 0 needs a broker external workers can reach "
            "(broker.url = amqp://...); with memory:// no worker would ever run a task"
        )
    if settings["soap.enabled"] and settings["soap.processes"] < 1:
        raise ServeError("soap.processes must be at least 1")
    for key in ("tls.certificate", "tls.key", "tls.client_ca"):
        path = settings[key]
        if path and not Path(path).is_file():
            raise ServeError(f"{key}: no such file: {path}")
    soap_settings(settings)
    try:
        engine_options(settings)
    except ConfigError as exc:
        raise ServeError(str(exc)) from None
    folder = settings["filedrop.folder"]
    if folder and Path(folder).exists() and not Path(folder).is_dir():
        raise ServeError(f"filedrop.folder: {folder} is not a folder")


@dataclass(eq=False)
class Services:
    """The parts of one process (see the module docstring)."""

    settings: Settings
    role: Role
    store: Store
    bus: TaskBus
    headend: HeadEnd
    outbox: Outbox
    router: Router
    authenticator: Authenticator | None
    driver: Driver | None = None
    keyring: Keyring | None = None
    delivery: Delivery | None = None
    notifier: Notifier | None = None
    workers: list[Worker] = field(default_factory=list)
    runner: ScheduleRunner | None = None
    filedrop: FileDrop | None = None
    resumed: int = 0
    republished: int = 0  # open tasks of a previous run published again (memory:// only)
    url: str | None = None  # the SOAP base URL once served
    failed: asyncio.Event | None = None  # set when a background part died
    _stop: asyncio.Event | None = None
    _tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    _server: uvicorn.Server | None = None
    _server_task: asyncio.Task[Any] | None = None
    _started: bool = False
    _closed: bool = False

    # -- starting ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background parts in the running loop. ServeError when the broker is
        unreachable."""
        if self._started:
            return
        self._started = True
        self._stop = asyncio.Event()
        self.failed = asyncio.Event()
        if not self.bus.memory:
            await _probe_broker(self.bus)
        await self.headend.start()
        background = self.role in ("all", "background")
        if background:
            self._start_delivery()
            if self.bus.memory:
                self._republish()
            if self.settings["worker.in_process"]:
                self._start_workers()
            from headend.schedules import ScheduleRunner

            self.runner = ScheduleRunner(self.store, self.headend)
            self._spawn("schedules", self.runner.run(self._stop))
            if self.settings["esb.enabled"]:
                self._start_esb()
            if self.settings["filedrop.folder"]:
                self._start_filedrop()
            self.resumed = await self.router.resume()
            if self.resumed:
                log.info("finished %d asynchronous requests of a previous run", self.resumed)

    def _republish(self) -> None:
        """With ``memory://`` the task bus lives and dies with this process: the tasks a
        previous run left queued, running or waiting for a retry are in the database only.
        Publish them again so this process's workers finish their jobs (a task finished
        meanwhile is skipped by the worker). With an AMQP broker the durable queue still holds
        them (and unacknowledged ones are redelivered): republishing there would deliver
        each twice, so it is not done."""
        self.republished = self.headend.republish()
        if self.republished:
            log.info("published again %d open tasks of a previous run", self.republished)

    def _start_delivery(self) -> None:
        from adapters.delivery import Delivery, DeliveryPolicy
        from headend.subscriptions import Notifier

        policy = DeliveryPolicy(
            max_age=timedelta(seconds=self.settings["outbox.max_age"]),
            concurrency=max(1, self.settings["outbox.concurrency"]),
        )
        self.delivery = Delivery(self.outbox, policy=policy)
        assert self._stop is not None
        self._spawn("delivery", self.delivery.run(self._stop))
        self.notifier = Notifier(
            self.store,
            self.outbox,
            configured=self.settings.subscriptions,
            on_enqueued=self.delivery.wake,
        )
        self.headend.add_listener(self.notifier)

    def _start_workers(self) -> None:
        from headend.throttle import Throttles
        from headend.worker import Worker

        config, limits = engine_options(self.settings)

        if self.driver is None:
            from drivers.dlms import DlmsDriver

            self.driver = DlmsDriver()
        assert self._stop is not None
        for number in range(self.settings["worker.in_process"]):
            worker = Worker(
                self.store,
                self.bus,
                self.driver,
                concurrency=max(1, self.settings["worker.concurrency"]),
                keyring=self.keyring,
                grace=10.0,
                config=config,
                throttles=Throttles(limits),  # each worker its own: limits hold per worker
            )
            if self.settings["worker.in_process"] > 1:
                worker.name = f"{worker.name}/{number + 1}"
            self.workers.append(worker)
            self._spawn(f"worker {number + 1}", worker.run(self._stop))

    def _start_esb(self) -> None:
        from adapters import esb

        settings = esb.EsbSettings(
            url=self.settings["esb.url"] or self.settings["broker.url"],
            request_queue=self.settings["esb.request_queue"],
            event_exchange=self.settings["esb.event_exchange"],
        )
        assert self._stop is not None
        self._spawn(
            "esb",
            esb.serve(
                self.router,
                settings,
                self._stop,
                store=self.store,
                add_listener=self.headend.add_listener,
            ),
        )

    def _start_filedrop(self) -> None:
        from adapters.filedrop import FileDrop, FileDropSettings

        try:
            self.filedrop = FileDrop(
                self.router,
                FileDropSettings(
                    Path(self.settings["filedrop.folder"]),
                    poll_interval=self.settings["filedrop.poll_interval"],
                ),
            )
        except OSError as exc:
            raise ServeError(f"filedrop.folder: {one_line(exc)}") from None
        assert self._stop is not None
        self._spawn("file drop", self.filedrop.run(self._stop))

    def _spawn(self, name: str, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine, name=f"openhes {name}")
        self._tasks[name] = task

        def done(t: asyncio.Task[Any]) -> None:
            if t.cancelled() or self._stop is None or self._stop.is_set():
                return
            exc = t.exception()
            if exc is not None:
                log.error("%s stopped: %s", name, one_line(exc), exc_info=exc)
            else:
                log.error("%s stopped on its own", name)
            if self.failed is not None:
                self.failed.set()

        task.add_done_callback(done)

    # -- HTTP --------------------------------------------------------------------------------

    def app(self) -> Any:
        """The SOAP application (its lifespan is this object's start and stop only when
        built by :func:`edge_app`)."""
        from adapters.soap.app import create_app

        return create_app(self.router, self.authenticator, soap_settings(self.settings))

    async def start_http(self, sock: socket.socket | None = None) -> str:
        """Serve the SOAP application with uvicorn in this loop; returns the base URL
        (``http(s)://host:port``). ``sock``: an already bound socket (else one is bound to
        ``soap.host``:``soap.port``, 0 for a port the OS chooses)."""
        from adapters.soap.server import uvicorn_config

        settings = soap_settings(self.settings)
        if sock is None:
            sock = bind(settings.host, settings.port)
        port = sock.getsockname()[1]
        config = uvicorn_config(self.app(), settings, port=port)
        server = _LoopServer(config)
        self._server = server
        self._server_task = asyncio.create_task(server.serve(sockets=[sock]), name="openhes soap")
        while not server.started:
            if self._server_task.done():
                exc = self._server_task.exception()
                raise ServeError(f"the SOAP server did not start: {exc or 'it stopped'}")
            await asyncio.sleep(0.01)
        scheme = "https" if settings.tls else "http"
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
        host = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{host}:{port}"
        return self.url

    # -- stopping ----------------------------------------------------------------------------

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop everything, in order; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server_task, grace)
        if self._started:
            with contextlib.suppress(Exception):
                await self.router.drain(min(grace, 10.0))
            if self._stop is not None:
                self._stop.set()
            tasks = list(self._tasks.values())
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=grace)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=5.0)
            with contextlib.suppress(Exception):
                await self.headend.stop()
        self.close()

    def close(self) -> None:
        """Release the bus and the store (what :func:`build_services` opened)."""
        with contextlib.suppress(Exception):
            self.bus.close()
        with contextlib.suppress(Exception):
            self.store.close()

    async def __aenter__(self) -> Services:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class _LoopServer(uvicorn.Server):
    """uvicorn in a loop it does not own: the signals are the process's (see :func:`serve`)."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound to host:port; ServeError (one line) when it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def broker_problem(bus: TaskBus, seconds: float = BROKER_PROBE_SECONDS) -> str | None:
    """Ask ``bus`` how many tasks wait; what is wrong with the broker as one line, or None
    when it answered (``memory://`` needs no asking). The CLI and ``serve`` both check this
    way, so an unreachable broker is an error at start, not a hang or a retry loop later."""
    if bus.memory:
        return None
    where = hidden_url(str(bus.url))
    pool = ThreadPoolExecutor(1, thread_name_prefix="broker-probe")
    try:
        pool.submit(bus.pending_tasks).result(seconds)
    except FutureTimeout:
        return f"cannot reach the broker {where}: no answer in {seconds:.0f} s"
    except Exception as exc:
        return f"cannot reach the broker {where}: {one_line(exc)}"
    finally:
        pool.shutdown(wait=False)
    return None


async def _probe_broker(bus: TaskBus) -> None:
    problem = await asyncio.to_thread(broker_problem, bus)
    if problem is not None:
        raise ServeError(problem)


def build_services(
    settings: Settings,
    *,
    role: Role = "all",
    driver: Driver | None = None,
    keyring: Keyring | None = None,
    migrate: bool = True,
) -> Services:
    """Open the store and the bus and wire the parts (nothing runs until
    :meth:`Services.start`). ServeError (one line) for what cannot be opened."""
    from sqlalchemy.exc import SQLAlchemyError

    from headend.outbox import Outbox
    from headend.router import Router
    from headend.service import HeadEnd
    from headend.taskbus import TaskBus
    from mdm.database import open_store

    check_settings(settings)
    url = settings["database.url"]
    try:
        store = open_store(url, migrate=migrate)
    except (SQLAlchemyError, ValueError, OSError) as exc:
        raise ServeError(f"cannot open the database {hidden_url(url)}: {one_line(exc)}") from None
    try:
        bus = TaskBus.from_url(settings["broker.url"], namespace=settings["broker.namespace"])
    except ValueError as exc:
        store.close()
        raise ServeError(f"broker.url: {exc}") from None
    try:
        headend = HeadEnd(store, bus, keyring=keyring)
        outbox = Outbox(store)
        router = Router(store, headend, outbox=outbox, sync_timeout=settings["soap.sync_timeout"])
        authenticator = None
        if settings["auth.required"]:
            from adapters.auth.authenticator import Authenticator, LockoutPolicy

            policy = LockoutPolicy(
                max_failures=settings["auth.lockout_failures"],
                window_seconds=settings["auth.lockout_window"],
                lockout_seconds=settings["auth.lockout_duration"],
            )
            authenticator = Authenticator(store, policy, keyring=keyring)
    except (ValueError, ConfigError) as exc:
        bus.close()
        store.close()
        raise ServeError(one_line(exc)) from None
    return Services(
        settings,
        role,
        store,
        bus,
        headend,
        outbox,
        router,
        authenticator,
        driver=driver,
        keyring=keyring,
    )


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    *,
    role: Role = "all",
    driver: Driver | None = None,
    keyring: Keyring | None = None,
) -> AsyncIterator[Services]:
    """The services of ``settings``, started, and stopped when the block ends."""
    services = build_services(settings, role=role, driver=driver, keyring=keyring)
    async with services:
        yield services


# -- the process -------------------------------------------------------------------------------


def edge_app(settings: Settings) -> Any:
    """The SOAP application of one gunicorn worker: its own edge services, started and
    stopped with the application's lifespan."""
    services = build_services(settings, role="edge")
    from adapters.soap.app import create_app

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    return create_app(
        services.router, services.authenticator, soap_settings(settings), lifespan=lifespan
    )


def _gunicorn_main(settings: Settings) -> None:  # pragma: no cover - runs in a child process
    from adapters.soap.server import serve as serve_soap

    serve_soap(soap_settings(settings), lambda: edge_app(settings))


async def serve(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[Services], None] | None = None,
    driver: Driver | None = None,
) -> int:
    """Run until SIGINT/SIGTERM (or ``stop``); 0 after a clean stop, 1 when a part died.
    ServeError when it cannot start."""
    check_settings(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    http = settings["soap.enabled"]
    several = http and settings["soap.processes"] > 1
    sock = None
    child = None
    if http and not several:
        sock = bind(settings["soap.host"], settings["soap.port"])
    elif several:
        # Fork gunicorn before any thread of ours exists; it binds the port itself.
        bind(settings["soap.host"], settings["soap.port"]).close()
        import multiprocessing

        child = multiprocessing.get_context("fork").Process(
            target=_gunicorn_main, args=(settings,), name="openhes-soap", daemon=False
        )
        child.start()
    try:
        services = build_services(settings, role="background" if several else "all", driver=driver)
    except BaseException:
        if sock is not None:
            sock.close()
        _end_child(child)
        raise
    status = 0
    try:
        async with services:
            if sock is not None:
                await services.start_http(sock)
            elif several:
                soap = soap_settings(settings)
                scheme = "https" if soap.tls else "http"
                services.url = f"{scheme}://{soap.host}:{soap.port}"
            if ready is not None:
                ready(services)
            assert services.failed is not None
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(services.failed.wait()),
            ]
            if services._server_task is not None:
                waiters.append(services._server_task)  # type: ignore[arg-type]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if services.failed.is_set() or (
                services._server_task is not None
                and services._server_task.done()
                and not stop.is_set()
            ):
                status = 1
            for waiter in waiters[:2]:
                waiter.cancel()
    finally:
        _end_child(child)
    return status


def _end_child(child: Any) -> None:
    if child is None or not child.is_alive():
        return
    child.terminate()  # SIGTERM: gunicorn stops its workers gracefully
    child.join(30)
    if child.is_alive():
        child.kill()
        child.join(5)


def describe(services: Services) -> str:
    """One line: what this process serves."""
    s = services.settings
    parts = []
    if services.url:
        parts.append(f"SOAP on {services.url}/openhes/")
        if s["soap.processes"] > 1:
            parts[-1] += f" ({s['soap.processes']} processes)"
    else:
        parts.append("no SOAP endpoint")
    parts.append(f"{len(services.workers)} worker(s) x {s['worker.concurrency']} sessions")
    parts.append(f"broker {hidden_url(s['broker.url'])}")
    parts.append(f"database {hidden_url(s['database.url'])}")
    if s["esb.enabled"]:
        parts.append(f"ESB queue {s['esb.request_queue']}")
    if s["filedrop.folder"]:
        parts.append(f"file drop {s['filedrop.folder']}")
    if s.subscriptions:
        parts.append(f"{len(s.subscriptions)} subscription(s)")
    parts.append("authentication " + ("on" if s["auth.required"] else "OFF"))
    return ", ".join(parts)


def run_serve(settings: Settings) -> int:
    """``openhes serve``: the process until SIGINT/SIGTERM; one line and status 2 when it
    cannot start."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)

    def ready(services: Services) -> None:
        print(f"openhes serve: {describe(services)}", flush=True)

    try:
        status = asyncio.run(serve(settings, ready=ready))
    except ServeError as exc:
        print(f"openhes serve: {exc}", file=sys.stderr)
        return 2
    print("openhes serve: stopped", flush=True)
    return status


__all__ = [
    "ServeError",
    "Services",
    "bind",
    "build_services",
    "check_settings",
    "describe",
    "edge_app",
    "hidden_url",
    "run_serve",
    "running",
    "serve",
    "soap_settings",
]
