"""Shared fixtures. Service-backed tests read their URLs from the environment: in CI
(CI=true) a missing or unreachable service fails the test; elsewhere it skips with the
reason shown in pytest's summary (-ra)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
from cim_noun_helpers import FIXTURES


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _service_url(variable: str, default_port: int) -> str:
    url = os.environ.get(variable)
    if not url:
        message = f"{variable} is not set"
        if _in_ci():
            pytest.fail(f"{message}; CI must run the service-backed tests")
        pytest.skip(message)
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or default_port
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        message = f"{variable}: {host}:{port} unreachable ({exc})"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _service_url("OPENHES_TEST_POSTGRES_URL", 5432)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return _service_url("OPENHES_TEST_AMQP_URL", 5672)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"the shared CIM fixtures are missing: {FIXTURES}")
    return FIXTURES
