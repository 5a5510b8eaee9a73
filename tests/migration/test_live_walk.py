"""The runbook under live traffic: real Redis, real `runstream api` and `runstream worker`
processes restarted with each phase's settings, 50 jobs streaming to SSE clients that
reconnect with Last-Event-ID, through every phase of docs/migration.md and back again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from e2e.support import (
    CHILD_MAIN,
    REPO,
    STARTUP_TIMEOUT,
    Proc,
    Procs,
    free_port,
    submit,
    wait_healthy,
)
from runstream.core.events import Event
from runstream.worker.demo_graph import demo_answer

PHASE_ENV: dict[str, dict[str, str]] = {
    "list": {"RUNSTREAM_BACKEND": "list", "RUNSTREAM_DUAL_WRITE": "false"},
    "dual-list": {"RUNSTREAM_BACKEND": "list", "RUNSTREAM_DUAL_WRITE": "true"},
    "dual-streams": {"RUNSTREAM_BACKEND": "streams", "RUNSTREAM_DUAL_WRITE": "true"},
    "streams": {"RUNSTREAM_BACKEND": "streams", "RUNSTREAM_DUAL_WRITE": "false"},
}
PROMPTS = ("Redis Streams와 리스트의 차이를 알려줘", "How do Redis lists and Streams differ?")
WALK_SECONDS = 120.0
DRAIN_SECONDS = 40.0
# The phase-0 and phase-3 workers' jobs outlast the next phase switch of the readers.
SLOW_RATE = "8"


@dataclass
class Deployment:
    """One API and one worker at a time, switched phase by phase like a rolling deploy."""

    procs: Procs
    api: Proc | None = None
    worker: Proc | None = None
    draining: list[Proc] = field(default_factory=list)
    url: str = ""

    def switch(self, phase: str, **extra: str) -> Proc:
        """Start a worker and an API with `phase`'s settings; stop the old ones.

        The old worker gets SIGTERM once the new one takes jobs: it takes no new job and
        finishes the ones it runs, still with its old settings, as a rolling deploy does.
        """
        env = {**PHASE_ENV[phase], **extra}
        worker = self.procs.worker(env=env)
        api = self.procs.start("api", "--port", str(free_port()), env=env)
        api.port = int(api.process.args[-1])  # type: ignore[index]
        _wait_ready(worker)
        wait_healthy(api)
        if self.worker is not None:
            self.worker.process.send_signal(signal.SIGTERM)
            self.draining.append(self.worker)
        self.worker = worker
        self.url = api.base_url
        if self.api is not None:
            self.api.stop()
        self.api = api
        health = httpx.get(f"{api.base_url}/healthz", timeout=5).json()
        assert "backend_mismatch" not in health, health
        dual = env["RUNSTREAM_DUAL_WRITE"] == "true"
        assert health["reads"] == ("list+stream" if dual else phase.replace("streams", "stream"))
        assert ("api: dual-write on: reading " in api.output()) == dual
        assert ("worker: dual-write on: " in worker.output()) == dual
        return api

    def wait_drained(self) -> None:
        """Wait until every worker of an earlier phase has finished its jobs and exited."""
        for old in self.draining:
            assert old.process.wait(DRAIN_SECONDS) == 0, old.output()
        self.draining.clear()


def _wait_ready(worker: Proc) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while "taking jobs from" not in worker.output():
        assert worker.process.poll() is None, worker.output()
        assert time.monotonic() < deadline, f"{worker.name} not ready:\n{worker.output()}"
        time.sleep(0.05)


@dataclass
class Client:
    """One SSE client of one job: reconnects with Last-Event-ID until it receives `done`."""

    job_id: str
    prompt: str
    deployment: Deployment
    events: list[Event] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    connections: int = 0
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._follow, name=self.job_id, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        deadline = time.monotonic() + WALK_SECONDS
        while time.monotonic() < deadline:
            try:
                if self._read_once():
                    return
            except (httpx.TransportError, httpx.HTTPStatusError):
                pass  # the API restarting: connect again to the current one
            time.sleep(0.05)

    def _read_once(self) -> bool:
        after = self.events[-1].seq if self.events else 0
        headers = {"Last-Event-ID": str(after)} if after else {}
        url = f"{self.deployment.url}/stream/{self.job_id}"
        with (
            httpx.Client(timeout=httpx.Timeout(5, read=20)) as client,
            connect_sse(client, "GET", url, headers=headers) as source,
        ):
            if source.response.status_code != 200:
                self.refused.append(source.response.status_code)
                return False
            self.connections += 1
            for sse in source.iter_sse():
                if not sse.data:
                    continue
                event = Event.from_json(sse.data)
                self.events.append(event)
                if event.type == "done":
                    return True
        return False


def _migrate(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD_MAIN, "migrate", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _count(client: redis.Redis, suffix: str) -> int:
    return sum(1 for _ in client.scan_iter(match=f"rs:{{*}}:{suffix}", count=1000))


@pytest.fixture
def live(redis_url: str, tmp_path: Path) -> Iterator[tuple[Deployment, dict[str, str]]]:
    redis.Redis.from_url(redis_url).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update(
        RUNSTREAM_REDIS_URL=redis_url,
        RUNSTREAM_LIST_MODE="reliable",
        RUNSTREAM_DEMO_TOKEN_RATE="15",
        RUNSTREAM_BLOCK_MS="200",
        RUNSTREAM_WORKER_CONCURRENCY="60",
    )
    procs = Procs(env, tmp_path)
    yield Deployment(procs), env
    procs.stop_all()


@pytest.mark.slow
@pytest.mark.timeout(170)
def test_fifty_jobs_walk_every_phase_and_back(
    live: tuple[Deployment, dict[str, str]], redis_url: str
) -> None:
    deployment, env = live
    store = redis.Redis.from_url(redis_url)
    clients: list[Client] = []

    def submit_jobs(count: int) -> None:
        assert deployment.api is not None
        for _ in range(count):
            prompt = PROMPTS[len(clients) % 2]
            client = Client(submit(deployment.api, prompt), prompt, deployment)
            client.start()
            clients.append(client)

    # Phase 0: lists only.
    deployment.switch("list", RUNSTREAM_DEMO_TOKEN_RATE=SLOW_RATE)
    submit_jobs(20)
    time.sleep(1.0)

    # Phase 1: dual-write. The phase-0 worker finishes its 20 jobs writing lists only.
    deployment.switch("dual-list")
    submit_jobs(10)
    during_drain = _migrate({**env, **PHASE_ENV["dual-list"]})

    # Phase 2: readers switch to Streams while the phase-0 worker still writes lists only;
    # they follow those jobs to their lists. Phase 3 needs it gone and every job copied.
    streams_api = deployment.switch("dual-streams")
    submit_jobs(5)
    deployment.wait_drained()
    after_drain = _migrate({**env, **PHASE_ENV["dual-streams"]})
    settled = _migrate({**env, **PHASE_ENV["dual-streams"]}, "--dry-run")

    # Phase 3: list writes stop; phase 4: once no dual-writer is left, the lists go.
    deployment.switch("streams", RUNSTREAM_DEMO_TOKEN_RATE=SLOW_RATE)
    submit_jobs(5)
    deployment.wait_drained()
    pruned = _migrate({**env, **PHASE_ENV["streams"]}, "--prune")
    lists_left = _count(store, "list") + _count(store, "log")

    # The way back, the same steps in reverse: dual-write; readers switch to lists while the
    # streams-only worker still runs; once it is gone, copy into lists; then lists only.
    deployment.switch("dual-streams")
    submit_jobs(5)
    time.sleep(1.0)
    lists_api = deployment.switch("dual-list")
    submit_jobs(5)
    deployment.wait_drained()
    back = _migrate({**env, **PHASE_ENV["dual-list"]}, "--to", "list")
    back_settled = _migrate({**env, **PHASE_ENV["dual-list"]}, "--to", "list", "--dry-run")
    deployment.switch("list")
    for client in clients:
        assert client.thread is not None
        client.thread.join(WALK_SECONDS)
    deployment.wait_drained()
    streams_pruned = _migrate({**env, **PHASE_ENV["list"]}, "--to", "list", "--prune")
    writers = [store.hget(f"rs:{{{c.job_id}}}:meta", "writes") for c in clients]

    assert len(clients) == 50
    for client in clients:
        events = client.events
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), client.job_id
        assert [e.type for e in events].count("error") == 0, client.job_id
        assert events[-1].type == "done", client.job_id
        text = "".join(str(e.payload["text"]) for e in events if e.type == "token")
        assert text == demo_answer(client.prompt), client.job_id
        assert client.refused == [], client.job_id
    assert during_drain["jobs_copied"] > 0
    assert after_drain["events_copied"] > 0  # the old worker's list-only events since then
    assert (
        writers == [b"list"] * 20 + [b"list+stream"] * 15 + [b"stream"] * 5 + [b"list+stream"] * 10
    )
    assert sum(client.connections for client in clients) > 75
    # Readers followed jobs that single-structure workers of the phase before still wrote.
    assert "reading from list-reliable after seq" in streams_api.output()
    assert "reading from streams after seq" in lists_api.output()
    assert (settled["jobs_copied"], settled["events_copied"]) == (0, 0)
    assert (pruned["events_copied"], lists_left) == (0, 0)
    assert pruned["keys_deleted"] > 0
    assert back["jobs_copied"] > 0
    assert (back_settled["jobs_copied"], back_settled["events_copied"]) == (0, 0)
    assert streams_pruned["events_copied"] == 0
    assert (streams_pruned["keys_deleted"], _count(store, "stream")) == (50, 0)
    store.close()
