"""`runstream demo` itself, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from e2e.support import CHILD_MAIN, REPO, alive, children_of, free_port
from runstream.worker.demo_graph import demo_answer

PROMPT = "Redis Streams와 리스트의 차이를 알려줘"
DEMO_TIMEOUT = 45
# What the demo starts when nothing answers: redis-server if on PATH (scripts/ensure-redis
# installs it), else fakeredis's TCP server in the demo's own process.
HAS_REDIS_SERVER = shutil.which("redis-server") is not None
EMBEDDED = "redis-server" if HAS_REDIS_SERVER else "fakeredis server"


def demo_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update(RUNSTREAM_REDIS_URL=redis_url, **extra)
    return env


def run_demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD_MAIN, "demo", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        check=False,
    )


def nothing_listens() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def test_demo_with_the_configured_redis(base_env: dict[str, str], redis_url: str) -> None:
    result = run_demo(demo_env(redis_url), PROMPT, "--token-rate", "400")

    assert result.returncode == 0, result.stderr
    # Its own key prefix: nothing on the shared rs:jobs queue, and no key left behind.
    shared = redis.Redis.from_url(redis_url)
    assert (shared.exists("rs:jobs"), shared.dbsize()) == (0, 0)
    shared.close()
    lines = result.stdout.splitlines()
    assert lines[0] == f"Redis: using the configured server at {redis_url}"
    assert result.stdout.startswith(f"{lines[0]}\n{demo_answer(PROMPT)}\n")
    assert "│ done arrived        │ yes" in result.stdout


@pytest.mark.parametrize("backend", ["streams", "list"])
def test_demo_without_redis_starts_an_embedded_server(backend: str) -> None:
    url = nothing_listens()

    result = run_demo(
        demo_env(url), "How do they differ?", "--backend", backend, "--token-rate", "400"
    )

    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"Redis: nothing answers at {url} (")
    assert f"; using an embedded {EMBEDDED} at redis://127.0.0.1:" in first
    assert first.endswith("/0 for this run")
    assert f"\n{demo_answer('How do they differ?')}\n" in result.stdout


def test_demo_without_redis_or_redis_server_uses_fakeredis_and_prints_json() -> None:
    url = nothing_listens()
    # Only the virtual environment's commands: no redis-server binary on PATH.
    env = demo_env(url, PATH=str(Path(sys.executable).parent))

    result = run_demo(env, PROMPT, "--json", "--token-rate", "400")

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["redis"]["source"] == "fakeredis"
    events = lines[1:]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert "".join(e["payload"]["text"] for e in events if e["type"] == "token") == demo_answer(
        PROMPT
    )
    assert events[-1]["type"] == "done"


def test_demo_reports_a_worker_that_cannot_start(redis_url: str, base_env: dict[str, str]) -> None:
    result = run_demo(demo_env(redis_url, RUNSTREAM_GRAPH="no_such_module:graph"))

    assert result.returncode == 2
    assert "runstream demo: runstream worker exited with code 2; its last output:" in result.stderr
    assert "cannot import 'no_such_module'" in result.stderr


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
def test_stop_signal_stops_every_process_the_demo_started(sig: signal.Signals) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-c", CHILD_MAIN, "demo", PROMPT, "--token-rate", "10"],
        env=demo_env(nothing_listens()),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        first = demo.stdout.readline()
        first_token = demo.stdout.read(1)  # blocks until the stream has begun
        children = children_of(demo.pid)
        demo.send_signal(sig)
        _, stderr = demo.communicate(timeout=DEMO_TIMEOUT)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()

    assert f"using an embedded {EMBEDDED}" in first
    assert first_token == demo_answer(PROMPT)[0]
    assert len(children) == (3 if HAS_REDIS_SERVER else 2)  # redis-server?, worker, API
    assert demo.returncode == 128 + sig
    assert stderr.splitlines()[-1] == (
        f"runstream demo: interrupted by {sig.name}; stopped what it started"
    )
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in children if alive(pid)] == []
