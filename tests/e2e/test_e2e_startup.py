"""`runstream api|worker|demo` refused by Redis at start-up: a clean message, exit code 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis

from e2e.support import CHILD_MAIN, REPO, free_port
from runstream.cli import build_parser, main

COMMANDS = [["api", "--port", str(free_port())], ["worker"], ["demo", "--json"]]
IDS = ["api", "worker", "demo"]


def run_command(args: list[str], redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env["RUNSTREAM_REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-c", CHILD_MAIN, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )


@pytest.fixture(scope="module")
def password_redis() -> Iterator[int]:
    """A redis-server of our own on a free port that wants the password `right`."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", workdir, "--requirepass", "right"]
        server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port, password="right")
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            client.close()
            yield port
        finally:
            server.terminate()
            server.wait(10)


@pytest.mark.parametrize("args", COMMANDS, ids=IDS)
def test_database_index_out_of_range_exits_2_naming_the_setting(
    args: list[str], redis_url: str
) -> None:
    parts = urlsplit(redis_url)
    url = f"redis://{parts.hostname}:{parts.port or 6379}/99"

    result = run_command(args, url)

    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"runstream {args[0]}: RUNSTREAM_REDIS_URL: Redis at {url} refused us: DB index is out "
        "of range; pick a database the server has (0-15 by default)"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", COMMANDS[:2], ids=IDS[:2])
def test_wrong_password_exits_2_naming_the_setting_with_the_password_masked(
    args: list[str], password_redis: int
) -> None:
    url = f"redis://:wrong@127.0.0.1:{password_redis}/0"

    result = run_command(args, url)

    assert result.returncode == 2, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(
        f"runstream {args[0]}: RUNSTREAM_REDIS_URL: Redis at "
        f"redis://:***@127.0.0.1:{password_redis}/0 refused the login ("
    )
    assert "wrong" not in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_with_a_wrong_password_exits_2(password_redis: int) -> None:
    result = run_command(["demo", "--json"], f"redis://:wrong@127.0.0.1:{password_redis}/0")

    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        "runstream demo: the Redis at RUNSTREAM_REDIS_URL refused our login: "
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", COMMANDS, ids=IDS)
@pytest.mark.parametrize(
    ("url", "found"),
    [("nonsense", "no scheme"), ("http://127.0.0.1:6379/0", "scheme 'http'")],
)
def test_url_that_is_not_redis_exits_2_listing_the_schemes(
    args: list[str], url: str, found: str
) -> None:
    result = run_command(args, url)

    assert result.returncode == 2
    assert result.stderr.splitlines()[-2:] == [
        f"runstream {args[0]}: invalid settings:",
        f"  RUNSTREAM_REDIS_URL: not a Redis URL ({found}); use one of redis://, rediss://, "
        "unix://, for example redis://127.0.0.1:6379/0",
    ]
    assert "Traceback" not in result.stderr


def test_unknown_log_level_is_refused_listing_the_levels(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--log-level", "LOUD", "worker"])

    assert caught.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "runstream: error: argument --log-level: invalid choice: 'LOUD' (choose from 'DEBUG', "
        "'INFO', 'WARNING', 'ERROR', 'CRITICAL')"
    )


def test_log_level_is_case_insensitive() -> None:
    assert build_parser().parse_args(["--log-level", "debug", "worker"]).log_level == "DEBUG"
