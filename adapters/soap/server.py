"""Running the SOAP application: uvicorn for one process, gunicorn with uvicorn workers for
several (uvicorn's own ``--workers`` supervisor showed a constant ~44 ms latency on this
kind of machine; gunicorn's did not), TLS from certificate and key paths, mutual TLS when a
client CA is given. And an in-process server on a thread for tests and the demo.

Several processes share the port through ``SO_REUSEPORT`` (gunicorn's ``reuse_port``: each
worker listens on its own socket and the kernel spreads new connections over them). With one
shared socket, whichever worker wakes first accepts a burst of connections, and keep-alive
pins them there: 16 clients connecting at once all landed on one of two workers. The kernel
spreads by a hash of the client's address and port, so a few keep-alive clients are spread
unevenly too (16 over two workers: 10/6 and 9/7 as often as 8/8), and the busier worker sets
the latency tail (bench/soap.py control ack p99: 27-28 ms at 10/6, 21 ms at 8/8, same run).

HTTP parsing and the event loop: ``httptools`` and ``uvloop`` when installed (dependencies;
uvicorn's pure-Python h11 parser took about 30 % of the server's CPU per request), else h11
and asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from typing import Any

import uvicorn

from adapters.soap import collector
from adapters.soap.settings import SoapSettings

log = logging.getLogger(__name__)

AppFactory = Callable[[], Any]  # returns an ASGI application (built once per process)


def _uvicorn_tls(settings: SoapSettings) -> dict[str, Any]:
    if not settings.tls:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": settings.certfile,
        "ssl_keyfile": settings.keyfile,
    }
    if settings.client_ca:
        options["ssl_ca_certs"] = settings.client_ca
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


#: uvicorn's HTTP implementation and event loop (gunicorn's uvicorn workers choose the same
#: way: "auto").
HTTP_IMPLEMENTATION = "httptools" if _installed("httptools") else "h11"
LOOP_IMPLEMENTATION = "uvloop" if _installed("uvloop") and sys.platform != "win32" else "asyncio"


def uvicorn_config(app: Any, settings: SoapSettings, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "http": HTTP_IMPLEMENTATION,
        "loop": LOOP_IMPLEMENTATION,
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "access_log": settings.access_log,
        "timeout_keep_alive": settings.keepalive_seconds,
        "timeout_graceful_shutdown": settings.graceful_timeout_seconds,
        "lifespan": "on",
        **_uvicorn_tls(settings),
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def serve(settings: SoapSettings, app_factory: AppFactory) -> None:
    """Serve until interrupted. ``app_factory`` builds the application (router, store, head-end
    included) in the process that serves it: with ``settings.workers > 1`` once in each
    gunicorn worker, after the fork, so no database connection or event loop is shared."""
    if settings.workers == 1:
        app = app_factory()
        freeze_heap()
        collector.tune()
        uvicorn.Server(uvicorn_config(app, settings)).run()
        return
    _GunicornApp(settings, app_factory).run()


def freeze_heap() -> None:
    """Move what exists once the application is built (modules, caches, the application)
    out of the garbage collector's reach: a full collection then scans only what requests
    create. Full collections over a heap holding thousands of pending asynchronous requests
    (each waiting for its job) paused the loop for 20-90 ms; frozen, about half."""
    gc.collect()
    gc.freeze()


def gunicorn_options(settings: SoapSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bind": f"{_bind_host(settings.host)}:{settings.port}",
        "workers": settings.workers,
        "worker_class": "uvicorn_worker.UvicornWorker",
        "keepalive": settings.keepalive_seconds,
        "graceful_timeout": settings.graceful_timeout_seconds,
        "loglevel": "warning",
        "accesslog": "-" if settings.access_log else None,
        "preload_app": False,
        # One listening socket per worker, balanced by the kernel (see the module docstring).
        # Not for port 0: each worker would get a port of its own.
        "reuse_port": reuse_port(settings),
    }
    if settings.tls:
        options["certfile"] = settings.certfile
        options["keyfile"] = settings.keyfile
        if settings.client_ca:
            options["ca_certs"] = settings.client_ca
            options["cert_reqs"] = ssl.CERT_REQUIRED
    return options


def reuse_port(settings: SoapSettings) -> bool:
    """Whether the worker processes listen each on their own SO_REUSEPORT socket."""
    return settings.workers > 1 and settings.port != 0 and hasattr(socket, "SO_REUSEPORT")


def _bind_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


try:
    from gunicorn.app.base import BaseApplication
except ImportError:  # pragma: no cover - gunicorn is a dependency; Windows lacks fcntl
    BaseApplication = object  # type: ignore[assignment,misc]


class _GunicornApp(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from code; each worker calls the factory after the fork."""

    def __init__(self, settings: SoapSettings, app_factory: AppFactory) -> None:
        self._options = gunicorn_options(settings)
        self._factory = app_factory
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if value is not None and key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Any:
        app = self._factory()
        freeze_heap()
        collector.tune()
        return app


# ---------------------------------------------------------------- in-process server


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # signal handlers belong to the main thread
        yield


def start_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    settings: SoapSettings | None = None,
    timeout: float = 10.0,
) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` on a background thread; return its base URL (``http://host:port``, or
    https with TLS settings) and a function that stops it. Port 0: a free port chosen by
    the operating system."""
    settings = settings or SoapSettings(host=host, port=port)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn_config(app, settings, host=host, port=bound_port)
    server = _ThreadServer(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to the caller of start_in_thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"soap-{bound_port}", daemon=True)
    thread.start()
    deadline = threading.Event()
    waited = 0.0
    while not server.started and thread.is_alive() and waited < timeout:
        deadline.wait(0.01)
        waited += 0.01
    if not server.started:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
        raise RuntimeError(f"the SOAP server did not start: {failure[0] if failure else 'timeout'}")

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout)
        sock.close()

    scheme = "https" if settings.tls else "http"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{bound_port}", stop
