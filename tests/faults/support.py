"""Helpers for the fault tests: a Redis server of the test's own, and SSE readers."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from e2e.support import Proc, free_port
from runstream.core.events import Event

STOP_GRACE = 5.0


@dataclass
class RedisServer:
    """`redis-server` on a free loopback port, files in `workdir`; restartable."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("no redis-server binary on PATH")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        args += ["no", "--dir", str(self.workdir), "--dbfilename", "dump.rdb"]
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen([binary, *args], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)

    def restart(self, *, keep_data: bool) -> None:
        """Stop and start again on the same port: after `SHUTDOWN SAVE` if `keep_data`
        (nothing written after the save), else after SIGKILL (everything lost)."""
        assert self.process is not None
        (self.workdir / "dump.rdb").unlink(missing_ok=True)
        if keep_data:
            redis.Redis(port=self.port).shutdown(save=True)
        else:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_GRACE)
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def stream_lines(api: Proc, job_id: str, after: int | None = None) -> httpx.Response:
    headers = {} if after is None else {"Last-Event-ID": str(after)}
    return httpx.get(f"{api.base_url}/stream/{job_id}", headers=headers, timeout=30)


def read_sse(
    api: Proc,
    job_id: str,
    *,
    after: int | None = None,
    stop_after: int | None = None,
    into: list[Event] | None = None,
) -> list[Event]:
    """Events of one connection (stops after `stop_after`); checks `id:` is the seq.

    Events are appended to `into` as they arrive, if given (another thread may watch it).
    """
    headers = {} if after is None else {"Last-Event-ID": str(after)}
    events: list[Event] = [] if into is None else into
    with (
        httpx.Client(base_url=api.base_url, timeout=httpx.Timeout(5, read=30)) as client,
        connect_sse(client, "GET", f"/stream/{job_id}", headers=headers) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            if not sse.data:
                continue
            event = Event.from_json(sse.data)
            # httpx-sse repeats the last id for an event without one (the SSE spec's "last
            # event ID"), so only stored events can be checked here.
            assert sse.id == str(event.seq) or not event.is_stored, sse
            events.append(event)
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


def outline(events: list[Event]) -> list[tuple[str, int]]:
    return [(e.type, e.seq) for e in events]


def token_text(events: list[Event]) -> str:
    return "".join(str(e.payload["text"]) for e in events if e.type == "token")


def detail(response: httpx.Response) -> str:
    message: str = json.loads(response.text)["detail"]
    return message
