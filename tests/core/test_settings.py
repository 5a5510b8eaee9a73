"""Settings: defaults, `RUNSTREAM_*` variables, a `.env` file, and errors naming the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runstream.core.errors import ConfigError
from runstream.core.settings import load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No RUNSTREAM_* variable and no `.env` from the machine running the tests."""
    for name in [n for n in os.environ if n.startswith("RUNSTREAM_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()

    assert (settings.backend, settings.list_mode, settings.backend_name) == (
        "streams",
        "reliable",
        "streams",
    )
    assert (settings.block_ms, settings.socket_timeout, settings.idle_timeout) == (
        2000,
        10.0,
        300.0,
    )
    assert (settings.ttl_after_done, settings.max_len, settings.key_prefix) == (3600, 100_000, "rs")


def test_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNSTREAM_BACKEND", "list")
    monkeypatch.setenv("RUNSTREAM_LIST_MODE", "blocking")
    monkeypatch.setenv("RUNSTREAM_MAX_LEN", "250")

    settings = load_settings()

    assert (settings.backend_name, settings.max_len) == ("list-blocking", 250)


def test_dotenv_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "RUNSTREAM_BACKEND=list\nRUNSTREAM_LIST_MODE=poll\nRUNSTREAM_TTL_AFTER_DONE=60\n"
    )
    monkeypatch.setenv("RUNSTREAM_TTL_AFTER_DONE", "90")

    settings = load_settings()

    assert (settings.backend_name, settings.ttl_after_done) == ("list-poll", 90)


def test_keyword_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNSTREAM_BLOCK_MS", "100")

    assert load_settings(block_ms=300).block_ms == 300


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"socket_timeout": 2.0, "block_ms": 2000},
            "RUNSTREAM_SOCKET_TIMEOUT (2 s) must exceed RUNSTREAM_BLOCK_MS (2000 ms) by at "
            "least 1 s, or every idle blocking read times out; raise the first or lower the "
            "second",
        ),
        (
            {"socket_timeout": 5.0, "block_ms": 10_000},
            "RUNSTREAM_SOCKET_TIMEOUT (5 s) must exceed RUNSTREAM_BLOCK_MS (10000 ms)",
        ),
        ({"backend": "kafka"}, "RUNSTREAM_BACKEND: Input should be 'list' or 'streams'"),
        (
            {"backend": "list", "list_mode": "fast"},
            "RUNSTREAM_LIST_MODE: Input should be 'poll', 'blocking' or 'reliable'",
        ),
        (
            {"poll_interval_min": 0.5, "poll_interval_max": 0.1},
            "RUNSTREAM_POLL_INTERVAL_MAX must be >= RUNSTREAM_POLL_INTERVAL_MIN",
        ),
        ({"max_len": 3}, "RUNSTREAM_MAX_LEN: Input should be greater than or equal to 10"),
        ({"key_prefix": "a b"}, "RUNSTREAM_KEY_PREFIX: String should match pattern"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)

    assert str(caught.value).startswith("invalid settings:\n  ")
    assert message in str(caught.value)


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNSTREAM_BLOCK_MS", "soon")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert "RUNSTREAM_BLOCK_MS: Input should be a valid integer" in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"redis_url": "nonsense"},
            "RUNSTREAM_REDIS_URL: not a Redis URL (no scheme); use one of redis://, rediss://, "
            "unix://, for example redis://127.0.0.1:6379/0",
        ),
        (
            {"redis_url": "http://:secret@127.0.0.1:6379/0"},
            "RUNSTREAM_REDIS_URL: not a Redis URL (scheme 'http'); use one of redis://, rediss://, "
            "unix://, for example redis://127.0.0.1:6379/0",
        ),
        (
            {"redis_url": "redis://127.0.0.1:6379/zero"},
            "RUNSTREAM_REDIS_URL: the database must be a number, like /0, not 'zero'",
        ),
        (
            {"lease_seconds": 1e-9},
            "RUNSTREAM_LEASE_SECONDS: Input should be greater than or equal to 1",
        ),
        ({"job_timeout": 0}, "RUNSTREAM_JOB_TIMEOUT: Input should be greater than 0"),
        (
            {"api_host": "256.1.1.1"},
            "RUNSTREAM_API_HOST: '256.1.1.1' is neither an IP address nor a host name; use for "
            "example 127.0.0.1, 0.0.0.0 or localhost",
        ),
        (
            {"api_host": "my host"},
            "RUNSTREAM_API_HOST: 'my host' is neither an IP address nor a host name; use for "
            "example 127.0.0.1, 0.0.0.0 or localhost",
        ),
    ],
)
def test_bad_setting_message_is_exact(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)

    assert str(caught.value) == f"invalid settings:\n  {message}"
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"redis_url": "rediss://:pw@cache.example:6380/3"},
        {"redis_url": "unix:///run/redis.sock?db=2"},
        {"redis_url": "redis://127.0.0.1"},
        {"api_host": "::1"},
        {"api_host": "0.0.0.0"},
        {"api_host": "api-1.internal"},
        {"lease_seconds": 1},
    ],
)
def test_valid_urls_hosts_and_lease_are_accepted(overrides: dict[str, object]) -> None:
    settings = load_settings(**overrides)

    assert settings.model_dump(include=set(overrides)) == overrides


def test_job_timeout_defaults_to_an_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().job_timeout == 3600.0
    monkeypatch.setenv("RUNSTREAM_JOB_TIMEOUT", "2.5")
    assert load_settings().job_timeout == 2.5
