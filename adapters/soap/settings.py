"""Settings of the SOAP edge: where it listens, how many processes, TLS, limits."""

from __future__ import annotations

from dataclasses import dataclass

from adapters.soap.services import DEFAULT_SERVICES
from cim.xmlsafe import DEFAULT_LIMITS


@dataclass(frozen=True)
class SoapSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # 1: one uvicorn process; more: gunicorn with that many uvicorn workers.
    workers: int = 1
    # URL path under which the services live: {base_path}/{Service}, {base_path}/{file}.xsd
    base_path: str = "/openhes"
    # Refused with 413 before parsing (Content-Length, then the streamed byte count).
    max_request_bytes: int = DEFAULT_LIMITS.max_bytes
    max_depth: int = DEFAULT_LIMITS.max_depth
    services: tuple[str, ...] = DEFAULT_SERVICES
    # TLS: certificate and key (PEM paths); a client CA turns on mutual TLS (required).
    certfile: str | None = None
    keyfile: str | None = None
    client_ca: str | None = None
    # The address written into served WSDLs; default: the URL each request arrived at.
    public_url: str | None = None
    realm: str = "OpenHES"
    keepalive_seconds: int = 5
    graceful_timeout_seconds: int = 10
    access_log: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")
        if self.max_request_bytes < 1:
            raise ValueError("max_request_bytes must be positive")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("TLS needs both a certificate and a key file")
        if self.client_ca is not None and self.certfile is None:
            raise ValueError("mutual TLS (client_ca) needs a server certificate and key")
        if not self.base_path.startswith("/") or self.base_path.endswith("/"):
            raise ValueError(f"base_path must start and not end with '/': {self.base_path!r}")

    @property
    def tls(self) -> bool:
        return self.certfile is not None
