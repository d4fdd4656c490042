"""Configuration of the OpenHES processes (`openhes serve`, `openhes worker`, `openhes demo`):
built-in defaults, then a TOML file (``--config`` or ``$OPENHES_CONFIG``), then environment
variables ``OPENHES_*``, each later source overriding the earlier.

Every setting is declared once in :data:`SETTINGS` (its TOML key, environment variable, type,
default and meaning), so ``openhes serve --help`` and docs/configuration.md list exactly
what is read. Subscriptions (push endpoints) are configured in the TOML file (no environment
variable holds them; the ``subscriptions`` table managed by ``openhes subscriptions`` is their
other source), as a list of tables::

    [[subscriptions]]
    name = "mdm"
    address = "https://mdm.example/ReceiveMeterReadings"
    nouns = ["MeterReadings"]          # optional: every noun when left out
    verbs = ["created"]                # optional: every verb when left out

A value that does not parse is refused with one line naming the setting and its source.
:func:`engine_options` turns the ``engine.*``, ``retry.*`` and ``paths.*`` settings into the
job engine's configuration for a worker.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headend.engine import EngineConfig
    from headend.throttle import Limits

ENV_CONFIG = "OPENHES_CONFIG"


class ConfigError(ValueError):
    """A configuration value or file that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # dotted TOML key, e.g. "soap.port"
    env: str
    kind: type
    default: Any
    help: str
    positive: bool = False  # the value must be more than 0 (a whole number: at least 1)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "database.url",
        "OPENHES_DATABASE_URL",
        str,
        "sqlite:///openhes.sqlite3",
        "database URL: sqlite:///file, postgresql://..., oracle+oracledb://...",
    ),
    Setting(
        "broker.url",
        "OPENHES_BROKER_URL",
        str,
        "memory://",
        "task bus between the job engine and its workers: memory:// (one process) or "
        "amqp://user:password@host:5672//",
    ),
    Setting(
        "broker.namespace",
        "OPENHES_BROKER_NAMESPACE",
        str,
        "openhes",
        "prefix of the task bus's queue and exchanges (`openhes worker --namespace`)",
    ),
    Setting(
        "worker.in_process",
        "OPENHES_WORKER_IN_PROCESS",
        int,
        1,
        "workers `openhes serve` runs in its own process (0 with only external workers)",
    ),
    Setting(
        "worker.concurrency",
        "OPENHES_WORKER_CONCURRENCY",
        int,
        200,
        "meter sessions one worker holds open at once",
    ),
    Setting(
        "paths.max_sessions",
        "OPENHES_PATH_MAX_SESSIONS",
        int,
        100,
        "sessions open at once on one communication path, per worker (each in-process worker "
        "and each `openhes worker` process counts its own)",
        positive=True,
    ),
    Setting(
        "paths.connections_per_s",
        "OPENHES_PATH_CONNECTIONS_PER_S",
        float,
        50.0,
        "new connections per second on one communication path (burst: one second's worth), "
        "per worker like paths.max_sessions",
        positive=True,
    ),
    Setting(
        "engine.task_timeout",
        "OPENHES_TASK_TIMEOUT",
        float,
        120.0,
        "seconds one attempt (associate, operation, release) may take before it fails as timeout",
        positive=True,
    ),
    Setting(
        "engine.urgent_reserve",
        "OPENHES_URGENT_RESERVE",
        int,
        100,
        "session slots of a worker only urgent tasks (controls, on-demand reads) may take "
        "(at most a tenth of worker.concurrency)",
    ),
    Setting(
        "retry.max_attempts",
        "OPENHES_RETRY_MAX_ATTEMPTS",
        int,
        3,
        "attempts of a task whose failures are retryable (timeouts, lost connections...)",
        positive=True,
    ),
    Setting(
        "retry.backoff_base",
        "OPENHES_RETRY_BACKOFF_BASE",
        float,
        30.0,
        "seconds before the second attempt (doubling each time, at most 3600, with jitter)",
    ),
    Setting(
        "retry.failover_after",
        "OPENHES_RETRY_FAILOVER_AFTER",
        int,
        2,
        "failed attempts on the primary path before a meter's backup path is used",
        positive=True,
    ),
    Setting(
        "soap.enabled",
        "OPENHES_SOAP_ENABLED",
        bool,
        True,
        "serve the SOAP endpoints",
    ),
    Setting(
        "soap.host",
        "OPENHES_SOAP_HOST",
        str,
        "127.0.0.1",
        "address the SOAP server binds",
    ),
    Setting(
        "soap.port",
        "OPENHES_SOAP_PORT",
        int,
        8080,
        "SOAP server port",
    ),
    Setting(
        "soap.processes",
        "OPENHES_SOAP_PROCESSES",
        int,
        1,
        "SOAP server processes (more than 1: gunicorn with uvicorn workers)",
    ),
    Setting(
        "soap.max_request_bytes",
        "OPENHES_SOAP_MAX_REQUEST_BYTES",
        int,
        64 * 1024 * 1024,
        "requests larger than this are refused before parsing",
    ),
    Setting(
        "soap.sync_timeout",
        "OPENHES_SYNC_TIMEOUT",
        float,
        30.0,
        "seconds a synchronous request waits for meters before answering with what it has",
    ),
    Setting(
        "tls.certificate",
        "OPENHES_TLS_CERT",
        str,
        "",
        "PEM certificate chain for HTTPS (empty: plain HTTP)",
    ),
    Setting(
        "tls.key",
        "OPENHES_TLS_KEY",
        str,
        "",
        "PEM private key for HTTPS",
    ),
    Setting(
        "tls.client_ca",
        "OPENHES_TLS_CLIENT_CA",
        str,
        "",
        "PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS)",
    ),
    Setting(
        "auth.required",
        "OPENHES_AUTH_REQUIRED",
        bool,
        True,
        "refuse unauthenticated requests (HTTP Basic or WS-Security UsernameToken)",
    ),
    Setting(
        "auth.lockout_failures",
        "OPENHES_LOCKOUT_FAILURES",
        int,
        5,
        "failed logins within the window that lock an account",
    ),
    Setting(
        "auth.lockout_window",
        "OPENHES_LOCKOUT_WINDOW",
        float,
        900.0,
        "seconds over which failed logins are counted",
    ),
    Setting(
        "auth.lockout_duration",
        "OPENHES_LOCKOUT_DURATION",
        float,
        900.0,
        "seconds an account stays locked",
    ),
    Setting(
        "esb.enabled",
        "OPENHES_ESB_ENABLED",
        bool,
        False,
        "consume RequestMessages from the ESB and publish events to it",
    ),
    Setting(
        "esb.url",
        "OPENHES_ESB_URL",
        str,
        "",
        "ESB broker URL (empty: the task bus broker)",
    ),
    Setting(
        "esb.request_queue",
        "OPENHES_ESB_REQUEST_QUEUE",
        str,
        "openhes.requests",
        "queue RequestMessages arrive on",
    ),
    Setting(
        "esb.event_exchange",
        "OPENHES_ESB_EVENT_EXCHANGE",
        str,
        "openhes.events.cim",
        "topic exchange EventMessages are published to (routing key <noun>.<verb>)",
    ),
    Setting(
        "filedrop.folder",
        "OPENHES_FILEDROP_DIR",
        str,
        "",
        "watched folder (inbox/, outbox/, archive/, error/ under it); empty: off",
    ),
    Setting(
        "filedrop.poll_interval",
        "OPENHES_FILEDROP_POLL",
        float,
        1.0,
        "seconds between looks at the inbox",
    ),
    Setting(
        "outbox.max_age",
        "OPENHES_OUTBOX_MAX_AGE",
        float,
        86400.0,
        "seconds an outbound message is retried before it is marked dead",
    ),
    Setting(
        "outbox.concurrency",
        "OPENHES_OUTBOX_CONCURRENCY",
        int,
        4,
        "outbound messages (replies, pushes) being delivered at once",
    ),
)

_BY_KEY = {s.key: s for s in SETTINGS}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class Subscription:
    name: str
    address: str
    nouns: tuple[str, ...] = ()  # empty: every noun
    verbs: tuple[str, ...] = ()  # empty: every verb


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, Any]
    subscriptions: tuple[Subscription, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)  # key -> where the value came from

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def replace(self, **values: Any) -> Settings:
        """A copy with some settings changed (keys with dots as double underscores)."""
        merged = dict(self.values)
        for name, value in values.items():
            key = name.replace("__", ".")
            if key not in _BY_KEY:
                raise ConfigError(f"no setting {key!r}")
            merged[key] = value
        return Settings(merged, self.subscriptions, self.sources)


def _convert(setting: Setting, value: Any, where: str) -> Any:
    kind = setting.kind
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{where}: {value!r} is not a yes/no value (true, false, 1, 0)")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not a whole number")
        try:
            number = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not a whole number") from None
        if number < 0:
            raise ConfigError(f"{where}: {number} is negative")
        if setting.positive and number < 1:
            raise ConfigError(f"{where}: {number} is not at least 1")
        return number
    if kind is float:
        try:
            number = float(value) if not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or number != number or number < 0 or number == float("inf"):
            raise ConfigError(f"{where}: {value!r} is not a non-negative number")
        if setting.positive and number == 0:
            raise ConfigError(f"{where}: {number:g} is not more than 0")
        return number
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {value!r} is not text")
    return value


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(_flatten(value, key + "."))
        else:
            out[key] = value
    return out


def _subscriptions(items: Any, source: str) -> tuple[Subscription, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{source}: subscriptions must be an array of tables ([[subscriptions]])")
    out = []
    names: set[str] = set()
    for number, item in enumerate(items, 1):
        where = f"{source}: subscriptions #{number}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: not a table")
        unknown = set(item) - {"name", "address", "nouns", "verbs"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        name, address = item.get("name"), item.get("address")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: needs a name")
        if name in names:
            raise ConfigError(f"{where}: the name {name!r} is used twice")
        names.add(name)
        if not isinstance(address, str) or not address.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: address must be an http:// or https:// URL")
        lists = {}
        for part in ("nouns", "verbs"):
            value = item.get(part, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {part} must be a list of names")
            lists[part] = tuple(value)
        out.append(Subscription(name, address, lists["nouns"], lists["verbs"]))
    return tuple(out)


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults, then the TOML file (the argument, else ``$OPENHES_CONFIG``), then the
    environment."""
    env = os.environ if environ is None else environ
    values = {s.key: s.default for s in SETTINGS}
    sources = {s.key: "default" for s in SETTINGS}
    subscriptions: tuple[Subscription, ...] = ()
    path = config_file if config_file is not None else env.get(ENV_CONFIG) or None
    if path is not None:
        path = Path(path)
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"{path}: cannot read the configuration file ({exc.strerror})"
            ) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        if "subscriptions" in document:
            subscriptions = _subscriptions(document.pop("subscriptions"), str(path))
        for key, value in _flatten(document).items():
            setting = _BY_KEY.get(key)
            if setting is None:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[key] = _convert(setting, value, f"{path}: {key}")
            sources[key] = str(path)
    for setting in SETTINGS:
        if setting.env in env:
            values[setting.key] = _convert(setting, env[setting.env], setting.env)
            sources[setting.key] = setting.env
    return Settings(values, subscriptions, sources)


def engine_options(settings: Settings) -> tuple[EngineConfig, Limits]:
    """The job engine's configuration (``engine.*``, ``retry.*``) and the limits of each
    communication path (``paths.*``) for a worker: ``openhes serve``'s in-process ones and
    ``openhes worker``. Each worker builds its own :class:`headend.throttle.Throttles` from the
    limits, so they hold per worker. ConfigError (one line) for a value the engine refuses."""
    from headend.engine import EngineConfig
    from headend.retry import RetryPolicy
    from headend.throttle import Limits

    def value(key: str) -> Any:
        return _convert(_BY_KEY[key], settings[key], key)

    # _convert checked every value (Settings.replace does not), so the engine's own
    # checks below cannot fail.
    retry = RetryPolicy(
        max_attempts=value("retry.max_attempts"),
        base=value("retry.backoff_base"),
        failover_after=value("retry.failover_after"),
    )
    limits = Limits(
        max_sessions=value("paths.max_sessions"),
        connections_per_s=value("paths.connections_per_s"),
    )
    config = EngineConfig(
        task_timeout=value("engine.task_timeout"),
        urgent_reserve=value("engine.urgent_reserve"),
        retry=retry,
    )
    return config, limits


def settings_help() -> str:
    """The settings as a text table, for ``--help`` epilogs."""
    lines = ["settings (TOML key / environment variable, default):"]
    for s in SETTINGS:
        default = "(empty)" if s.default == "" else s.default
        lines.append(f"  {s.key} / {s.env} [{default}]")
        lines.append(f"      {s.help}")
    return "\n".join(lines)


def settings_markdown() -> str:
    """docs/configuration.md's table (generated; a test keeps the file in step)."""
    rows = [
        "| TOML key | Environment variable | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for s in SETTINGS:
        default = "" if s.default == "" else f"`{s.default}`"
        rows.append(f"| `{s.key}` | `{s.env}` | {default} | {s.help} |")
    return "\n".join(rows) + "\n"


__all__ = [
    "ENV_CONFIG",
    "SETTINGS",
    "ConfigError",
    "Setting",
    "Settings",
    "Subscription",
    "engine_options",
    "load_settings",
    "settings_help",
    "settings_markdown",
]
