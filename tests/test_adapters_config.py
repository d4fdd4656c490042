"""Configuration: defaults, then the TOML file, then the environment; every bad value refused
with one line naming the setting; docs/configuration.md generated from the declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.config import (
    SETTINGS,
    ConfigError,
    Subscription,
    load_settings,
    settings_help,
    settings_markdown,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "openhes.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_environment():
    settings = load_settings(environ={})
    assert settings["broker.url"] == "memory://"
    assert settings["soap.port"] == 8080
    assert settings["auth.required"] is True
    assert settings.subscriptions == ()
    assert set(settings.sources.values()) == {"default"}


def test_file_overrides_defaults_and_environment_overrides_file(tmp_path):
    path = write(
        tmp_path,
        """
[soap]
port = 9001
host = "0.0.0.0"

[database]
url = "postgresql://postgres@127.0.0.1/test"

[[subscriptions]]
name = "mdm"
address = "http://127.0.0.1:9/receive"
nouns = ["MeterReadings"]
""",
    )
    settings = load_settings(path, environ={"OPENHES_SOAP_PORT": "9002"})
    assert settings["soap.port"] == 9002
    assert settings.sources["soap.port"] == "OPENHES_SOAP_PORT"
    assert settings["soap.host"] == "0.0.0.0"
    assert settings.sources["soap.host"] == str(path)
    assert settings["database.url"].startswith("postgresql://")
    assert settings.subscriptions == (
        Subscription("mdm", "http://127.0.0.1:9/receive", ("MeterReadings",), ()),
    )


def test_the_file_can_come_from_the_environment(tmp_path):
    path = write(tmp_path, "[worker]\nconcurrency = 7\n")
    settings = load_settings(environ={"OPENHES_CONFIG": str(path)})
    assert settings["worker.concurrency"] == 7


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OPENHES_SOAP_PORT", "eighty", "OPENHES_SOAP_PORT: 'eighty' is not a whole number"),
        ("OPENHES_SOAP_PORT", "-1", "OPENHES_SOAP_PORT: -1 is negative"),
        ("OPENHES_AUTH_REQUIRED", "maybe", "is not a yes/no value"),
        ("OPENHES_SYNC_TIMEOUT", "soon", "is not a non-negative number"),
        ("OPENHES_SYNC_TIMEOUT", "nan", "is not a non-negative number"),
    ],
)
def test_bad_environment_values_are_refused_by_name(variable, value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={variable: value})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[soap\nport = 1", "not valid TOML"),
        ("[soap]\nprot = 1\n", "unknown setting 'soap.prot'"),
        ('[soap]\nport = "x"\n', "soap.port: 'x' is not a whole number"),
        ("[soap]\nport = true\n", "soap.port: True is not a whole number"),
        ("[database]\nurl = 5\n", "database.url: 5 is not text"),
        ("subscriptions = 3\n", "must be an array of tables"),
        ("[[subscriptions]]\naddress = 'http://x'\n", "needs a name"),
        ("[[subscriptions]]\nname = 'a'\naddress = 'ftp://x'\n", "http:// or https://"),
        ("[[subscriptions]]\nname = 'a'\naddress = 'http://x'\nfoo = 1\n", "unknown keys foo"),
        (
            "[[subscriptions]]\nname = 'a'\naddress = 'http://x'\n"
            "[[subscriptions]]\nname = 'a'\naddress = 'http://y'\n",
            "used twice",
        ),
        ("[[subscriptions]]\nname = 'a'\naddress = 'http://x'\nnouns = 'x'\n", "list of names"),
    ],
)
def test_bad_files_are_refused_by_name(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text), environ={})


def test_a_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_replace_changes_known_settings_only():
    settings = load_settings(environ={}).replace(soap__port=1234)
    assert settings["soap.port"] == 1234
    with pytest.raises(ConfigError):
        settings.replace(soap__prot=1)


def test_help_lists_every_setting():
    text = settings_help()
    for setting in SETTINGS:
        assert setting.env in text and setting.key in text


def test_docs_configuration_table_is_generated_from_the_declarations():
    text = DOC.read_text(encoding="utf-8")
    assert settings_markdown() in text, "regenerate: python -m adapters.config > table"


def test_engine_settings_reach_the_engine(tmp_path):
    from adapters.config import engine_options

    path = write(
        tmp_path,
        "[paths]\nmax_sessions = 7\nconnections_per_s = 2.5\n"
        "[engine]\ntask_timeout = 9\nurgent_reserve = 3\n"
        "[retry]\nmax_attempts = 5\nbackoff_base = 1.5\nfailover_after = 4\n",
    )
    config, limits = engine_options(load_settings(path, environ={"OPENHES_TASK_TIMEOUT": "11"}))
    assert (limits.max_sessions, limits.connections_per_s) == (7, 2.5)
    assert (config.task_timeout, config.urgent_reserve) == (11.0, 3)
    assert (config.retry.max_attempts, config.retry.base, config.retry.failover_after) == (
        5,
        1.5,
        4,
    )
    config, limits = engine_options(load_settings(environ={}))
    assert (limits.max_sessions, limits.connections_per_s, config.task_timeout) == (100, 50.0, 120)
    assert (config.retry.max_attempts, config.retry.base, config.retry.failover_after) == (3, 30, 2)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OPENHES_PATH_MAX_SESSIONS", "0", "OPENHES_PATH_MAX_SESSIONS: 0 is not at least 1"),
        ("OPENHES_PATH_MAX_SESSIONS", "many", "is not a whole number"),
        ("OPENHES_PATH_CONNECTIONS_PER_S", "0", "OPENHES_PATH_CONNECTIONS_PER_S: 0 is not more"),
        ("OPENHES_PATH_CONNECTIONS_PER_S", "inf", "is not a non-negative number"),
        ("OPENHES_TASK_TIMEOUT", "0", "OPENHES_TASK_TIMEOUT: 0 is not more than 0"),
        ("OPENHES_TASK_TIMEOUT", "-5", "is not a non-negative number"),
        ("OPENHES_URGENT_RESERVE", "-1", "OPENHES_URGENT_RESERVE: -1 is negative"),
        ("OPENHES_RETRY_MAX_ATTEMPTS", "0", "OPENHES_RETRY_MAX_ATTEMPTS: 0 is not at least 1"),
        ("OPENHES_RETRY_BACKOFF_BASE", "soon", "is not a non-negative number"),
        ("OPENHES_RETRY_FAILOVER_AFTER", "0", "OPENHES_RETRY_FAILOVER_AFTER: 0 is not at least"),
    ],
)
def test_bad_engine_settings_are_refused_by_name(variable, value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(environ={variable: value})
    assert "\n" not in str(caught.value)


def test_engine_settings_changed_in_code_are_checked_too():
    from adapters.config import engine_options

    with pytest.raises(ConfigError, match=r"paths\.max_sessions: 0 is not at least 1"):
        engine_options(load_settings(environ={}).replace(paths__max_sessions=0))
    with pytest.raises(ConfigError, match=r"retry\.backoff_base: 'x' is not a non-negative"):
        engine_options(load_settings(environ={}).replace(retry__backoff_base="x"))


def test_bad_engine_settings_in_the_file_are_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"openhes.toml: retry.max_attempts: 0 is not at least"):
        load_settings(write(tmp_path, "[retry]\nmax_attempts = 0\n"), environ={})
